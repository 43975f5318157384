"""The audit over a synthetic Target whose .stubs come from the real assembler.

Each slot of ``tests/asm/audit_module.s`` is one situation; every finding code
of the stub and trampoline checks must fire exactly where it should, and
nowhere else.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from asmutil import assemble
from synthetic import SyntheticTarget

from klpinspect.audit import audit, stubs_report, toc_report
from klpinspect.commands import run_command
from klpinspect.errors import KlpError
from klpinspect.ppc64.insn import STUB_MAGIC
from klpinspect.report import render_json
from klpinspect.target import KernelInfo, ModuleInfo, SymbolInfo

KTOC = 0xC000000001C0B100
FC = 0xC000000000089B00
FRC = 0xC000000000089960
T0 = 0xC000000000AB1230
KTEXT = (0xC000000000000000, 0xC000000001000000)
SBASE = 0xC008000001A70100
TOC_SECTION = 0xC008000001A80000
TOC = (TOC_SECTION & ~0xFF) + 0x8000
BADTOC = 0xC008000002228100
DANGLING = 0xC008000009990000
MOD_TEXT = (0xC008000001A60000, 0xC008000001A70400)


def make_target(magic: int = STUB_MAGIC, tramp: int | None = None,
                tramp_regs: int | None = None) -> SyntheticTarget:
    asm = assemble(
        "audit_module.s",
        defsyms={
            "SBASE": SBASE, "TOC": TOC, "BADTOC": BADTOC, "KTOC": KTOC, "PACATOC": 16,
            "T0": T0, "FC": FC, "FRC": FRC, "DANGLING": DANGLING, "MAGIC": magic,
        },
    )
    kernel = KernelInfo(
        release="6.1.0-test", toc=KTOC, toc_source="paca", ftrace_caller=FC,
        ftrace_regs_caller=FRC, text_ranges=(KTEXT,), paca_toc_offset=16,
    )
    mod = ModuleInfo(
        name="badmod",
        text_ranges=(MOD_TEXT,),
        sections={".text": MOD_TEXT[0], ".toc": TOC_SECTION, ".stubs": SBASE},
        stubs=SBASE,
        toc_section=TOC_SECTION,
        tramp=SBASE + 2 * 40 if tramp is None else tramp,
        tramp_regs=SBASE + 3 * 40 if tramp_regs is None else tramp_regs,
    )
    return SyntheticTarget(
        kernel_info=kernel,
        # .stubs sits at the end of the module's text, as the loader lays it out
        regions={SBASE: asm.text.ljust(MOD_TEXT[1] - SBASE, b"\0")},
        module_list=[mod],
        symbols=[
            SymbolInfo("kmalloc", T0, 0x100, "vmlinux"),
            SymbolInfo("ftrace_caller", FC, 0x80, "vmlinux"),
            SymbolInfo("ftrace_regs_caller", FRC, 0x100, "vmlinux"),
        ],
    )


def codes_at(report, code: str) -> set[int]:
    return {f.address for f in report.findings if f.code == code}


def test_every_slot_classified() -> None:
    report = stubs_report(make_target())
    (mod,) = report.modules
    assert [s.kind for s in mod.stubs] == [
        "normal", "normal", "ftrace", "ftrace", "normal", "normal", "normal", "unknown"
    ]
    assert mod.toc == TOC and mod.toc_source == ".toc"
    assert mod.stubs[0].target_symbol == "kmalloc"
    assert mod.stubs[0].implied_toc == TOC
    assert mod.stubs[1].implied_toc == BADTOC
    assert mod.stubs[2].target == FC and mod.stubs[2].target_symbol == "ftrace_caller"


def test_findings_fire_where_they_should() -> None:
    report = stubs_report(make_target(magic=0x12345678, tramp_regs=SBASE + 3 * 40))
    assert codes_at(report, "STUB_TOC_MISMATCH") == {SBASE + 40}
    assert codes_at(report, "STUB_UNKNOWN") == {SBASE + 7 * 40}
    assert codes_at(report, "STUB_BAD_MAGIC") == {SBASE + 4 * 40}
    assert codes_at(report, "STUB_TARGET_DANGLING") == {SBASE + 5 * 40}
    # tramp_regs is a paca stub, but it reaches kmalloc, not ftrace_regs_caller
    assert codes_at(report, "TRAMP_TARGET_MISMATCH") == {SBASE + 3 * 40}
    assert codes_at(report, "TRAMP_NOT_FTRACE_STUB") == set()
    assert report.exit_status == 1


def test_r2_relative_tramp_is_an_error() -> None:
    report = stubs_report(make_target(tramp_regs=SBASE + 6 * 40))
    assert codes_at(report, "TRAMP_NOT_FTRACE_STUB") == {SBASE + 6 * 40}
    # it does reach ftrace_regs_caller: the target is right, the r2 use is not
    assert codes_at(report, "TRAMP_TARGET_MISMATCH") == set()


def test_good_magic_no_magic_finding() -> None:
    report = stubs_report(make_target())
    assert codes_at(report, "STUB_BAD_MAGIC") == set()


def test_sentinel_stops_walk() -> None:
    report = stubs_report(make_target())
    assert len(report.modules[0].stubs) == 8


def test_one_read_per_stubs_section() -> None:
    target = make_target()
    stubs_report(target)
    assert sum(1 for a, _ in target.reads if a == SBASE) == 1


def test_unreadable_stubs_is_a_finding() -> None:
    target = make_target()
    target.regions.clear()
    report = stubs_report(target)
    assert "MEMORY_UNREADABLE" in {f.code for f in report.findings}
    assert report.modules[0].stubs == []


def test_toc_report_and_unknown_module() -> None:
    target = make_target()
    report = toc_report(target, ["badmod"])
    # the TOC view: stubs against the module TOC, tramps against ftrace_caller and r2
    assert {f.code for f in report.findings} == {"STUB_TOC_MISMATCH", "TRAMP_TARGET_MISMATCH"}
    with pytest.raises(KlpError, match="no module named 'xfz'"):
        toc_report(target, ["xfz"])


def test_audit_json_schema() -> None:
    report = audit(make_target(), callsites=False)
    doc = json.loads(render_json(report))
    assert doc["schema"] == "klpinspect/1"
    assert doc["target"] == {"kind": "synthetic", "release": "6.1.0-test", "arch": "ppc64le"}
    assert doc["kernel"]["toc"] == hex(KTOC)
    mod = doc["modules"][0]
    assert set(mod) == {"name", "toc", "toc_source", "stubs_section", "stubs", "tramp",
                        "tramp_regs"}
    stub = mod["stubs"][0]
    assert stub["address"] == hex(SBASE) and stub["kind"] == "normal"
    assert stub["target_owner"] == "vmlinux" and stub["implied_toc"] == hex(TOC)
    for f in doc["findings"]:
        assert set(f) >= {"severity", "code", "module", "pid", "address", "message"}
        assert f["severity"] in ("error", "warning", "info")
    # no livepatch_sp on this kernel: said once, not an error
    assert any(f["code"] == "LIVEPATCH_UNSUPPORTED" for f in doc["findings"])


def test_run_command_bad_arguments() -> None:
    with pytest.raises(KlpError, match="klp-bt"):
        run_command(make_target(), "bt", ["notapid"])
    text, status = run_command(make_target(), "stubs", ["--format", "json", "badmod"])
    assert json.loads(text)["modules"][0]["name"] == "badmod"
    assert status == 1


def _pg_target() -> SyntheticTarget:
    asm = assemble("audit_pg_module.s", defsyms={"SBASE": SBASE, "TOC": TOC, "T0": T0, "FC": FC})
    target = make_target()
    mod = ModuleInfo(
        name="pgmod", text_ranges=(MOD_TEXT,), stubs=SBASE, toc_section=TOC_SECTION,
        tramp=SBASE + 40,
    )
    target.module_list = [mod]
    target.regions = {SBASE: asm.text.ljust(MOD_TEXT[1] - SBASE, b"\0")}
    return target


def test_pg_kernel_r2_relative_tramp_is_by_design() -> None:
    """Without -mprofile-kernel no module has a paca stub: an r2-relative tramp is
    what create_ftrace_stub() makes there, not a bug."""
    report = stubs_report(_pg_target())
    assert report.modules[0].tramp is not None
    assert report.modules[0].tramp.kind == "normal"
    assert report.modules[0].tramp.target_symbol == "ftrace_caller"
    assert report.findings == []


def test_mprofile_kernel_other_module_decides() -> None:
    """Asked about one -pg-looking module of a kernel whose other modules have paca
    tramps, the r2-relative tramp is an error again."""
    target = _pg_target()
    good = make_target()
    other_base = SBASE + 0x100000  # a copy of badmod's slots, paca tramps included
    other = dataclasses.replace(
        good.module_list[0], name="other", stubs=other_base, tramp=other_base + 80,
        tramp_regs=other_base + 120, text_ranges=((other_base, other_base + 0x300),),
    )
    target.module_list.append(other)
    target.regions[other_base] = good.regions[SBASE][:0x300]
    report = stubs_report(target, ["pgmod"])
    assert codes_at(report, "TRAMP_NOT_FTRACE_STUB") == {SBASE + 40}


def test_toc_map_covers_modules_not_asked_for() -> None:
    from klpinspect.audit import _audit_modules, module_toc_map

    target = make_target()
    other = dataclasses.replace(target.module_list[0], name="other", toc_section=0xC008000002220000)
    target.module_list.append(other)
    audits, everything = _audit_modules(target, target.kernel(), ["badmod"])
    tocs = module_toc_map(target.kernel(), audits, everything)
    assert tocs[0xC008000002228000] == "other" and tocs[TOC] == "badmod"
    assert tocs[KTOC] == "vmlinux"


def test_ool_area_decoded_and_skipped() -> None:
    """6.13+: the OOL ftrace stubs sit between tramp_regs and later stubs; the walk
    skips their slots (whose 'funcdata' word can be 0) and reports them apart."""
    base = 0xC008000001A60000
    syms = {
        "BASE": base, "TOC": 0xC008000001A88000, "KTOC": KTOC, "PACATOC": 16, "FC": FC,
        "FRC": FRC, "CALLEE": T0, "OP0": 0, "OP1": 0, "OP2": 0,  # disabled: ftrace_op 0
    }
    text = assemble("ool.s", defsyms=syms).text
    stubs = base + 0x10000
    mod = ModuleInfo(
        name="oolmod", text_ranges=((base, base + len(text)),), stubs=stubs,
        toc_section=0xC008000001A80000, tramp=stubs, tramp_regs=stubs + 40,
        ool_stubs=stubs + 80, ool_stub_count=3,
    )
    target = make_target()
    target.module_list = [mod]
    target.regions = {base: text}
    target.symbols.append(SymbolInfo("oolmod_text", base, 0x10000, "oolmod"))
    report = stubs_report(target)
    (rec,) = report.modules
    assert [(s.index, s.kind) for s in rec.stubs] == [(0, "ftrace"), (1, "ftrace"), (4, "normal")]
    assert [s.kind for s in rec.ool_stubs] == ["ool-ftrace"] * 3
    assert {s.target for s in rec.ool_stubs} == {stubs}  # bl mod->arch.tramp
    assert report.findings == []
    doc = json.loads(render_json(report))
    assert [s["address"] for s in doc["modules"][0]["ool_stubs"]] == [
        hex(stubs + 80), hex(stubs + 104), hex(stubs + 128)
    ]


class _CountingTarget(SyntheticTarget):
    """Counts module-list walks (the cost klp-bt skips without livepatch frames)."""

    walks = 0

    def modules(self) -> list[ModuleInfo]:
        self.walks += 1
        return list(super().modules())


def test_tocs_for_walks_the_modules_only_when_used() -> None:
    from klpinspect.audit import tocs_for

    base = make_target()
    target = _CountingTarget(kernel_info=base.kernel_info, regions=base.regions,
                             module_list=base.module_list, symbols=base.symbols)
    tocs = tocs_for(target)
    assert target.walks == 0
    assert tocs[TOC] == "badmod" and tocs[KTOC] == "vmlinux"
    assert dict(tocs) == {TOC: "badmod", KTOC: "vmlinux"}
    assert target.walks == 1  # computed once
