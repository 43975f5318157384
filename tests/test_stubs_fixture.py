"""Real stub slots of the ppc64le 6.1 and 7.2 fixture kernels, decoded by the pure core.

Two sources:

* ``tests/data/fixture_slots.json``: a subset kept in the repo (every slot of six
  modules, the first normal and all ftrace stubs of two big ones), extracted by
  ``tools/extract_fixture_slots.py`` from the fixture's ``checks/drgn-inspect.json``;
* each fixture itself (6.1 and 7.2): every used slot in its ``drgn-inspect.json``
  (1,917 and 2,256), checked against its README's module table and totals and
  the kallsyms lines of its ``facts.txt``.  A missing fixture is a test error
  (conftest), never a skip.  Neither kernel has out-of-line ftrace stubs
  (gcc 12, ``PPC_FTRACE_OUT_OF_LINE=n``): those are covered by tests/test_ool.py.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import LpFixture
from fixturefacts import ModuleRow

from klpinspect.ppc64.stubs import StubKind, decode_stub, for_each_stub
from klpinspect.ppc64.toc import check_stub_tocs, implied_tocs, module_toc, resolve_module_toc

DATA = Path(__file__).resolve().parent / "data" / "fixture_slots.json"
KERNEL_TOC = 0xC000000000BE8000  # 6.1 README: paca_ptrs[0]->kernel_toc (the subset's kernel)


@dataclass(frozen=True)
class Module:
    name: str
    toc: int
    toc_section: int | None
    stubs_section: int
    tramp: int
    tramp_regs: int
    used: int
    slots: dict[int, bytes]  # address -> 40 bytes


def _subset() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    return data


def _subset_modules() -> list[Module]:
    out = []
    for m in _subset()["modules"]:
        out.append(
            Module(
                name=m["name"],
                toc=int(m["toc"], 16),
                toc_section=int(m["sections"][".toc"], 16) if ".toc" in m["sections"] else None,
                stubs_section=int(m["sections"][".stubs"], 16),
                tramp=int(m["tramp"], 16),
                tramp_regs=int(m["tramp_regs"], 16),
                used=m["stubs_used"] if m["complete"] else -1,
                slots={int(s["address"], 16): bytes.fromhex(s["bytes"]) for s in m["slots"]},
            )
        )
    return out


def _section(mod: Module, trailing_zero_slots: int = 1) -> bytes:
    """The used part of ``.stubs`` rebuilt from contiguous slots, plus zero slots."""
    addrs = sorted(mod.slots)
    assert addrs == [mod.stubs_section + 40 * i for i in range(len(addrs))], mod.name
    return b"".join(mod.slots[a] for a in addrs) + bytes(40 * trailing_zero_slots)


def _check_module(
    mod: Module, kallsyms: dict[str, int], kernel_toc: int = KERNEL_TOC
) -> tuple[int, int]:
    ftrace_targets = {kallsyms[k] for k in ("_mcount", "ftrace_caller", "ftrace_regs_caller")}
    stubs = [decode_stub(data, addr, kernel_toc=kernel_toc) for addr, data in mod.slots.items()]
    kinds = Counter(s.kind for s in stubs)
    assert set(kinds) <= {StubKind.NORMAL, StubKind.FTRACE}, (mod.name, kinds)
    for s in stubs:
        assert s.magic_ok is True, (mod.name, hex(s.address))
        assert s.words[6] == 0
        if s.kind is StubKind.NORMAL:
            assert s.implied_toc == mod.toc, (mod.name, hex(s.address))
            assert s.target == s.funcdata and s.target
        else:
            assert s.paca_offset == 16  # PSERIES: kernel_toc after lppaca_ptr and the u16s
            assert s.target in ftrace_targets, (mod.name, hex(s.address))
            assert s.target == s.funcdata  # create_ftrace_stub() stores the target too
            assert s.implied_toc is None
    by_addr = {s.address: s for s in stubs}
    assert by_addr[mod.tramp].kind is StubKind.FTRACE
    assert by_addr[mod.tramp].target == kallsyms["ftrace_caller"]
    assert by_addr[mod.tramp_regs].kind is StubKind.FTRACE
    assert by_addr[mod.tramp_regs].target == kallsyms["ftrace_regs_caller"]
    assert check_stub_tocs(stubs, mod.toc) == []
    return kinds[StubKind.NORMAL], kinds[StubKind.FTRACE]


# --- the subset in tests/data ----------------------------------------------------


def test_subset_provenance() -> None:
    data = _subset()
    assert data["provenance"]["file"].endswith("ppc64le-6.1-lp/checks/drgn-inspect.json")
    assert int(data["kernel_toc"], 16) == KERNEL_TOC
    assert len(data["modules"]) >= 6


@pytest.mark.parametrize("mod", _subset_modules(), ids=lambda m: m.name)
def test_subset_slots(mod: Module) -> None:
    kallsyms = {k: int(v, 16) for k, v in _subset()["kallsyms"].items()}
    _check_module(mod, kallsyms)


@pytest.mark.parametrize(
    "mod", [m for m in _subset_modules() if m.used >= 0], ids=lambda m: m.name
)
def test_subset_section_walk(mod: Module) -> None:
    """for_each_stub over the rebuilt section stops at the zero sentinel after ``used`` slots."""
    section = _section(mod) + _section(mod, 0)  # stale slots beyond the sentinel
    stubs = list(for_each_stub(section, mod.stubs_section, kernel_toc=KERNEL_TOC))
    assert len(stubs) == mod.used == len(mod.slots)
    assert [s.address for s in stubs] == sorted(mod.slots)
    counted = list(for_each_stub(section, mod.stubs_section, count=mod.used,
                                 kernel_toc=KERNEL_TOC))
    assert counted == stubs
    resolved = resolve_module_toc(mod.toc_section, mod.stubs_section, stubs)
    assert resolved.toc == mod.toc and resolved.source == ".toc" and resolved.rule == "rounded"


def test_subset_rk_modules() -> None:
    """The README's rows for the livepatch trio: used/normal/ftrace counts."""
    mods = {m.name: m for m in _subset_modules()}
    kallsyms = {k: int(v, 16) for k, v in _subset()["kallsyms"].items()}
    assert _check_module(mods["rk_lp"], kallsyms) == (4, 3)
    assert _check_module(mods["rk_target"], kallsyms) == (6, 3)
    assert _check_module(mods["rk_lib"], kallsyms) == (1, 3)
    assert _check_module(mods["crc_itu_t"], kallsyms) == (0, 2)
    # rk_lp calls rk_lib_sleep in rk_lib through a module-to-module stub
    rk_lp = mods["rk_lp"]
    targets = {decode_stub(d, a).target for a, d in rk_lp.slots.items()}
    assert 0xC008000000EF0008 in targets  # facts.txt: rk_lib_sleep [rk_lib]


