"""Run klpinspect's checks over any :class:`~klpinspect.target.Target`.

For every module: read ``.stubs`` in one read, decode the used slots, resolve
the module TOC, check that every r2-relative stub implies it, that
``arch.tramp``/``tramp_regs`` are kernel-TOC (paca) stubs reaching
``ftrace_caller``/``ftrace_regs_caller``, and that stub targets lie in loaded
text.  Optionally the call sites into the stubs (:mod:`klpinspect.callsite_audit`)
and every task's livepatch stack (:mod:`klpinspect.livepatch`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from . import forked
from .checks.symbols import Symbolizer
from .errors import KlpError, MemoryReadError
from .gcpause import without_cyclic_gc
from .ppc64.stubs import (
    Stub,
    StubKind,
    decode_stub,
    for_each_ool_stub,
    for_each_stub,
    ool_slots,
    sentinel_slot,
    stub_size,
)
from .ppc64.toc import ModuleToc, TocSource, module_toc, resolve_module_toc
from .report import (
    Finding,
    FindingCode,
    ModuleRecord,
    Report,
    StubRecord,
    TaskRecord,
    damage_findings,
    new_report,
)
from .target import KernelInfo, ModuleInfo, Target

if TYPE_CHECKING:
    # Imported where used: klp-bt and klp-lpstack take only tocs_for() from here,
    # and the OOL checks (and the ftrace view under them) run on 6.13+ kernels only.
    from .checks.stub_rules import KernelTraits
    from .ool_audit import OolRead

__all__ = (
    "ModuleAudit",
    "audit",
    "audit_module",
    "check_module",
    "decode_module",
    "module_toc_map",
    "new_report",
    "select_modules",
    "stubs_report",
    "toc_report",
    "toc_rule_plain",
    "tocs_for",
)

# What klp-toc reports of the audit: the stubs against the module TOC, the tramps against r2.
_TOC_CODES = frozenset({
    FindingCode.STUB_TOC_MISMATCH,
    FindingCode.MEMORY_UNREADABLE,
    FindingCode.TRAMP_NOT_FTRACE_STUB,
    FindingCode.TRAMP_TARGET_MISMATCH,
})

# Without a known section size, read this much of .stubs at first and grow it
# until the sentinel (zero funcdata) shows; most modules need one read.
_FIRST_READ = 8 * 1024
_MAX_STUBS_BYTES = 4 * 1024 * 1024


@dataclass
class ModuleAudit:
    """What :func:`audit_module` learned about one module."""

    module: ModuleInfo
    record: ModuleRecord
    stubs: list[Stub] = field(default_factory=list)
    toc: ModuleToc = field(default_factory=lambda: ModuleToc(None, TocSource.NONE))
    findings: list[Finding] = field(default_factory=list)
    reads: int = 0
    # (arch.tramp / tramp_regs, the function it must reach, its address, the decoded
    # stub or the MEMORY_UNREADABLE finding of its read), for check_module
    tramps: list[tuple[str, str, int | None, Stub | Finding]] = field(default_factory=list)
    # 6.13+ OOL stubs with their sites' words, for check_module
    ool: OolRead | None = None


def _read_stubs(target: Target, mod: ModuleInfo, slot: int) -> tuple[bytes, int]:
    """The bytes of ``.stubs``: one read when the size is known, else grow to the sentinel."""
    assert mod.stubs is not None
    if mod.stubs_size:
        return target.read(mod.stubs, mod.stubs_size), 1
    if mod.stub_count is not None:
        return target.read(mod.stubs, max(mod.stub_count, 1) * slot), 1
    ool = (mod.ool_stubs, mod.ool_stub_count) if mod.ool_stubs and mod.ool_stub_count else None
    skip = ool_slots(mod.stubs, ool, slot)
    # Bound the read by the end of the text region holding .stubs, when known.
    limit = _MAX_STUBS_BYTES
    for start, end in mod.text_ranges:
        if start <= mod.stubs < end:
            limit = end - mod.stubs
            break
    # Most modules use a few dozen slots: a small first read keeps live targets
    # (QMP, gdbstub) cheap; if the sentinel is not in it, read the rest of the
    # text region (.stubs is laid out at its end) in a second read.
    size = min(_FIRST_READ, limit)
    data = b""
    reads = 0
    while True:
        try:
            data += target.read(mod.stubs + len(data), size - len(data))
            reads += 1
        except MemoryReadError:
            # The tail of a guess may be unmapped: fall back to what reads.
            if size - len(data) <= slot:
                if data:
                    return data, reads
                raise
            size = len(data) + max(slot, ((size - len(data)) // 2) // slot * slot)
            limit = size
            continue
        if sentinel_slot(data, slot, skip) is not None or size >= limit:
            return data, reads
        size = limit if limit < _MAX_STUBS_BYTES else min(size * 4, limit)




class _TextRanges:
    """Sorted, merged ``[start, end)`` ranges with a bisect look-up: the dangling
    check runs once per slot, so it must not scan every module's ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(r for r in ranges if r[1] > r[0]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [r[0] for r in merged]
        self.ends = [r[1] for r in merged]
        self._seen: dict[int, bool] = {}  # stub targets repeat across modules

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __contains__(self, address: int) -> bool:
        try:
            return self._seen[address]
        except KeyError:
            i = bisect_right(self.starts, address) - 1
            hit = self._seen[address] = i >= 0 and address < self.ends[i]
            return hit


