"""Call sites into ``.stubs``: the pure scanner and the audit over a Target.

The code is ``tests/ko/callsites.s`` assembled at test time (LE ELFv2 and BE
ELFv1) and mapped at a module address; the stub area sits inside the same
section, so every branch offset is the assembler's.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from asmutil import assemble, objdump_mnemonics
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import SyntheticTarget

from klpinspect.callsite_audit import audit_module_callsites, module_text_regions
from klpinspect.ppc64.callsites import CallFollow, CallSite, find_stub_calls
from klpinspect.ppc64.insn import aa_bit, branch_target, is_i_form_branch, lk_bit, words
from klpinspect.ppc64.stubs import OOL_STUB_SIZE
from klpinspect.report import Severity
from klpinspect.target import KernelInfo, ModuleInfo, SymbolInfo, Target

BASE = 0xC008000000F90000
SRC = "callsites.s"
KMALLOC = 0xC000000000AB1230
STUB0, STUB1, STUB2, TRAMP, TRAMP_REGS, PSTUB = (BASE + 0x100 + 40 * k for k in range(6))
STUBS = (STUB0, STUB1, STUB2, TRAMP, TRAMP_REGS, PSTUB)
END = 0x1FC


def _text(byteorder: str = "little") -> bytes:
    src = Path(__file__).resolve().parent / "ko" / SRC
    restore = 24 if byteorder == "little" else 40
    asm = assemble(src, byteorder=byteorder, defsyms={"RESTORE": restore, "FUNCDATA": KMALLOC})
    assert len(asm.text) == END
    return asm.text


def _sites(calls: list[CallSite]) -> list[tuple[int, str, bool, int]]:
    return [(c.address - BASE, c.follow.value, c.link, c.target) for c in calls]


EXPECTED = [
    (0x04, "ftrace", True, TRAMP),
    (0x14, "toc-restore", True, STUB0),
    (0x1C, "nop", True, STUB1),
    (0x24, "other", True, STUB0),
    (0x44, "ftrace", True, STUB2),
    (0x48, "ftrace", True, TRAMP_REGS),
    (0x58, "sibling", False, STUB1),
    (0x1F0, "other", True, PSTUB),
    (0x1F8, "other", True, STUB1),
]


def test_offsets_match_the_assembler() -> None:
    src = Path(__file__).resolve().parent / "ko" / SRC
    asm = assemble(src, defsyms={"RESTORE": 24, "FUNCDATA": KMALLOC})
    mn = objdump_mnemonics(asm)
    for off, _follow, link, _t in EXPECTED:
        assert mn[off] == ("bl" if link else "b"), hex(off)


def test_classify_elfv2_le() -> None:
    calls = find_stub_calls(_text(), BASE, set(STUBS), tramps=(TRAMP, TRAMP_REGS))
    assert _sites(calls) == EXPECTED
    by = {c.address - BASE: c for c in calls}
    assert by[0x1F8].next_word is None
    assert by[0x1C].next_word == 0x60000000
    assert [c.ok for c in calls] == [True, True, False, False, True, True, False, False, False]


def test_classify_elfv1_be() -> None:
    text = _text("big")
    calls = find_stub_calls(text, BASE, STUBS, tramps=(TRAMP, TRAMP_REGS), byteorder="big", abi=1)
    assert _sites(calls) == EXPECTED
    # Read as ELFv2, ld r2,40(r1) is not the restore.
    v2 = find_stub_calls(text, BASE, STUBS, byteorder="big", abi=2)
    assert dict((a, f) for a, f, _l, _t in _sites(v2))[0x14] == "other"


def test_ftrace_needs_mflr_or_tramp() -> None:
    """Without the tramp list, "bl tramp_regs" after an ordinary word is just a call."""
    calls = find_stub_calls(_text(), BASE, list(STUBS))
    got = {a: f for a, f, _l, _t in _sites(calls)}
    assert got[0x04] == "ftrace"  # mflr r0 right before
    assert got[0x44] == "ftrace"  # mflr r0; std r0,16(r1)
    assert got[0x48] == "other"


@pytest.mark.parametrize("byteorder,abi", [("little", 2), ("big", 1), ("big", 2)])
@pytest.mark.parametrize("tramps", [(TRAMP, TRAMP_REGS), ()])
def test_suspect_only_is_the_not_ok_sites(
    byteorder: str, abi: int, tramps: tuple[int, ...]
) -> None:
    """The audit's fast filter drops exactly the sites that are ``ok``."""
    text = _text(byteorder)
    for cut in (len(text), 0x20, 0x24, 0x48):  # also with the last site at the text's end
        every = find_stub_calls(text[:cut], BASE, STUBS, tramps=tramps, byteorder=byteorder,
                                abi=abi)
        suspect = find_stub_calls(text[:cut], BASE, STUBS, tramps=tramps, byteorder=byteorder,
                                  abi=abi, suspect_only=True)
        assert suspect == [c for c in every if not c.ok]
        assert any(c.ok for c in every) and suspect


