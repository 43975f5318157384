"""Out-of-line ftrace stubs (6.13+) sited and checked, not just decoded.

The stubs come from the real assembler (``tests/asm/ool_checks.s``): the
template of ``ftrace_init_ool_stub()`` ({ftrace_op; mflr r0; bl tramp; mtlr r0;
b rec->ip + 4}), the ``bl`` retargeted as ``ftrace_replace_code()`` does and
the site words as ``ftrace_make_call()`` / ``ftrace_replace_code()`` leave them
(``b &ool_stub->insn[0]`` or ``nop``), with one fault of each checked kind.

Neither real fixture can serve here: both the 6.1 and the 7.2 livepatch
kernels were built with gcc 12, which fails
``check-fpatchable-function-entry.sh``, so ``PPC_FTRACE_OUT_OF_LINE=n`` and no
module has OOL stubs (their READMEs; tests/test_drgn_target.py and
tests/test_cli_dump.py check that the audit finds none).  The synthetic
target below runs the same audit both back ends run.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable

import pytest
from asmutil import assemble, objdump_mnemonics
from synthetic import SyntheticTarget

from klpinspect.audit import audit, stubs_report
from klpinspect.ftrace_view import read_ftrace_ool_sites, read_ftrace_records
from klpinspect.ool_audit import read_site_words
from klpinspect.ppc64 import insn
from klpinspect.ppc64.ool import SiteState, check_ool_stubs, ool_insn0, site_state
from klpinspect.ppc64.stubs import OOL_STUB_SIZE, StubKind, for_each_ool_stub, ool_reserved_slots
from klpinspect.report import CODES, OolStubRecord, Severity, render_json, render_table
from klpinspect.target import KernelInfo, ModuleInfo, SymbolInfo, make_module_info

BASE = 0xC008000001A60000
STUBS = BASE + 0x10000
OOL = STUBS + 2 * 40  # mod->arch.ool_stubs: after tramp and tramp_regs
NOOL = 9
NORMAL = STUBS + 8 * 40
SYMS = {
    "BASE": BASE, "TOC": 0xC008000001A88000, "KTOC": 0xC000000001C0B100, "PACATOC": 16,
    "FC": 0xC000000000089B00, "FRC": 0xC000000000089960, "CALLEE": 0xC000000000AB1230,
    "OPS": 0xC000000002000000, "NOPOPS": 0xC000000002000100,
}
TEXT = (BASE, BASE + 0x1000)
SITES = [BASE + 0x100 * i for i in range(1, 8)]  # site0..site6
OUTSIDE = BASE + 0x2000


def _asm(order: str = "little") -> bytes:
    return assemble("ool_checks.s", byteorder=order, defsyms=SYMS).text


def _stubs(text: bytes, order: str = "little") -> list:  # type: ignore[type-arg]
    return list(for_each_ool_stub(text[0x10000:], STUBS, OOL, NOOL, byteorder=order))


def _site_words(text: bytes, order: str = "little") -> dict[int, int]:
    out = {}
    for addr in [*SITES, OUTSIDE]:
        (out[addr],) = insn.words(text[addr - BASE : addr - BASE + 4], order)
    return out


def test_template_is_the_kernels() -> None:
    """objdump reads each stub as ftrace_init_ool_stub()'s {mflr; bl; mtlr; b}."""
    asm = assemble("ool_checks.s", defsyms=SYMS)
    mnemonics = objdump_mnemonics(asm)
    for i in range(NOOL):
        insn0 = OOL - BASE + OOL_STUB_SIZE * i + 8
        assert [mnemonics[insn0 + 4 * k] for k in range(4)] == ["mflr", "bl", "mtlr", "b"]
    assert mnemonics[0x100] == "b" and mnemonics[0x200] == "nop"
    assert ool_reserved_slots(NOOL) == 6 and OOL + OOL_STUB_SIZE * NOOL <= NORMAL