_new = object.__new__
_ADDRESS = attrgetter("address")


class _RecordBuilder:
    """Slot bag with :class:`StubRecord`'s layout (see ``stubs._StubBuilder``):
    one record per slot, several times cheaper than the frozen ``__init__``."""

    __slots__ = StubRecord.__slots__


def _records(
    stubs: Sequence[Stub], symbols: Symbolizer, base: int | None = None, slot: int = 0
) -> list[StubRecord]:
    """A record per stub, its target named; ``index`` the slot number in ``.stubs``
    from ``base`` (the section's address), or ``None`` without one.  Millions of
    slots pass here: the loop is written out."""
    out: list[StubRecord] = []
    append = out.append
    builder = _RecordBuilder
    names = symbols.names([s.target for s in stubs])
    for stub, (symbol, owner) in zip(stubs, names, strict=True):
        rec: Any = _new(builder)
        rec.stub = stub
        rec.index = None if base is None else (stub.address - base) // slot
        rec.target_symbol = symbol
        rec.target_owner = owner
        rec.__class__ = StubRecord
        append(rec)
    return out


def audit_module(
    target: Target,
    kernel: KernelInfo,
    mod: ModuleInfo,
    *,
    loaded_text: Iterable[tuple[int, int]] | _TextRanges = (),
    symbols: Symbolizer | None = None,
    traits: KernelTraits | None = None,
    ool_sites: Mapping[int, int] | None = None,
    ops_names: Mapping[int, str] | None = None,
) -> ModuleAudit:
    """Decode and check one module's stubs, TOC and ftrace trampolines.

    :param mod: the module (from ``struct module *``)
    :param loaded_text: every ``[start, end)`` of loaded text (kernel and modules),
        for ``STUB_TARGET_DANGLING``; empty to skip that check
    :param traits: the kernel-wide traits; ``None`` to decide them from this module's
        own slots (:func:`audit` decides them once, from every audited module)
    :param ool_sites: 6.13+ OOL stubs: ``&insn[0]`` -> ``rec->ip`` from the ftrace
        records (:func:`~klpinspect.ool_audit.recorded_ool_sites`), if read
    :param ops_names: ``ftrace_ops`` address -> name for ops without a symbol
    """
    symbols = symbols or Symbolizer(target)
    result = decode_module(target, kernel, mod, symbols, ool_sites=ool_sites,
                           ops_names=ops_names, ool_records=False)
    if traits is None:
        from .checks.stub_rules import KernelTraits

        traits = KernelTraits(
            writes_stub_magic=any(s.magic_ok for s in result.stubs),
            paca_tramps=any(s.kind.uses_kernel_toc for s in result.stubs),
        )
    check_module(result, kernel, traits, loaded_text, symbols)
    return result