# --- the whole fixture -----------------------------------------------------------


def _fixture_modules(lp: LpFixture) -> Iterator[tuple[ModuleRow, Module]]:
    rows = {r.name: r for r in lp.facts.modules}
    inspect = json.loads((lp.path / "checks" / "drgn-inspect.json").read_text())
    assert inspect["kernel_toc"] == lp.facts.kernel_toc
    assert {m["name"] for m in inspect["modules"]} == set(rows)
    for m in inspect["modules"]:
        row = rows[m["name"]]
        # 7.x: out-of-line ftrace stubs would be listed here; neither fixture has any
        assert not m.get("ool_stubs") and not m.get("ool_stub_count"), m["name"]
        slots = {}
        for e in m["first_normal_stubs"] + m["ftrace_stub_list"]:
            words = [int(w, 16) for w in e["words"]]
            slots[e["addr"]] = struct.pack("<8IQ", *words, e["funcdata"])
        yield row, Module(m["name"], row.toc, row.toc_section, row.stubs, m["tramp"],
                          m["tramp_regs"], m["stubs_used"], slots)


def test_fixture_every_slot(lp: LpFixture) -> None:
    facts = lp.facts
    kallsyms = {k.name: k.address for k in facts.kallsyms if k.owner == "vmlinux"}
    totals: Counter[str] = Counter()
    targets: Counter[int] = Counter()
    rows = 0
    for row, mod in _fixture_modules(lp):
        rows += 1
        assert mod.tramp == row.tramp and mod.tramp_regs == row.tramp_regs
        assert len(mod.slots) == row.used == mod.used, mod.name
        assert _check_module(mod, kallsyms, facts.kernel_toc) == (row.normal, row.ftrace), mod.name
        section = _section(mod)
        stubs = list(for_each_stub(section, row.stubs, kernel_toc=facts.kernel_toc))
        assert len(stubs) == row.used
        totals.update(s.kind.value for s in stubs)
        targets.update(s.target for s in stubs if s.kind is StubKind.FTRACE and s.target)
        # the module TOC, from the README's .toc with the stubs choosing the rule
        resolved = resolve_module_toc(row.toc_section, row.stubs, stubs)
        assert resolved.toc == row.toc, mod.name
        assert resolve_module_toc(row.toc_section, row.stubs).toc == row.toc
        assert module_toc(row.toc_section) == row.toc
        if stubs and row.normal:
            assert implied_tocs(stubs) == Counter({row.toc: row.normal})
    # README: "N used slots = X normal + Y ftrace" (6.1: 1,917; 7.2: 2,256)
    used, normal, ftrace = facts.totals
    assert rows == len(facts.modules)
    assert totals == Counter({"normal": normal, "ftrace": ftrace}) and normal + ftrace == used
    # every module has its arch.tramp (ftrace_caller) and tramp_regs; the rest go to _mcount
    # (6.1: 38 of 40 modules, crc_itu_t and libcrc32c have none; 7.2: all 45)
    assert targets == Counter({kallsyms["ftrace_caller"]: rows,
                               kallsyms["ftrace_regs_caller"]: rows,
                               kallsyms["_mcount"]: ftrace - 2 * rows})


def test_fixture_subset_is_current(lp61: Path) -> None:
    """tests/data was extracted from this fixture's JSON (same hash)."""
    import hashlib

    raw = (lp61 / "checks" / "drgn-inspect.json").read_bytes()
    assert _subset()["provenance"]["sha256"] == hashlib.sha256(raw).hexdigest()