@pytest.mark.parametrize("order", ["little", "big"])
def test_checks(order: str) -> None:
    text = _asm(order)
    stubs = _stubs(text, order)
    assert [s.kind for s in stubs] == [StubKind.OOL_FTRACE] * NOOL
    tramps = {STUBS, STUBS + 40}
    checks, problems = check_ool_stubs(stubs, tramps=tramps, site_words=_site_words(text, order),
                                       text_ranges=(TEXT, (STUBS, STUBS + 0x200)))
    ool = [OOL + OOL_STUB_SIZE * i for i in range(NOOL)]
    # each stub's site is where its closing b returns, minus 4
    assert [c.site for c in checks] == [*SITES[:6], SITES[6], SITES[6], OUTSIDE]
    assert [c.state for c in checks] == [
        SiteState.ENABLED, SiteState.DISABLED, SiteState.ENABLED, SiteState.ENABLED,
        SiteState.OTHER, SiteState.OTHER, SiteState.DISABLED, SiteState.DISABLED,
        SiteState.OTHER,
    ]
    ops, nop_ops = SYMS["OPS"], SYMS["NOPOPS"]
    assert [c.ftrace_op for c in checks] == [ops, nop_ops, ops, ops, ops, ops, nop_ops,
                                             nop_ops, ops]
    assert sorted((p.code, p.stub) for p in problems) == sorted([
        ("OOL_STUB_TRAMP_MISMATCH", ool[3]),  # bl normal
        ("OOL_SITE_NOT_PATCHED", ool[4]),  # site4: b ool5
        ("OOL_SITE_NOT_PATCHED", ool[5]),  # site5: mflr r0
        ("OOL_SITE_CLAIMED_TWICE", ool[7]),  # site6 again
        ("OOL_STUB_RETURN_MISMATCH", ool[8]),  # returns outside the text
        ("OOL_SITE_NOT_PATCHED", ool[8]),  # ... where the word is 0
    ])
    msg = {(p.code, p.stub): p.message for p in problems}
    assert f"not this module's ftrace trampoline ({STUBS:#x} or {STUBS + 40:#x})" in msg[
        ("OOL_STUB_TRAMP_MISMATCH", ool[3])]
    assert f"insn[1] is bl {NORMAL:#x}" in msg[("OOL_STUB_TRAMP_MISMATCH", ool[3])]
    assert f"holds b {ool[5] + 8:#x}: neither b {ool[4] + 8:#x}" in msg[
        ("OOL_SITE_NOT_PATCHED", ool[4])]
    assert f"also claimed by the stub at {ool[6]:#x}" in msg[("OOL_SITE_CLAIMED_TWICE", ool[7])]
    # every code is registered, as an error
    assert all(CODES[p.code] is Severity.ERROR for p in problems)


def test_site_state() -> None:
    text = _asm()
    stub = _stubs(text)[0]
    words = _site_words(text)
    assert ool_insn0(stub) == OOL + 8
    assert site_state(words[SITES[0]], SITES[0], stub) is SiteState.ENABLED
    assert site_state(words[SITES[1]], SITES[1], stub) is SiteState.DISABLED
    # the same b, seen from another address, does not reach this stub
    assert site_state(words[SITES[0]], SITES[0] + 4, stub) is SiteState.OTHER
    assert site_state(None, SITES[0], stub) is SiteState.UNREADABLE


def test_recorded_sites_decide() -> None:
    """With the ftrace records (rec->arch.ool_stub -> rec->ip) the closing b is checked
    against the record, not against itself."""
    text = _asm()
    stubs = _stubs(text)[:3]
    words = _site_words(text)
    tramps = {STUBS, STUBS + 40}
    good = {ool_insn0(s): site for s, site in zip(stubs, SITES, strict=False)}
    _checks, problems = check_ool_stubs(stubs, tramps=tramps, site_words=words,
                                        recorded_sites=good)
    assert problems == []
    swapped = dict(good)
    swapped[ool_insn0(stubs[1])] = SITES[0]  # the record says stub 1 serves site0
    checks, problems = check_ool_stubs(stubs, tramps=tramps, site_words=words,
                                       recorded_sites=swapped)
    assert checks[1].site == SITES[0] and checks[1].state is SiteState.OTHER  # b ool0, not 1
    assert sorted(p.code for p in problems) == [
        "OOL_SITE_CLAIMED_TWICE", "OOL_SITE_NOT_PATCHED", "OOL_STUB_RETURN_MISMATCH"]