def _decode_stubs(
    target: Target, kernel: KernelInfo, mod: ModuleInfo, slot: int
) -> tuple[bytes, list[Stub], int, Finding | None]:
    """``mod``'s ``.stubs`` read and its slots decoded (no names): the bytes, the
    stubs, the reads it took and the ``MEMORY_UNREADABLE`` finding of a failed read."""
    assert mod.stubs is not None
    data, reads, unreadable = b"", 0, None
    try:
        data, reads = _read_stubs(target, mod, slot)
    except MemoryReadError as e:
        unreadable = Finding(FindingCode.MEMORY_UNREADABLE, f".stubs unreadable: {e}",
                             module=mod.name, address=mod.stubs)
    stubs = list(
        for_each_stub(
            data,
            mod.stubs,
            count=mod.stub_count,
            ool=(mod.ool_stubs, mod.ool_stub_count)
            if mod.ool_stubs is not None and mod.ool_stub_count else None,
            func_desc_size=kernel.func_desc_size if kernel.abi == 1 else None,
            kernel_toc=kernel.toc,
            kernelbase=kernel.kernelbase,
            byteorder=kernel.byteorder,
            abi=kernel.abi,
        )
    )
    return data, stubs, reads, unreadable


def decode_module(
    target: Target,
    kernel: KernelInfo,
    mod: ModuleInfo,
    symbols: Symbolizer,
    *,
    ool_sites: Mapping[int, int] | None = None,
    ops_names: Mapping[int, str] | None = None,
    ool_records: bool = True,
) -> ModuleAudit:
    """Read and decode one module's ``.stubs``, OOL stubs and trampolines; resolve its TOC.

    Only what reading finds is a finding here (``MEMORY_UNREADABLE``, an OOL stub of
    no known layout); the rules run in :func:`check_module`.

    :param ool_records: give the record its OOL stubs (targets named); ``False`` when
        :func:`check_module` follows, which replaces them with sited records anyway
    """
    rec = ModuleRecord(name=mod.name, stubs_section=mod.stubs)
    result = ModuleAudit(module=mod, record=rec)
    order = kernel.byteorder
    slot = stub_size(kernel.abi, kernel.func_desc_size)
    if mod.stubs is not None:
        data, result.stubs, result.reads, unreadable = _decode_stubs(target, kernel, mod, slot)
        if unreadable is not None:
            result.findings.append(unreadable)
        ool = None
        if mod.ool_stubs is not None and mod.ool_stub_count:
            ool = (mod.ool_stubs, mod.ool_stub_count)
        # each slot's target is named below: a back end that names a few addresses
        # one way and many another (DrgnTarget) hears how many come
        expect = getattr(target, "expect_symbols", None)
        if expect is not None:
            expect(len(result.stubs) + (ool[1] if ool is not None else 0))
        if ool is not None:
            # 6.13+ out-of-line ftrace stubs: decoded and reported beside the slots;
            # a normal stub written over this area (the bug f6b4df37ebfe "powerpc64/
            # modules: correctly iterate over stubs in setup_ftrace_ool_stubs", v6.18,
            # fixed) shows up as OOL_STUB_PAST_INDEX (or STUB_UNKNOWN below the index).
            ools = list(for_each_ool_stub(data, mod.stubs, ool[0], ool[1], byteorder=order,
                                          slot_size=slot))
            # each one's site word read here, checked in check_module (klpinspect.ool_audit)
            from .ool_audit import read_ool_sites

            result.ool, read_findings = read_ool_sites(target, kernel, mod, ools,
                                                       recorded_sites=ool_sites,
                                                       ops_names=ops_names)
            if ool_records:
                rec.ool_stubs = _records(ools, symbols)
            result.findings.extend(read_findings)
            # eec37961a56a: only the first mod->arch.ool_stub_index stubs are handed out;
            # the rest are unused (EMPTY) and anything else there is OOL_STUB_PAST_INDEX
            used = len(ools) if mod.ool_stub_index is None else mod.ool_stub_index
            for i, o in enumerate(ools):
                if i >= used:
                    if o.kind is not StubKind.EMPTY:
                        result.findings.append(
                            Finding(FindingCode.OOL_STUB_PAST_INDEX, f"out-of-line ftrace "
                                    f"stub {i} is past ool_stub_index {used} but not empty: "
                                    + " ".join(f"{w:08x}" for w in o.words),
                                    module=mod.name, address=o.address)
                        )
                elif o.kind is StubKind.EMPTY and mod.ool_stub_index is not None:
                    # handed out (ool_stub_index++ comes first) but never written:
                    # ftrace_init_ool_stub() failed there (-EINVAL, ftrace_bug()) or,
                    # live, is writing it right now
                    result.findings.append(
                        Finding(FindingCode.STUB_UNKNOWN, f"out-of-line ftrace stub {i} is "
                                f"below ool_stub_index {used} but was never written "
                                "(ftrace_init_ool_stub() failed for it?)",
                                module=mod.name, address=o.address)
                    )
                elif o.kind is not StubKind.OOL_FTRACE:
                    result.findings.append(
                        Finding(FindingCode.STUB_UNKNOWN, "out-of-line ftrace stub matches no "
                                "known layout: " + " ".join(f"{w:08x}" for w in o.words),
                                module=mod.name, address=o.address)
                    )
    stubs = result.stubs
    result.toc = resolve_module_toc(mod.toc_section, mod.stubs, stubs, arch_toc=mod.arch_toc)
    rec.toc, rec.toc_source = result.toc.toc, result.toc.source
    # index = slot number in .stubs (the OOL area's slots are not stubs but count)
    base = mod.stubs or 0
    rec.stubs = _records(stubs, symbols, base, slot)

    for attr, want_name, want in (
        ("tramp", "ftrace_caller", kernel.ftrace_caller),
        ("tramp_regs", "ftrace_regs_caller", kernel.ftrace_regs_caller),
    ):
        addr = getattr(mod, attr)
        if not addr:
            continue
        # the slots ascend: bisection finds the tramp's, if it is one of them
        index = bisect_left(stubs, addr, key=_ADDRESS)
        if index < len(stubs) and stubs[index].address == addr:
            tstub, trec = stubs[index], rec.stubs[index]
        else:
            try:
                raw = target.read(addr, slot)
                result.reads += 1
            except MemoryReadError as e:
                result.tramps.append(
                    (attr, want_name, want, Finding(FindingCode.MEMORY_UNREADABLE,
                                                    f"arch.{attr} unreadable: {e}",
                                                    module=mod.name, address=addr))
                )
                continue
            tstub = decode_stub(raw, addr, kernel_toc=kernel.toc, kernelbase=kernel.kernelbase,
                                byteorder=order, abi=kernel.abi)
            trec = _records((tstub,), symbols)[0]
        setattr(rec, attr, trec)
        result.tramps.append((attr, want_name, want, tstub))
    return result


