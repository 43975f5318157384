"""Module TOC rules (``my_r2()``) and the TOC implied by assembled normal stubs."""

from __future__ import annotations

from collections import Counter

import pytest
from asmutil import assemble

from klpinspect.ppc64.stubs import Stub, StubKind, decode_stub, for_each_stub
from klpinspect.ppc64.toc import (
    TOC_BIAS,
    ModuleToc,
    check_stub_tocs,
    implied_tocs,
    module_toc,
    resolve_module_toc,
)

SBASE = 0xC008000000F402E0
KTOC = 0xC000000000BE8000
TOC_SECTION = 0xC008000000F60108  # not 256-aligned: the two rules differ
PLAIN = TOC_SECTION + 0x8000  # <= 4.9
ROUNDED = (TOC_SECTION & ~0xFF) + 0x8000  # 5.x+


def _walk_syms(toc: int) -> dict[str, int]:
    return {"SBASE": SBASE, "TOC": toc, "KTOC": KTOC, "PACATOC": 16,
            "T0": 0xC000000000123450, "T1": 0xC008000000EF0008, "T2": 0xC000000000223340,
            "T3": 0xC000000000777770, "FC": 0xC00000000006509C, "FRC": 0xC000000000064F08}


def _stubs(toc: int) -> list[Stub]:
    section = assemble("stubs_walk.s", defsyms=_walk_syms(toc)).text
    return list(for_each_stub(section, SBASE, kernel_toc=KTOC))


def test_module_toc_rules() -> None:
    assert TOC_BIAS == 0x8000
    assert module_toc(TOC_SECTION) == ROUNDED == 0xC008000000F68100
    assert module_toc(TOC_SECTION, rounded=False) == PLAIN == 0xC008000000F68108
    # fixture rows (README): .toc 256-aligned, both rules agree
    assert module_toc(0xC008000000F60100) == 0xC008000000F68100
    assert module_toc(0xC008000000F60100, rounded=False) == 0xC008000000F68100
    assert module_toc(0xC008000000FB0000) == 0xC008000000FB8000


@pytest.mark.parametrize(("toc", "rule"), [(ROUNDED, "rounded"), (PLAIN, "plain")])
def test_resolve_rule_chosen_by_stubs(toc: int, rule: str) -> None:
    stubs = _stubs(toc)
    assert {s.implied_toc for s in stubs if s.kind is StubKind.NORMAL} == {toc}
    assert resolve_module_toc(TOC_SECTION, SBASE, stubs) == ModuleToc(toc, ".toc", rule)
    assert check_stub_tocs(stubs, toc) == []


def test_resolve_without_stubs_is_rounded() -> None:
    assert resolve_module_toc(TOC_SECTION, SBASE) == ModuleToc(ROUNDED, ".toc", "rounded")


def test_resolve_without_toc_section_uses_stubs_section() -> None:
    # module_frob_arch_sections(): no .toc -> toc_section = stubs_section
    toc = module_toc(SBASE)
    stubs = _stubs(toc)
    assert resolve_module_toc(None, SBASE, stubs) == ModuleToc(toc, ".stubs", "rounded")
    plain = module_toc(SBASE, rounded=False)
    assert resolve_module_toc(None, SBASE, _stubs(plain)) == ModuleToc(plain, ".stubs", "plain")


def test_resolve_from_stubs_only_and_none() -> None:
    stubs = _stubs(PLAIN)
    assert resolve_module_toc(None, None, stubs) == ModuleToc(PLAIN, "stubs")
    assert resolve_module_toc(None, None) == ModuleToc(None, "none")
    # ftrace stubs imply nothing
    only_ftrace = [s for s in stubs if s.kind is StubKind.FTRACE]
    assert resolve_module_toc(None, None, only_ftrace) == ModuleToc(None, "none")


def test_resolve_arch_toc() -> None:
    # <= 4.x mod->arch.toc wins over everything
    assert resolve_module_toc(TOC_SECTION, SBASE, _stubs(ROUNDED), arch_toc=PLAIN) == ModuleToc(
        PLAIN, "arch.toc"
    )
    # a zero arch.toc (field present, unset) is ignored
    assert resolve_module_toc(TOC_SECTION, SBASE, arch_toc=0).toc == ROUNDED


def test_implied_and_mismatch() -> None:
    good = _stubs(ROUNDED)
    assert implied_tocs(good) == Counter({ROUNDED: 3})
    # a stub built against another module's TOC (e.g. copied or stale)
    other = assemble("stub_normal.s", defsyms={"STUB": SBASE + 5 * 40, "TOC": 0xC008000000B98000,
                                               "TARGET": 0xC000000000123450}).text
    bad = decode_stub(other, SBASE + 5 * 40)
    stubs = [*good, bad]
    assert implied_tocs(stubs) == Counter({ROUNDED: 3, 0xC008000000B98000: 1})
    assert check_stub_tocs(stubs, ROUNDED) == [bad]
    assert check_stub_tocs(stubs, 0xC008000000B98000) == [s for s in good if s.implied_toc]
    # majority still picks the sections' rule
    assert resolve_module_toc(TOC_SECTION, SBASE, stubs).toc == ROUNDED
    assert implied_tocs([]) == Counter()


def test_pcrel_module_has_no_toc() -> None:
    """CONFIG_PPC_KERNEL_PCREL: my_r2() is -1 and there is no .toc; the TOC is not
    invented from .stubs."""
    from asmutil import assemble

    from klpinspect.ppc64.stubs import StubKind, decode_stub
    from klpinspect.ppc64.toc import resolve_module_toc

    data = assemble("stub_pcrel.s", defsyms={"TARGET": 0xC000000000AB1230}).text
    stub = decode_stub(data[:40], 0xC008000001A70100)
    assert stub.kind is StubKind.PCREL
    toc = resolve_module_toc(None, 0xC008000001A70100, [stub])
    assert (toc.toc, toc.source) == (None, "none")