def test_zero_stubs_are_not_checked() -> None:
    """Entries past ool_stub_index are zero: nothing to site or check."""
    empty = list(for_each_ool_stub(bytes(3 * OOL_STUB_SIZE), STUBS, STUBS, 3))
    assert {s.kind for s in empty} == {StubKind.EMPTY}
    assert check_ool_stubs(empty, tramps={STUBS}, site_words={}) == ([], [])


def _target() -> SyntheticTarget:
    text = _asm()
    kernel = KernelInfo(
        release="7.2.0-test", toc=SYMS["KTOC"], toc_source="paca", ftrace_caller=SYMS["FC"],
        ftrace_regs_caller=SYMS["FRC"], text_ranges=((0xC000000000000000, 0xC000000001000000),),
        paca_toc_offset=16,
    )
    mod = ModuleInfo(
        name="oolmod", text_ranges=(TEXT, (STUBS, STUBS + 0x200)), stubs=STUBS,
        toc_section=SYMS["TOC"] - 0x8000, tramp=STUBS, tramp_regs=STUBS + 40,
        ool_stubs=OOL, ool_stub_count=NOOL,
    )
    symbols = [SymbolInfo(f"func{i}", site - 8, 0x80, "oolmod") for i, site in enumerate(SITES)]
    symbols += [
        SymbolInfo("ftrace_caller", SYMS["FC"], 0x80, "vmlinux"),
        SymbolInfo("ftrace_regs_caller", SYMS["FRC"], 0x100, "vmlinux"),
        SymbolInfo("my_ops", SYMS["OPS"], 0x100, "vmlinux"),
        SymbolInfo("ftrace_nop_ops", SYMS["NOPOPS"], 0x100, "vmlinux"),
        SymbolInfo("kmalloc", SYMS["CALLEE"], 0x100, "vmlinux"),
    ]
    # the module's memory up to the end of the text region holding .stubs
    return SyntheticTarget(kernel_info=kernel, regions={BASE: text.ljust(0x10200, b"\0")},
                           module_list=[mod], symbols=symbols)


def test_audit_sites_names_and_findings() -> None:
    """The audit both back ends run: sites symbolized, ftrace_op named, findings raised,
    the site words read in one read of the module text plus one outside it."""
    target = _target()
    report = audit(target, callsites=False, tasks=False)
    (rec,) = report.modules
    assert all(isinstance(s, OolStubRecord) for s in rec.ool_stubs)
    doc = json.loads(render_json(report))
    ools = doc["modules"][0]["ool_stubs"]
    assert [o["site_symbol"] for o in ools[:4]] == ["func0+0x8/0x80", "func1+0x8/0x80",
                                                    "func2+0x8/0x80", "func3+0x8/0x80"]
    assert [o["site"] for o in ools[:2]] == [hex(SITES[0]), hex(SITES[1])]
    assert [o["site_state"] for o in ools] == [
        "enabled", "disabled", "enabled", "enabled", "other", "other", "disabled", "disabled",
        "other"]
    assert [o["ftrace_op_symbol"] for o in ools[:2]] == ["my_ops", "ftrace_nop_ops"]
    assert ools[0]["ftrace_op"] == hex(SYMS["OPS"])
    assert [o["target_symbol"] for o in ools[2:4]] == [None, None]  # stubs have no symbol
    assert ools[2]["target"] == hex(STUBS + 40)
    found = sorted((f["code"], f["address"]) for f in doc["findings"])
    ool = [hex(OOL + OOL_STUB_SIZE * i) for i in range(NOOL)]
    assert found == sorted([
        ("OOL_STUB_TRAMP_MISMATCH", ool[3]), ("OOL_SITE_NOT_PATCHED", ool[4]),
        ("OOL_SITE_NOT_PATCHED", ool[5]), ("OOL_SITE_CLAIMED_TWICE", ool[7]),
        ("OOL_STUB_RETURN_MISMATCH", ool[8]), ("OOL_SITE_NOT_PATCHED", ool[8]),
    ])
    assert report.exit_status == 1
    # one read for .stubs, one for the sites inside the text, one for the site outside it
    site_reads = [r for r in target.reads if r[0] < STUBS]
    assert site_reads == [(SITES[0], SITES[-1] + 4 - SITES[0]), (OUTSIDE, 4)]
    text = render_table(stubs_report(target))
    assert "ool <- func0+0x8/0x80 (enabled)" in text
    assert "ool <- func1+0x8/0x80 (disabled)" in text