def check_module(
    result: ModuleAudit,
    kernel: KernelInfo,
    traits: KernelTraits,
    loaded_text: Iterable[tuple[int, int]] | _TextRanges,
    symbols: Symbolizer,
) -> None:
    """Run the finding rules (:mod:`klpinspect.checks.stub_rules`) over a decoded module."""
    from .checks.stub_rules import stub_findings, tramp_findings

    loaded = loaded_text if isinstance(loaded_text, _TextRanges) else _TextRanges(loaded_text)
    mod = result.module
    if result.ool is not None:
        # 6.13+ OOL stubs: their records gain site, site state and ftrace_op
        from .ool_audit import check_ool

        ool_records, ool_findings = check_ool(kernel, mod, result.ool, symbols.name,
                                              symbols.prefetch)
        result.record.ool_stubs = list(ool_records)
        result.findings.extend(ool_findings)
    result.findings.extend(
        stub_findings(
            mod, result.stubs, kernel=kernel, traits=traits, mod_toc=result.record.toc,
            toc_source=result.record.toc_source, loaded=loaded if loaded else None,
        )
    )
    for attr, want_name, want, tstub in result.tramps:
        if isinstance(tstub, Finding):
            result.findings.append(tstub)
            continue
        result.findings.extend(
            tramp_findings(mod, attr, tstub, want_name=want_name, want=want, traits=traits,
                           symbols=symbols)
        )


def select_modules(mods: Sequence[ModuleInfo], names: Sequence[str] | None) -> list[ModuleInfo]:
    """``mods`` restricted to ``names`` (every name must exist), in the order asked.

    :raises KlpError: naming the first unknown module
    """
    if not names:
        return list(mods)
    by_name = {m.name: m for m in mods}
    out: list[ModuleInfo] = []
    for name in names:
        mod = by_name.get(name) or by_name.get(name.replace("-", "_"))
        if mod is None:
            raise KlpError(f"no module named '{name}'")
        if mod not in out:  # "rk_lib rk-lib" names one module
            out.append(mod)
    return out