def test_edges() -> None:
    text = _text()
    assert find_stub_calls(text, BASE, ()) == []
    assert find_stub_calls(text, BASE + 4, STUBS) == []  # moved: no target hits a slot
    # A trailing partial word is ignored; a truncated region ends with next_word None.
    calls = find_stub_calls(text[:0x24] + b"\x01\x02", BASE, STUBS)
    assert _sites(calls)[-1] == (0x1C, "nop", True, STUB1)
    calls = find_stub_calls(text[:0x20], BASE, STUBS)
    assert calls[-1].next_word is None and calls[-1].follow is CallFollow.OTHER


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(["little", "big"]))
def test_random_bytes_never_raise(data: bytes, byteorder: str) -> None:
    stubs = {BASE + 0x100, BASE + 0x128}
    every = find_stub_calls(data, BASE, stubs, byteorder=byteorder)
    for c in every:
        assert c.target in stubs and (c.address - BASE) % 4 == 0
    suspect = find_stub_calls(data, BASE, stubs, byteorder=byteorder, suspect_only=True)
    assert suspect == [c for c in every if not c.ok]


def _reference(text: bytes, address: int, stubs: set[int],
               byteorder: str = "little") -> list[tuple[int, int, bool]]:
    """The sites the scanner must find, the slow way: every word, insn.branch_target."""
    out = []
    for i, w in enumerate(words(text, byteorder)):
        site = address + 4 * i  # as find_stub_calls reports it (targets wrap, sites not)
        if is_i_form_branch(w) and not aa_bit(w) and branch_target(w, site) in stubs:
            out.append((site, branch_target(w, site), lk_bit(w)))
    return out


def _found(calls: list[CallSite]) -> list[tuple[int, int, bool]]:
    return [(c.address, c.target, c.link) for c in calls]


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("address", [BASE, BASE - 0x20000000, 0, 0xFFFFFFFFFFFFFF80])
def test_fast_scan_is_the_branch_target_reference(byteorder: str, address: int) -> None:
    """The scanner's I-form arithmetic finds exactly what insn.branch_target says,
    also where the text wraps past 2**64 and with slots behind the text."""
    text = _text(byteorder) * 3
    mask = 0xFFFFFFFFFFFFFFFF
    slots = {(s - BASE + address + k) & mask for s in STUBS for k in (0, END, 2 * END)}
    behind = {(address - 0x1000000 + 8 * k) & mask for k in range(4)}
    for stubs in (slots, slots | behind, {min(slots)}):
        got = find_stub_calls(text, address, stubs, byteorder=byteorder)
        assert _found(got) == _reference(text, address, stubs, byteorder)
        assert len(got) >= (27 if stubs is slots else 1)