def test_audit_unreadable_sites() -> None:
    target = _target()
    # module text before .stubs not in the dump
    target.regions = {STUBS: _asm()[0x10000:].ljust(0x200, b"\0")}
    report = audit(target, callsites=False, tasks=False)
    unreadable = [f for f in report.findings if f.code == "MEMORY_UNREADABLE"]
    assert len(unreadable) == 1 and "8 ftrace site(s)" in unreadable[0].message
    (rec,) = report.modules
    assert {s.site_state for s in rec.ool_stubs if isinstance(s, OolStubRecord)} == {
        "unreadable"}


class LayoutTarget(SyntheticTarget):
    """The synthetic target plus the layout queries of klpinspect.ftrace_view.LayoutSource,
    with a 7.x-style ``struct dyn_ftrace {ip; flags; arch.ool_stub}`` (24 bytes)."""

    OFFSETS = {
        ("struct dyn_ftrace", "ip"): 0, ("struct dyn_ftrace", "flags"): 8,
        ("struct dyn_ftrace", "arch.ool_stub"): 16, ("struct ftrace_page", "next"): 0,
        ("struct ftrace_page", "records"): 8, ("struct ftrace_page", "index"): 16,
    }
    SIZES = {"struct dyn_ftrace": 24, "struct ftrace_page": 24}

    def type_size(self, type_name: str) -> int | None:
        return self.SIZES.get(type_name)

    def member_offset(self, type_name: str, member: str) -> int | None:
        return self.OFFSETS.get((type_name, member))

    def symbol_address(self, name: str) -> int | None:
        return {"ftrace_pages_start": FTRACE_PAGES}.get(name)

    def constant(self, name: str) -> int | None:
        return None


FTRACE_PAGES = 0xC000000003000000  # &ftrace_pages_start, then the page, then the records


def _with_records(ips: list[int]) -> LayoutTarget:
    """The OOL module plus one ftrace page whose record i has ool_stub = stub i's insn[0]."""
    base = _target()
    target = LayoutTarget(kernel_info=base.kernel_info, regions=base.regions,
                          module_list=base.module_list, symbols=base.symbols)
    page, records = FTRACE_PAGES + 8, FTRACE_PAGES + 64
    mem = struct.pack("<Q", page) + struct.pack("<QQII", 0, records, len(ips), 0)
    mem = mem.ljust(64, b"\0")
    for i, ip in enumerate(ips):
        mem += struct.pack("<QQQ", ip, 0, OOL + OOL_STUB_SIZE * i + 8)
    target.regions[FTRACE_PAGES] = mem
    return target


def test_audit_checks_against_ftrace_records() -> None:
    """A back end that reads the ftrace records: rec->arch.ool_stub -> rec->ip decides each
    stub's site; a record naming another site than the stub's closing b is a finding."""
    ips = [*SITES[:6], SITES[6], SITES[6], OUTSIDE]
    wrong = SITES[1] + 0x40  # the record of ool1 names another ip
    ips[1] = wrong
    target = _with_records(ips)
    report = audit(target, callsites=False, tasks=False)
    ool = [OOL + OOL_STUB_SIZE * i for i in range(NOOL)]
    found = sorted((f.code, f.address) for f in report.findings)
    assert found == sorted([
        ("OOL_STUB_RETURN_MISMATCH", ool[1]),  # b returns to site1 + 4, record says wrong
        ("OOL_SITE_NOT_PATCHED", ool[1]),  # the word at wrong is 0
        ("OOL_STUB_TRAMP_MISMATCH", ool[3]), ("OOL_SITE_NOT_PATCHED", ool[4]),
        ("OOL_SITE_NOT_PATCHED", ool[5]), ("OOL_SITE_CLAIMED_TWICE", ool[7]),
        ("OOL_STUB_RETURN_MISMATCH", ool[8]), ("OOL_SITE_NOT_PATCHED", ool[8]),
    ])
    (rec,) = report.modules
    sites = [s.site for s in rec.ool_stubs if isinstance(s, OolStubRecord)]
    assert sites[1] == wrong and sites[0] == SITES[0]
    msg = next(f.message for f in report.findings if f.code == "OOL_STUB_RETURN_MISMATCH"
               and f.address == ool[1])
    assert f"returns to {SITES[1] + 4:#x}, not to the ftrace record's site {wrong:#x} + 4" in msg
    # the records agreeing with every stub: only the faults built into the module remain
    agreeing = audit(_with_records([*SITES[:6], SITES[6], SITES[6], OUTSIDE]), callsites=False,
                     tasks=False)
    assert len(agreeing.findings) == 6