def _loaded_text(kernel: KernelInfo, mods: Iterable[ModuleInfo]) -> _TextRanges:
    ranges = list(kernel.text_ranges)
    if not ranges:  # without the kernel's text the check would flag every kernel target
        return _TextRanges(())
    for m in mods:
        ranges.extend(m.text_ranges)
    return _TextRanges(ranges)


def module_toc_map(
    kernel: KernelInfo,
    audits: Iterable[ModuleAudit],
    others: Iterable[ModuleInfo] = (),
    *,
    plain: bool | None = None,
) -> dict[int, str]:
    """TOC value -> owner (``"vmlinux"`` or a module name): the one TOC map of the
    audit, the livepatch walk and ``klp-bt``.

    :param others: modules not audited (a command limited to some modules, or
        ``klp-bt``, which decodes no stubs): their TOC from the section address
        alone, with the kernel's ``my_r2()`` rule
    :param plain: that rule (<= 4.9: no round-down), ``None`` to take it from ``audits``
    """
    return _toc_map(kernel, [(a.module, a.toc) for a in audits], others, plain)


def _toc_map(
    kernel: KernelInfo,
    audited: Sequence[tuple[ModuleInfo, ModuleToc]],
    others: Iterable[ModuleInfo],
    plain: bool | None,
) -> dict[int, str]:
    """:func:`module_toc_map` of ``(module, its resolved TOC)`` pairs."""
    tocs: dict[int, str] = {}
    if plain is None:
        plain = any(toc.rule == "plain" for _, toc in audited)
    done = {mod.name for mod, _ in audited}
    for mod in others:
        if mod.name in done:
            continue
        if mod.toc_section is None and kernel.toc is None:
            continue  # CONFIG_PPC_KERNEL_PCREL: modules have no TOC either
        section = mod.toc_section if mod.toc_section is not None else mod.stubs
        if mod.arch_toc:
            tocs[mod.arch_toc] = mod.name
        elif section is not None:
            tocs[module_toc(section, rounded=not plain)] = mod.name
    for mod, toc in audited:
        if toc.toc is not None:
            tocs[toc.toc] = mod.name
    if kernel.toc is not None:
        tocs[kernel.toc] = "vmlinux"
    return tocs


def toc_rule_plain(target: Target, kernel: KernelInfo, mods: Iterable[ModuleInfo]) -> bool:
    """Whether this kernel's ``my_r2()`` adds 0x8000 without rounding down (<= 4.9).

    Decided once, kernel-wide, from the first module whose TOC section is not
    256-byte aligned (elsewhere both rules agree) and whose normal stubs imply
    one of the two values: one ``.stubs`` read, usually none at all.
    """
    slot = stub_size(kernel.abi, kernel.func_desc_size)
    for mod in mods:
        section = mod.toc_section if mod.toc_section is not None else mod.stubs
        if mod.arch_toc or section is None or mod.stubs is None or not section & 0xFF:
            continue
        try:
            data, _reads = _read_stubs(target, mod, slot)
        except MemoryReadError:
            continue
        stubs = for_each_stub(
            data, mod.stubs, count=mod.stub_count, kernel_toc=kernel.toc,
            kernelbase=kernel.kernelbase, byteorder=kernel.byteorder, abi=kernel.abi,
            func_desc_size=kernel.func_desc_size if kernel.abi == 1 else None,
            ool=(mod.ool_stubs, mod.ool_stub_count)
            if mod.ool_stubs is not None and mod.ool_stub_count else None,
        )
        implied = {s.implied_toc for s in stubs}
        if module_toc(section, rounded=False) in implied:
            return True
        if module_toc(section, rounded=True) in implied:
            return False
    return False


def _audit_modules(
    target: Target,
    kernel: KernelInfo,
    names: Sequence[str] | None,
    symbols: Symbolizer | None = None,
    everything: list[ModuleInfo] | None = None,
) -> tuple[list[ModuleAudit], list[ModuleInfo]]:
    if everything is None:
        everything = list(target.modules())
    chosen = select_modules(everything, names)
    loaded = _loaded_text(kernel, everything)
    symbols = symbols or Symbolizer(target)
    # 6.13+ OOL stubs: their sites from the ftrace records, when the back end reads them
    ool_sites, ops_names = None, None
    if any(m.ool_stub_count for m in chosen):
        from .ool_audit import livepatch_ops_names, recorded_ool_sites

        ool_sites, ops_names = recorded_ool_sites(target), livepatch_ops_names(target)
    audits = [
        decode_module(target, kernel, m, symbols, ool_sites=ool_sites, ops_names=ops_names,
                      ool_records=False)
        for m in chosen
    ]
    # the kernel-wide traits, once, from every audited module, before any is checked
    from .checks.stub_rules import KernelTraits

    traits = KernelTraits(
        writes_stub_magic=any(s.magic_ok for a in audits for s in a.stubs),
        paca_tramps=_paca_tramp_kernel(target, kernel, audits, everything),
    )
    for a in audits:
        check_module(a, kernel, traits, loaded, symbols)
    return audits, everything