@pytest.mark.parametrize("byteorder,abi", [("little", 2), ("big", 1)])
def test_sibling_before_a_restore_is_still_suspect(byteorder: str, abi: int) -> None:
    """The fast filter drops only ``bl``s followed by the restore: a ``b`` into a
    stub followed by the same word is a sibling call, reported."""
    asm = words(_text(byteorder), byteorder)
    sibling, restore = asm[0x58 // 4], asm[0x18 // 4]  # "b stub1"; "ld r2,R(r1)" after a bl
    prefix = "<" if byteorder == "little" else ">"
    text = struct.pack(f"{prefix}4I", asm[0], sibling, restore, asm[0x14 // 4])
    stubs = {branch_target(w, BASE + 4 * i) for i, w in enumerate(words(text, byteorder))
             if is_i_form_branch(w)}
    every = find_stub_calls(text, BASE, stubs, byteorder=byteorder, abi=abi)
    suspect = find_stub_calls(text, BASE, stubs, byteorder=byteorder, abi=abi,
                              suspect_only=True)
    assert [c.follow for c in every] == [CallFollow.SIBLING, CallFollow.OTHER]
    assert every[0].next_word == restore
    assert suspect == every


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, END // 4 - 1), min_size=1, max_size=200),
    st.integers(0, 2**62 - 1),
    st.lists(st.integers(-0x4000, 0x4000), max_size=12),
    st.sampled_from(["little", "big"]),
)
def test_assembled_words_shuffled_match_the_reference(
    picks: list[int], address: int, offsets: list[int], byteorder: str
) -> None:
    """Real encodings (the assembled file's words) in any order, at any address,
    slots anywhere near: the same sites as the reference, in both modes."""
    asm_words = words(_text(byteorder), byteorder)
    prefix = "<" if byteorder == "little" else ">"
    text = struct.pack(f"{prefix}{len(picks)}I", *(asm_words[p] for p in picks))
    address *= 4
    mask = 0xFFFFFFFFFFFFFFFF
    stubs = {(address + 4 * o) & mask for o in offsets}
    # and every target a branch of the text has, so that there are hits
    for i, w in enumerate(words(text, byteorder)):
        if is_i_form_branch(w) and i % 3:
            stubs.add(branch_target(w, (address + 4 * i) & mask))
    every = find_stub_calls(text, address, stubs, byteorder=byteorder)
    assert _found(every) == _reference(text, address, stubs, byteorder)
    tramps = set(list(stubs)[:1])
    every = find_stub_calls(text, address, stubs, tramps=tramps, byteorder=byteorder)
    suspect = find_stub_calls(text, address, stubs, tramps=tramps, byteorder=byteorder,
                              suspect_only=True)
    assert suspect == [c for c in every if not c.ok]


def test_scan_speed_5mb() -> None:
    """Well under a second for 5 MB (a benchmark figure, with a generous bound)."""
    text = _text() * (5 * 1024 * 1024 // END)
    t = time.perf_counter()
    calls = find_stub_calls(text, BASE, STUBS, tramps=(TRAMP, TRAMP_REGS))
    elapsed = time.perf_counter() - t
    assert len(calls) == 9  # only the first copy's branches reach the slots
    assert elapsed < 1.0, f"{elapsed:.3f}s"


# --- the audit over a synthetic Target -------------------------------------


def _target(byteorder: str = "little", **mod_kw: object) -> tuple[SyntheticTarget, ModuleInfo]:
    text = _text(byteorder)
    abi = 2 if byteorder == "little" else 1
    kernel = KernelInfo(release="6.1.192", byteorder=byteorder, abi=abi)
    kw: dict[str, object] = dict(
        name="lpmod",
        stubs=STUB0,
        tramp=TRAMP,
        tramp_regs=TRAMP_REGS,
        text_ranges=((BASE, BASE + END),),
    )
    kw.update(mod_kw)
    mod = ModuleInfo(**kw)  # type: ignore[arg-type]
    target = SyntheticTarget(
        kernel_info=kernel,
        regions={BASE: text},
        module_list=[mod],
        symbols=[
            SymbolInfo("caller", BASE, 0x5C, "lpmod"),
            SymbolInfo("kmalloc", KMALLOC, 0x100, "vmlinux"),
        ],
    )
    return target, mod


def test_audit_findings() -> None:
    target, mod = _target()
    findings = audit_module_callsites(target, mod, STUBS, target.kernel())
    got = [(f.code, f.address - BASE if f.address else None) for f in findings]
    assert got == [
        ("CALLSITE_NO_TOC_RESTORE", 0x1C),
        ("CALLSITE_NO_TOC_RESTORE", 0x24),
        ("CALLSITE_SIBLING_VIA_STUB", 0x58),
        ("CALLSITE_NO_TOC_RESTORE", 0x1F8),
    ]
    assert all(f.module == "lpmod" for f in findings)
    # restore_r2() accepts sibling calls: a warning naming the fix, not an error
    assert [f.level for f in findings] == [Severity.ERROR, Severity.ERROR, Severity.WARNING,
                                           Severity.ERROR]
    assert "-fno-optimize-sibling-calls" in findings[2].message
    f24 = findings[1]
    assert f24.symbol == "caller+0x24/0x5c [lpmod]"
    assert "kmalloc+0x0/0x100" in f24.message and "ld r2,24(r1)" in f24.message
    site = [line for line in f24.context if line.startswith("=> ")]
    assert len(site) == 1 and site[0].startswith(f"=> {BASE + 0x24:#x}:") and " bl " in site[0]
    assert len(f24.context) == 7
    assert "nop" in findings[0].message
    # One bulk read of the text, then one read of each suspicious site's stub.
    assert target.reads == [(BASE, END), (STUB1, 40), (STUB0, 40), (PSTUB, 40)]


def test_audit_elfv1_be() -> None:
    target, mod = _target("big")
    findings = audit_module_callsites(target, mod, STUBS, target.kernel())
    assert [f.address - BASE for f in findings if f.address] == [0x1C, 0x24, 0x58, 0x1F8]
    assert "ld r2,40(r1)" in findings[1].message
    assert "std r2,40(r1)" in findings[2].message


def test_audit_from_sections_without_text_ranges() -> None:
    """Bounded by the next section: .text (or only .text.unlikely) up to .stubs."""
    for name in (".text", ".text.unlikely"):
        target, mod = _target(
            text_ranges=(), sections={name: BASE, ".stubs": STUB0, ".data": BASE + 0x10000}
        )
        assert module_text_regions(mod) == [(name, BASE, STUB0)]
        findings = audit_module_callsites(target, mod, STUBS, target.kernel())
        assert [f.address - BASE for f in findings if f.address] == [0x1C, 0x24, 0x58]
    target, mod = _target(text_ranges=(), sections={".text": BASE}, section_sizes={".text": END})
    assert module_text_regions(mod) == [(".text", BASE, BASE + END)]


def test_audit_unreadable_region_is_a_warning() -> None:
    target, mod = _target(text_ranges=((BASE - 0x10000, BASE - 0x8000), (BASE, BASE + END)))
    findings = audit_module_callsites(target, mod, STUBS, target.kernel())
    assert findings[0].code == "MEMORY_UNREADABLE"
    assert findings[0].level is Severity.WARNING
    assert findings[0].address == BASE - 0x10000
    assert len(findings) == 5


def test_audit_ignores_ool_area_and_empty_stubs() -> None:
    target, mod = _target(ool_stubs=STUB1 - 8, ool_stub_count=1, tramp=None, tramp_regs=None)
    findings = audit_module_callsites(target, mod, STUBS, target.kernel())
    # STUB1 is in the OOL area now: its two sites are gone; without the tramp
    # list, "bl tramp_regs" at 0x48 is an ordinary call (no mflr before it).
    assert [f.address - BASE for f in findings if f.address] == [0x24, 0x48]
    target, mod = _target(tramp=None, tramp_regs=None)
    assert audit_module_callsites(target, mod, (), target.kernel()) == []


# --- the real 6.1 dump: every call site of 40 loaded modules ---------------


@pytest.mark.dump
def test_real_dump_call_sites(vmcore_elf: Path, vmlinux_debug: Path, modules_dir: Path) -> None:
    """Every call into a stub restores the TOC, and the sites are exactly the .ko's.

    For each module, the ``toc-restore`` sites found in memory equal the
    ``R_PPC64_REL24`` relocations against undefined symbols (``_mcount`` and the
    ftrace entry points excepted) of its ``.ko`` sections that lie in the
    module's text; the only ``ftrace`` sites are the enabled ones of the four
    livepatched functions.
    """
    from klpinspect.backends.drgn.program import open_program
    from klpinspect.backends.drgn.target import DrgnTarget

    prog, kind = open_program(core=str(vmcore_elf), symbols=[str(vmlinux_debug)])
    target = DrgnTarget(prog, kind)
    assert len(list(target.modules())) == 40
    kos = {_modinfo_name(p): p for p in modules_dir.glob("*.ko")}
    total, ftrace_funcs = check_module_call_sites(target, kos)
    assert ftrace_funcs == {"rk_target_work", "rk_target_inner", "dummy_alloc", "dummy_free"}
    assert total == 7262


def check_module_call_sites(target: Target, kos: Mapping[str, Path]) -> tuple[int, set[str]]:
    """Every loaded module's call sites: no finding, and the ``toc-restore``
    sites in memory are the stub-routed REL24 relocations of its ``.ko``
    (``kos``: module name -> its ``.ko``).  The number of those sites, and the
    functions whose ftrace site is enabled."""
    from klpinspect.audit import stubs_report

    kernel = target.kernel()
    mods = {m.name: m for m in target.modules()}
    stubs = {
        r.name: [s.address for s in r.stubs if s.kind != "empty"]
        for r in stubs_report(target).modules
    }
    ftrace_funcs = set()
    total = 0
    for name, mod in mods.items():
        assert audit_module_callsites(target, mod, stubs[name], kernel) == [], name
        follows: dict[str, int] = {}
        ool = (mod.ool_stubs or 0, (mod.ool_stubs or 0) + (mod.ool_stub_count or 0) * OOL_STUB_SIZE)
        for _label, start, end in module_text_regions(mod):
            tramps = [t for t in (mod.tramp, mod.tramp_regs) if t is not None]
            data = target.read(start, end - start)
            calls = find_stub_calls(data, start, stubs[name], tramps=tramps)
            assert _found(calls) == _reference(data, start, set(stubs[name]), kernel.byteorder)
            for c in calls:
                if c.follow is CallFollow.FTRACE and ool[0] <= c.address < ool[1]:
                    continue  # an out-of-line ftrace stub's own `mflr r0; bl <tramp>` (6.13+)
                follows[c.follow.value] = follows.get(c.follow.value, 0) + 1
                if c.follow is CallFollow.FTRACE:
                    sym = target.symbolize(c.address)
                    assert sym is not None
                    ftrace_funcs.add(sym.name)
        assert follows.get("toc-restore", 0) == _ko_stub_calls(kos[name], mod), name
        total += follows.get("toc-restore", 0)
    return total, ftrace_funcs


def _modinfo_name(path: Path) -> str:
    with open(path, "rb") as f:
        data = ELFFile(f).get_section_by_name(".modinfo").data()
    return data.split(b"name=")[1].split(b"\0")[0].decode()


def _ko_stub_calls(path: Path, mod: ModuleInfo) -> int:
    """REL24 relocations the kernel routes through a stub, in sections now in text."""
    exempt = {"_mcount", "ftrace_caller", "ftrace_regs_caller"}
    n = 0
    with open(path, "rb") as f:
        elf = ELFFile(f)
        secs = list(elf.iter_sections())
        symtab = elf.get_section_by_name(".symtab")
        for rela in secs:
            if rela["sh_type"] != "SHT_RELA":
                continue
            sec = secs[rela["sh_info"]]
            addr = mod.sections.get(sec.name)
            if addr is None or not any(lo <= addr < hi for lo, hi in mod.text_ranges):
                continue
            for r in rela.iter_relocations():
                sym = symtab.get_symbol(r["r_info_sym"])
                if (
                    r["r_info_type"] == 10
                    and sym["st_shndx"] == "SHN_UNDEF"
                    and sym.name not in exempt
                ):
                    n += 1
    return n