class PackedLayoutTarget(LayoutTarget):
    """LayoutTarget with a ``struct dyn_ftrace`` of 28 bytes (off the 8-byte grid)."""

    SIZES = {"struct dyn_ftrace": 28, "struct ftrace_page": 24}


def test_ool_sites_are_the_records_with_a_stub() -> None:
    """read_ftrace_ool_sites (strided columns) says what the records say: every
    rec->arch.ool_stub -> rec->ip, a zero ool_stub left out, the later record winning."""
    ips = [*SITES[:6], SITES[6], SITES[6], OUTSIDE]
    for cls, rec_size in ((LayoutTarget, 24), (PackedLayoutTarget, 28)):
        base = _with_records(ips)
        target = cls(kernel_info=base.kernel_info, regions=base.regions,
                     module_list=base.module_list, symbols=base.symbols)
        page, records = FTRACE_PAGES + 8, FTRACE_PAGES + 64
        recs = [(ip, 0, OOL + OOL_STUB_SIZE * i + 8) for i, ip in enumerate(ips)]
        recs += [(SITES[0] + 0x100, 0, 0), (SITES[2] + 0x100, 0, recs[3][2])]
        mem = struct.pack("<Q", page) + struct.pack("<QQII", 0, records, len(recs), 0)
        mem = mem.ljust(64, b"\0")
        for ip, flags, ool in recs:
            mem += struct.pack("<QQQ", ip, flags, ool).ljust(rec_size, b"\0")
        target.regions[FTRACE_PAGES] = mem
        want = {r.ool_stub: r.ip for r in read_ftrace_records(target) if r.ool_stub}
        assert len(want) == len(ips) and want[recs[3][2]] == SITES[2] + 0x100
        assert read_ftrace_ool_sites(target) == want
        assert list(read_ftrace_ool_sites(target)) == list(want)


FTRACE_OPS = 0xC000000003100000  # ftrace_ops_list, ftrace_list_end, one ops and its hash


class FtraceLayoutTarget(LayoutTarget):
    """LayoutTarget plus ftrace_ops / ftrace_hash layouts and arbitrary FTRACE_FL_* values
    (the view must use the values the debug info gives, not the kernel's numbers)."""

    OFFSETS = {
        **LayoutTarget.OFFSETS,
        ("struct ftrace_ops", "next"): 0, ("struct ftrace_ops", "func"): 8,
        ("struct ftrace_ops", "flags"): 16, ("struct ftrace_ops", "func_hash"): 24,
        ("struct ftrace_ops_hash", "filter_hash"): 8,
        ("struct ftrace_hash", "size_bits"): 0, ("struct ftrace_hash", "buckets"): 8,
        ("struct ftrace_hash", "count"): 16,
        ("struct ftrace_func_entry", "hlist"): 0, ("struct ftrace_func_entry", "ip"): 16,
    }
    CONSTANTS = {"FTRACE_FL_ENABLED": 1 << 30, "FTRACE_FL_IPMODIFY": 1 << 20}

    def symbol_address(self, name: str) -> int | None:
        return {"ftrace_pages_start": FTRACE_PAGES, "ftrace_ops_list": FTRACE_OPS,
                "ftrace_list_end": FTRACE_OPS + 8}.get(name)

    def constant(self, name: str) -> int | None:
        return self.CONSTANTS.get(name)