def _paca_tramp_kernel(
    target: Target, kernel: KernelInfo, audits: list[ModuleAudit], everything: list[ModuleInfo]
) -> bool:
    """Whether this kernel's ftrace trampolines load the kernel TOC from the paca.

    Feature detection instead of a config or version test: mprofile-kernel kernels
    (336a7b5dd80a "powerpc/module: Create a special stub for ftrace_caller()",
    v4.6) make ``ftrace_caller``/``_mcount`` stubs that load the kernel TOC; -pg
    kernels make none.  Decided from the audited modules' stubs,
    else from the other modules' ``arch.tramp`` slots (one read each, rarely needed).
    """
    if any(s.kind.uses_kernel_toc for a in audits for s in a.stubs):
        return True
    chosen = {id(a.module) for a in audits}
    slot = stub_size(kernel.abi, kernel.func_desc_size)
    for mod in everything:
        if id(mod) in chosen or not mod.tramp:
            continue
        try:
            raw = target.read(mod.tramp, slot)
        except MemoryReadError:
            continue
        stub = decode_stub(raw, mod.tramp, byteorder=kernel.byteorder, abi=kernel.abi)
        if stub.kind.uses_kernel_toc:
            return True
    return False


@without_cyclic_gc
def stubs_report(target: Target, names: Sequence[str] | None = None) -> Report:
    """``klp-stubs``: every used slot of the named (or all) modules, decoded."""
    kernel = target.kernel()
    report = new_report(target, kernel, ("stubs", "findings"))
    audits, _ = _audit_modules(target, kernel, names)
    for a in audits:
        report.modules.append(a.record)
        report.extend(a.findings)
    report.extend(damage_findings(target))
    return report


def _callsite_findings(
    target: Target, kernel: KernelInfo, audits: Iterable[ModuleAudit]
) -> list[Finding]:
    return _scan_callsites(target, kernel, (
        (a.module, [s.address for s in a.stubs if s.kind is not StubKind.EMPTY]) for a in audits))


def _scan_callsites(
    target: Target, kernel: KernelInfo, modules: Iterable[tuple[ModuleInfo, list[int]]]
) -> list[Finding]:
    """The call-site findings of each ``(module, its used stub slots)``."""
    from .callsite_audit import audit_module_callsites

    out: list[Finding] = []
    for mod, addrs in modules:
        out.extend(audit_module_callsites(target, mod, addrs, kernel))
    return out


@dataclass
class _ChildPart:
    """What :func:`_audit_child_part` gives back: call-site findings, the tasks'
    records and findings, and the damage the task walk recorded."""

    callsites: list[Finding]
    tasks: tuple[list[TaskRecord], list[Finding]] | None
    damage: list[tuple[int | None, str, FindingCode]]


def _audit_child_part(
    target: Target,
    kernel: KernelInfo,
    chosen: Sequence[ModuleInfo],
    everything: Sequence[ModuleInfo],
    *,
    callsites: bool,
    tasks: bool,
    pids: Sequence[int] | None,
) -> _ChildPart:
    """The audit's call-site scan and task walk without its stub naming (for a
    forked child, :mod:`klpinspect.forked`): each module's stubs read and decoded
    again, for the scan and for the TOCs the livepatch stacks are checked against."""
    slot = stub_size(kernel.abi, kernel.func_desc_size)
    decoded: list[tuple[ModuleInfo, list[Stub]]] = [
        (m, _decode_stubs(target, kernel, m, slot)[1] if m.stubs is not None else [])
        for m in chosen
    ]
    found = _scan_callsites(target, kernel, (
        (m, [s.address for s in stubs if s.kind is not StubKind.EMPTY]) for m, stubs in decoded
    )) if callsites else []
    walked = None
    damage = target.damage
    before = len(damage)
    if tasks:
        from .livepatch import audit_livepatch_stacks

        tocs = [(m, resolve_module_toc(m.toc_section, m.stubs, stubs, arch_toc=m.arch_toc))
                for m, stubs in decoded]
        walked = audit_livepatch_stacks(target, _toc_map(kernel, tocs, everything, None),
                                        pids=pids, symbols=Symbolizer(target))
    codes = getattr(damage, "codes", {})
    return _ChildPart(found, walked, [
        (addr, msg, codes.get((addr, msg), FindingCode.MEMORY_UNREADABLE))
        for addr, msg in list(damage)[before:]
    ])