def test_ftrace_view_on_ool_sites() -> None:
    """``klpinspect ftrace`` on a 6.13+ layout: an enabled site is ``b`` its OOL stub; the
    ops filter hash decides the owner; IPMODIFY with no livepatch, and a redirect no ops
    asks for, are findings."""
    from klpinspect.ftrace_view import ftrace_report

    base = _with_records([SITES[0], SITES[1], SITES[2]])
    target = FtraceLayoutTarget(kernel_info=base.kernel_info, regions=base.regions,
                                module_list=base.module_list, symbols=base.symbols)
    enabled, ipmodify = (FtraceLayoutTarget.CONSTANTS[f"FTRACE_FL_{n}"]
                         for n in ("ENABLED", "IPMODIFY"))
    records = FTRACE_PAGES + 64
    flags = [enabled | ipmodify | 1, 0, enabled | 1]
    mem = bytearray(target.regions[FTRACE_PAGES])
    for i, f in enumerate(flags):
        struct.pack_into("<Q", mem, records - FTRACE_PAGES + 24 * i + 8, f)
    target.regions[FTRACE_PAGES] = bytes(mem)
    ops, func_hash, filt = FTRACE_OPS + 0x100, FTRACE_OPS + 0x200, FTRACE_OPS + 0x300
    buckets, entry = FTRACE_OPS + 0x400, FTRACE_OPS + 0x500
    ops_mem = bytearray(0x600)
    struct.pack_into("<Q", ops_mem, 0, ops)  # ftrace_ops_list -> ops
    struct.pack_into("<QQQQ", ops_mem, 0x100, FTRACE_OPS + 8, SYMS["FC"], 1, func_hash)
    struct.pack_into("<QQ", ops_mem, 0x200, 0, filt)  # notrace, filter
    struct.pack_into("<QQQ", ops_mem, 0x300, 0, buckets, 1)  # size_bits 0: one bucket
    struct.pack_into("<Q", ops_mem, 0x400, entry)
    struct.pack_into("<QQQ", ops_mem, 0x500, 0, buckets, SITES[0])  # hlist next, pprev, ip
    target.regions[FTRACE_OPS] = bytes(ops_mem)

    report = ftrace_report(target)
    assert report.records == 3
    assert [(r.ip, r.site, r.site_target) for r in report.redirects] == [
        (SITES[0], f"ool {OOL + 8:#x}", OOL + 8),
        (SITES[2], f"ool {OOL + 2 * OOL_STUB_SIZE + 8:#x}", OOL + 2 * OOL_STUB_SIZE + 8),
    ]
    assert report.redirects[0].flags == ["IPMODIFY"] and report.redirects[0].refs == 1
    assert report.redirects[0].ops == [(ops, None, "ftrace_caller")]
    assert report.redirects[1].ops == []
    # ool_stub->ftrace_op as ool_checks.s wrote it (OPS) names the ops each site calls
    assert [r.call_ops for r in report.redirects] == [SYMS["OPS"], SYMS["OPS"]]
    assert sorted((f.code, f.address) for f in report.findings) == [
        ("FTRACE_REDIRECT_NO_OPS", SITES[2]), ("FTRACE_REDIRECT_NO_PATCH", SITES[0])]
    doc = json.loads(render_json(report))
    assert doc["ftrace"]["ops"][0]["filter"] == [hex(SITES[0])]
    assert doc["ftrace"]["redirects"][0]["call_ops"] == hex(SYMS["OPS"])
    assert "2 of 3 ftrace records redirected" in render_table(report)


def test_livepatch_ops_named() -> None:
    """An ftrace_op with no symbol (a livepatch's kmalloc'd klp_ops->fops) takes the name
    the klp_patches walk gives it; the symbol table still wins where it has one."""
    from klpinspect.ool_audit import audit_ool_stubs, livepatch_ops_names

    target = _target()
    assert livepatch_ops_names(target) == {}  # no layout queries: no names, no error
    names = {SYMS["OPS"]: "klp_ops(oolmod:func0)", SYMS["NOPOPS"]: "klp_ops(other)"}
    records, _findings = audit_ool_stubs(
        target, target.kernel(), target.module_list[0], _stubs(_asm()),
        lambda a: ("ftrace_nop_ops", "vmlinux") if a == SYMS["NOPOPS"] else (None, None),
        ops_names=names)
    assert [r.ftrace_op_symbol for r in records[:2]] == ["klp_ops(oolmod:func0)",
                                                         "ftrace_nop_ops"]


def test_ool_codes_are_finding_codes() -> None:
    """Each code of the pure checks becomes the FindingCode of the same name, an error."""
    from klpinspect.ool_audit import _FINDING
    from klpinspect.ppc64.ool import OolCode

    assert {c: f.value for c, f in _FINDING.items()} == {c: c.value for c in OolCode}
    assert all(f.severity is Severity.ERROR for f in _FINDING.values())


# --- mod->arch.ool_stub_index (tests/asm/ool_index.s) ---------------------------

IDX_SYMS = {**{k: SYMS[k] for k in ("BASE", "TOC", "KTOC", "PACATOC", "FC", "FRC", "CALLEE")},
            "OP0": SYMS["OPS"], "OP1": SYMS["NOPOPS"]}
IDX_SITES = [BASE + 0x408, BASE + 0x508]


def _index_target(*, stray: bool = False, stub_count: int | None = None,
                  order: str = "little") -> SyntheticTarget:
    """Five OOL stubs, two handed out (``ool_stub_index`` 2); ``stub_count`` set = 6.18+
    sizing (tramp, tramp_regs, 3 OOL slots, 1 normal), unset = the pre-6.18 sentinel."""
    text = assemble("ool_index.s", byteorder=order, defsyms={**IDX_SYMS, "STRAY": int(stray)}).text
    kernel = KernelInfo(
        release="6.16.0-test", toc=SYMS["KTOC"], toc_source="paca", ftrace_caller=SYMS["FC"],
        ftrace_regs_caller=SYMS["FRC"], text_ranges=((0xC000000000000000, 0xC000000001000000),),
        paca_toc_offset=16, byteorder=order,
    )
    mod = ModuleInfo(
        name="idxmod", text_ranges=(TEXT, (STUBS, STUBS + 0x200)), stubs=STUBS,
        toc_section=SYMS["TOC"] - 0x8000, tramp=STUBS, tramp_regs=STUBS + 40,
        ool_stubs=OOL, ool_stub_count=5, ool_stub_index=2, stub_count=stub_count,
    )
    symbols = [SymbolInfo(f"func{i}", site - 8, 0x80, "idxmod") for i, site in enumerate(IDX_SITES)]
    symbols += [SymbolInfo("kmalloc", SYMS["CALLEE"], 0x100, "vmlinux"),
                SymbolInfo("ftrace_caller", SYMS["FC"], 0x80, "vmlinux"),
                SymbolInfo("ftrace_regs_caller", SYMS["FRC"], 0x100, "vmlinux")]
    return SyntheticTarget(kernel_info=kernel, regions={BASE: text.ljust(0x10200, b"\0")},
                           module_list=[mod], symbols=symbols)


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("stub_count", [None, 6], ids=["sentinel", "stub_count"])
def test_unused_tail_past_ool_stub_index(stub_count: int | None, order: str) -> None:
    """Stubs past ool_stub_index holding zeros or 6.13-6.17 reserve marks are
    `empty`, no finding; both .stubs sizing rules find the normal stub after the area."""
    target = _index_target(stub_count=stub_count, order=order)
    report = audit(target, callsites=False, tasks=False)
    assert [f.code for f in report.findings] == []
    (rec,) = report.modules
    assert [s.kind for s in rec.ool_stubs] == ["ool-ftrace"] * 2 + ["empty"] * 3
    # slots 0, 1 (tramps) and 5 (the normal stub); 2..4 are the OOL area
    assert [(s.index, s.kind) for s in rec.stubs] == [(0, "ftrace"), (1, "ftrace"),
                                                     (5, "normal")]
    assert [s.site_state for s in rec.ool_stubs[:2] if isinstance(s, OolStubRecord)] == [
        "enabled", "disabled"]


def test_reserve_marks_without_index_are_empty() -> None:
    """The marks alone say 'never written', whatever the index: not STUB_UNKNOWN."""
    text = assemble("ool_index.s", defsyms={**IDX_SYMS, "STRAY": 0}).text
    kinds = [s.kind for s in for_each_ool_stub(text[0x10000:], STUBS, OOL, 5)]
    assert kinds == [StubKind.OOL_FTRACE] * 2 + [StubKind.EMPTY] * 3
    # a mark not at a slot's funcdata is data, not a mark
    moved = bytearray(text[0x10000:])
    moved[OOL - STUBS + 2 * OOL_STUB_SIZE : OOL - STUBS + 2 * OOL_STUB_SIZE + 4] = (
        insn.NOP.to_bytes(4, "little"))
    kinds = [s.kind for s in for_each_ool_stub(bytes(moved), STUBS, OOL, 5)]
    assert kinds[2] is StubKind.UNKNOWN