@without_cyclic_gc
def toc_report(
    target: Target, names: Sequence[str] | None = None, *, callsites: bool = False
) -> Report:
    """``klp-toc``: each module's TOC, where it came from, and the stubs' agreement."""
    kernel = target.kernel()
    report = new_report(target, kernel, ("modules", "findings"))
    audits, _ = _audit_modules(target, kernel, names)
    for a in audits:
        report.modules.append(a.record)
        # the TOC questions: stubs against the module TOC, and tramps against r2
        report.extend(
            f
            for f in a.findings
            if f.code in _TOC_CODES
        )
    if callsites:
        report.extend(_callsite_findings(target, kernel, audits))
    report.extend(damage_findings(target))
    return report


@without_cyclic_gc
def audit(
    target: Target,
    names: Sequence[str] | None = None,
    *,
    callsites: bool = True,
    tasks: bool = True,
    pids: Sequence[int] | None = None,
) -> Report:
    """``klp-audit``: every check over the named (or all) modules and every task."""
    kernel = target.kernel()
    report = new_report(target, kernel, ("modules", "tasks", "findings"))
    symbols = Symbolizer(target)  # one per command: the tasks' addresses too
    everything = list(target.modules())
    child: forked.Pending[_ChildPart] | None = None
    if callsites and forked.can_fork(target):
        # the call-site scan and the task walk need nothing of the stub naming
        # that takes most of the rest: on another core
        chosen = select_modules(everything, names)
        child = forked.start(lambda: _audit_child_part(
            target, kernel, chosen, everything, callsites=True, tasks=tasks, pids=pids),
            target)
    audits, everything = _audit_modules(target, kernel, names, symbols, everything)
    for a in audits:
        report.modules.append(a.record)
        report.extend(a.findings)
    walked = None
    if tasks and child is None:
        from .livepatch import audit_livepatch_stacks

        walked = audit_livepatch_stacks(
            target, module_toc_map(kernel, audits, everything), pids=pids, symbols=symbols
        )
    if child is not None:
        part = child.result()
        report.extend(part.callsites)
        walked = part.tasks if part.tasks is not None else walked
        add: Callable[[int | None, str, FindingCode], None] | None = getattr(
            target.damage, "add", None)
        if add is not None:  # what the child's task walk recorded (layout.Damage)
            for addr, msg, code in part.damage:
                add(addr, msg, code)
    elif callsites:
        report.extend(_callsite_findings(target, kernel, audits))
    if walked is not None:
        report.tasks, task_findings = walked
        report.extend(task_findings)
    report.extend(damage_findings(target))
    return report


class _LazyTocs(Mapping[int, str]):
    """A TOC map computed on first use: ``klp-bt`` of a task with no livepatch
    frames never walks the module list."""

    def __init__(self, compute: Callable[[], Mapping[int, str]]) -> None:
        self._compute = compute
        self._tocs: Mapping[int, str] | None = None

    def _get(self) -> Mapping[int, str]:
        if self._tocs is None:
            self._tocs = self._compute()
        return self._tocs

    def __getitem__(self, key: int) -> str:
        return self._get()[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def tocs_for(target: Target) -> Mapping[int, str]:
    """TOC value -> owner for every module of ``target`` (for ``klp-lpstack`` and
    ``klp-bt``): from each module's ``.toc`` / ``arch.toc`` address, not its stubs;
    computed (the module list walked) on first use."""

    def compute() -> Mapping[int, str]:
        kernel = target.kernel()
        everything = list(target.modules())
        plain = toc_rule_plain(target, kernel, everything)
        return module_toc_map(kernel, (), everything, plain=plain)

    return _LazyTocs(compute)