@pytest.mark.parametrize("stub_count", [None, 6], ids=["sentinel", "stub_count"])
def test_stray_stub_past_ool_stub_index(stub_count: int | None) -> None:
    """A normal stub written over unused OOL stubs (the 6.13 bug f6b4df37ebfe fixed):
    OOL_STUB_PAST_INDEX (a warning) for each stub it covers, never STUB_UNKNOWN."""
    target = _index_target(stray=True, stub_count=stub_count)
    report = audit(target, callsites=False, tasks=False)
    found = sorted((f.code, f.address) for f in report.findings)
    assert found == [("OOL_STUB_PAST_INDEX", OOL + 3 * OOL_STUB_SIZE),
                     ("OOL_STUB_PAST_INDEX", OOL + 4 * OOL_STUB_SIZE)]
    assert CODES["OOL_STUB_PAST_INDEX"] is Severity.WARNING
    assert "stub 3 is past ool_stub_index 2" in report.findings[0].message
    assert report.exit_status == 0  # a warning
    (rec,) = report.modules
    assert [s.kind for s in rec.ool_stubs][2] == "empty"


def test_used_only_index_changes_nothing() -> None:
    """Every stub handed out (ool_stub_index == ool_stub_count): the same findings as
    without the member."""
    target = _target()
    before = sorted((f.code, f.address) for f in audit(target, callsites=False,
                                                         tasks=False).findings)
    target = _target()
    (mod,) = target.module_list
    target.module_list = [dataclasses.replace(mod, ool_stub_index=NOOL)]
    after = sorted((f.code, f.address) for f in audit(target, callsites=False,
                                                        tasks=False).findings)
    assert after == before and "OOL_STUB_PAST_INDEX" not in {c for c, _ in after}


def test_make_module_info_reads_ool_stub_index() -> None:
    """Both back ends build ModuleInfo through make_module_info: ool_stub_index is read
    where mod->arch has it (feature detection), None where it does not."""
    arch = {"ool_stubs": OOL, "ool_stub_count": 5, "ool_stub_index": 2, "stub_count": 6}

    def info(read: Callable[[str], int | None]) -> ModuleInfo:
        return make_module_info(name="m", text_ranges=(), sections={".stubs": STUBS},
                                section_sizes={}, arch=read, livepatch=False, address=None)

    mod = info(arch.get)
    assert (mod.ool_stub_count, mod.ool_stub_index, mod.stub_count) == (5, 2, 6)
    assert info(lambda _member: None).ool_stub_index is None


def test_empty_stub_below_ool_stub_index() -> None:
    """ool_stub_index 3 with stub 2 never written (ftrace_init_ool_stub() increments the
    index first, then fails): STUB_UNKNOWN naming the cause; stubs 3, 4 stay unused."""
    target = _index_target()
    (mod,) = target.module_list
    target.module_list = [dataclasses.replace(mod, ool_stub_index=3)]
    report = audit(target, callsites=False, tasks=False)
    assert [(f.code, f.address) for f in report.findings] == [
        ("STUB_UNKNOWN", OOL + 2 * OOL_STUB_SIZE)]
    assert "below ool_stub_index 3 but was never written" in report.findings[0].message


@pytest.mark.parametrize("order", ["little", "big"])
def test_read_site_words_is_words_at_each_site(order: str) -> None:
    """One read a text range: aligned sites gathered from the span's words, a misaligned
    set word by word, sites outside the range read alone or unreadable; each word is
    insn.words of its 4 bytes."""
    text = _asm(order)
    target = SyntheticTarget(kernel_info=_target().kernel_info, regions={BASE: text})
    every = [BASE + off for off in range(0, 0x1000, 4)]
    aligned = [*SITES, BASE + 0x104, BASE + 0xFFC]
    for sites in (aligned, [*aligned, BASE + 0x102], every[::3], [BASE + 0x2000]):
        got, bad = read_site_words(target, sites, [TEXT], order)
        assert bad == []
        assert got == {s: insn.words(text[s - BASE : s - BASE + 4], order)[0]
                       for s in sites}
    got, bad = read_site_words(target, [SITES[0], BASE + 0x20000], [TEXT], order)
    assert list(got) == [SITES[0]] and bad == [BASE + 0x20000]
