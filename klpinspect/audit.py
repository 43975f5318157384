"""Run klpinspect's checks over any :class:`~klpinspect.target.Target`.

For every module: read ``.stubs`` in one read, decode the used slots, resolve
the module TOC, check that every r2-relative stub implies it, that
``arch.tramp``/``tramp_regs`` are kernel-TOC (paca) stubs reaching
``ftrace_caller``/``ftrace_regs_caller``, and that stub targets lie in loaded
text.  Optionally the call sites into the stubs (:mod:`klpinspect.callsite_audit`)
and every task's livepatch stack (:mod:`klpinspect.livepatch`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import KlpError, MemoryReadError
from .ppc64.stubs import (
    Stub,
    StubKind,
    decode_stub,
    for_each_ool_stub,
    for_each_stub,
    ool_reserved_slots,
    stub_size,
)
from .ppc64.toc import ModuleToc, module_toc, resolve_module_toc
from .report import (
    Finding,
    ModuleRecord,
    Report,
    Severity,
    StubRecord,
    hexaddr,
    without_cyclic_gc,
)
from .target import KernelInfo, ModuleInfo, SymbolInfo, Target, try_symbolize

__all__ = (
    "ModuleAudit",
    "audit",
    "audit_module",
    "module_toc_map",
    "new_report",
    "select_modules",
    "stubs_report",
    "toc_report",
    "tocs_for",
)

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
    toc: ModuleToc = field(default_factory=lambda: ModuleToc(None, "none"))
    findings: list[Finding] = field(default_factory=list)
    reads: int = 0
    # TRAMP_NOT_FTRACE_STUB for r2-relative tramps: an error only on kernels whose
    # ftrace trampolines load the kernel TOC (mprofile-kernel, 4.6+); -pg kernels
    # (ELFv1, or ELFv2 without -mprofile-kernel) build them as normal stubs by design.
    r2_tramp_findings: list[Finding] = field(default_factory=list)


class _Symbols:
    """Memoized ``target.symbolize``: many stubs share a target."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._cache: dict[int, SymbolInfo | None] = {}
        self._names: dict[int, tuple[str | None, str | None]] = {}

    def name(self, address: int) -> tuple[str | None, str | None]:
        """``(symbol, owner)`` for a stub target: the bare name at a symbol's start,
        ``name+0xoff/0xsize`` inside one."""
        try:
            return self._names[address]
        except KeyError:
            pass
        sym = self(address)
        result: tuple[str | None, str | None] = (None, None)
        if sym is not None:
            text = sym.name if sym.address == address else sym.format(address)
            if sym.owner != "vmlinux":
                text = text.removesuffix(f" [{sym.owner}]")
            result = (text, sym.owner)
        self._names[address] = result
        return result

    def __call__(self, address: int) -> SymbolInfo | None:
        try:
            return self._cache[address]
        except KeyError:
            pass
        sym = self._cache[address] = try_symbolize(self._target, address)
        return sym


def new_report(target: Target, kernel: KernelInfo, sections: tuple[str, ...]) -> Report:
    """A report with the ``target`` and ``kernel`` headers filled in."""
    return Report(
        target={"kind": target.kind, "release": kernel.release, "arch": kernel.arch},
        kernel={
            "toc": hexaddr(kernel.toc),
            "toc_source": kernel.toc_source,
            "ftrace_caller": hexaddr(kernel.ftrace_caller),
            "ftrace_regs_caller": hexaddr(kernel.ftrace_regs_caller),
        },
        sections=sections,
    )


def _read_stubs(target: Target, mod: ModuleInfo, slot: int) -> tuple[bytes, int]:
    """The bytes of ``.stubs``: one read when the size is known, else grow to the sentinel."""
    assert mod.stubs is not None
    if mod.stubs_size:
        return target.read(mod.stubs, mod.stubs_size), 1
    if mod.stub_count is not None:
        return target.read(mod.stubs, max(mod.stub_count, 1) * slot), 1
    ool_lo = ool_hi = -1
    if mod.ool_stubs and mod.ool_stub_count:
        ool_lo = (mod.ool_stubs - mod.stubs) // slot * slot
        ool_hi = ool_lo + ool_reserved_slots(mod.ool_stub_count, slot) * slot
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
        full = len(data) // slot * slot
        for off in range(0, full, slot):
            # OOL ftrace stubs (6.13+) fill their reserved slots with other data,
            # whose "funcdata" word may be 0: no sentinel there.
            if not ool_lo <= off < ool_hi and not any(data[off + 32 : off + 40]):
                return data, reads
        if size >= limit:
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


class _RecordBuilder:
    """Slot bag with :class:`StubRecord`'s layout (see ``stubs._StubBuilder``):
    one record per slot, several times cheaper than the frozen ``__init__``."""

    __slots__ = StubRecord.__slots__


def _record(stub: Stub, index: int | None, symbols: _Symbols) -> StubRecord:
    name, owner = (None, None) if stub.target is None else symbols.name(stub.target)
    rec: Any = _new(_RecordBuilder)
    rec.stub = stub
    rec.index = index
    rec.target_symbol = name
    rec.target_owner = owner
    rec.__class__ = StubRecord
    return rec  # type: ignore[no-any-return]


def audit_module(
    target: Target,
    kernel: KernelInfo,
    mod: ModuleInfo,
    *,
    loaded_text: Iterable[tuple[int, int]] | _TextRanges = (),
    symbols: _Symbols | None = None,
    kernel_writes_magic: bool | None = None,
) -> ModuleAudit:
    """Decode and check one module's stubs, TOC and ftrace trampolines.

    :param mod: the module (from ``struct module *``)
    :param loaded_text: every ``[start, end)`` of loaded text (kernel and modules),
        for ``STUB_TARGET_DANGLING``; empty to skip that check
    :param kernel_writes_magic: whether this kernel writes ``STUB_MAGIC`` (4.6+);
        ``None`` to decide from the module's own slots
    """
    symbols = symbols or _Symbols(target)
    loaded = loaded_text if isinstance(loaded_text, _TextRanges) else _TextRanges(loaded_text)
    rec = ModuleRecord(name=mod.name, stubs_section=mod.stubs)
    result = ModuleAudit(module=mod, record=rec)
    order = kernel.byteorder
    slot = stub_size(kernel.abi, kernel.func_desc_size)
    opts: dict[str, Any] = {
        "kernel_toc": kernel.toc,
        "kernelbase": kernel.kernelbase,
        "byteorder": order,
        "abi": kernel.abi,
    }
    data = b""
    if mod.stubs is not None:
        try:
            data, result.reads = _read_stubs(target, mod, slot)
        except MemoryReadError as e:
            result.findings.append(
                Finding("MEMORY_UNREADABLE", f".stubs unreadable: {e}", module=mod.name,
                        address=mod.stubs)
            )
        ool = None
        if mod.ool_stubs is not None and mod.ool_stub_count:
            ool = (mod.ool_stubs, mod.ool_stub_count)
        result.stubs = list(
            for_each_stub(
                data,
                mod.stubs,
                count=mod.stub_count,
                ool=ool,
                func_desc_size=kernel.func_desc_size if kernel.abi == 1 else None,
                **opts,
            )
        )
        if ool is not None:
            # 6.13+ out-of-line ftrace stubs: decoded and reported beside the slots;
            # a normal stub written over this area (the bug JL2025 2/3 fixed) shows
            # up as an unknown entry here.
            for o in for_each_ool_stub(data, mod.stubs, ool[0], ool[1], byteorder=order):
                rec.ool_stubs.append(_record(o, None, symbols))
                if o.kind is not StubKind.OOL_FTRACE:
                    result.findings.append(
                        Finding("STUB_UNKNOWN", "out-of-line ftrace stub matches no known "
                                "layout: " + " ".join(f"{w:08x}" for w in o.words),
                                module=mod.name, address=o.address)
                    )
    stubs = result.stubs
    result.toc = resolve_module_toc(mod.toc_section, mod.stubs, stubs, arch_toc=mod.arch_toc)
    rec.toc, rec.toc_source = result.toc.toc, result.toc.source
    # index = slot number in .stubs (the OOL area's slots are not stubs but count)
    base = mod.stubs or 0
    rec.stubs = [_record(s, (s.address - base) // slot, symbols) for s in stubs]

    if kernel_writes_magic is None:
        kernel_writes_magic = any(s.magic_ok for s in stubs)
    paca_off = kernel.paca_toc_offset
    mod_toc = rec.toc
    unknown, ftrace = StubKind.UNKNOWN, StubKind.FTRACE  # hot loop: no enum look-ups
    for s in stubs:
        kind = s.kind
        if kind is unknown:
            result.findings.append(
                Finding("STUB_UNKNOWN", "used slot matches no known stub layout: "
                        + " ".join(f"{w:08x}" for w in s.words), module=mod.name,
                        address=s.address)
            )
            continue
        if s.magic_ok is False and kernel_writes_magic:
            result.findings.append(
                Finding("STUB_BAD_MAGIC", f"magic is {s.words[7]:#010x}, not STUB_MAGIC "
                        "0x73747562", module=mod.name, address=s.address)
            )
        implied = s.implied_toc
        if implied is not None and implied != mod_toc and mod_toc is not None:
            result.findings.append(
                Finding(
                    "STUB_TOC_MISMATCH",
                    f"stub implies TOC {implied:#x}, module TOC is {mod_toc:#x} "
                    f"(from {rec.toc_source})",
                    module=mod.name,
                    address=s.address,
                )
            )
        if (
            kind is ftrace
            and paca_off is not None
            and s.paca_offset is not None
            and s.paca_offset != paca_off
        ):
            result.findings.append(
                Finding(
                    "FTRACE_STUB_PACA_OFFSET",
                    f"ld r12,{s.paca_offset}(r13) does not load paca->kernel_toc "
                    f"(offset {paca_off})",
                    module=mod.name,
                    address=s.address,
                )
            )
        dest = s.target
        if dest is not None and loaded and dest not in loaded:
            # A livepatch module keeps its klp relocations' stubs after the patched
            # module is unloaded (restore_r2() accepts them again on reload, 6.12+):
            # harmless until that module comes back, so only a warning there.
            result.findings.append(
                Finding(
                    "STUB_TARGET_DANGLING",
                    f"target {dest:#x} is in no loaded kernel or module text"
                    + (" (patched module unloaded?)" if mod.livepatch else ""),
                    severity=Severity.WARNING if mod.livepatch else None,
                    module=mod.name,
                    address=s.address,
                )
            )

    by_addr = {s.address: (i, s) for i, s in enumerate(stubs)}
    for attr, want_name, want in (
        ("tramp", "ftrace_caller", kernel.ftrace_caller),
        ("tramp_regs", "ftrace_regs_caller", kernel.ftrace_regs_caller),
    ):
        addr = getattr(mod, attr)
        if not addr:
            continue
        if addr in by_addr:
            index, tstub = by_addr[addr]
            trec = rec.stubs[index]
        else:
            try:
                raw = target.read(addr, slot)
                result.reads += 1
            except MemoryReadError as e:
                result.findings.append(
                    Finding("MEMORY_UNREADABLE", f"arch.{attr} unreadable: {e}",
                            module=mod.name, address=addr)
                )
                continue
            tstub = decode_stub(raw, addr, **opts)
            trec = _record(tstub, None, symbols)
        setattr(rec, attr, trec)
        if tstub.kind.r2_relative:
            result.r2_tramp_findings.append(
                Finding(
                    "TRAMP_NOT_FTRACE_STUB",
                    f"arch.{attr} is a {tstub.kind.value} (r2-relative) stub: it only works "
                    "while r2 holds this module's TOC",
                    module=mod.name,
                    address=addr,
                )
            )
        elif not tstub.kind.uses_kernel_toc and tstub.kind is not StubKind.PCREL:
            result.findings.append(
                Finding(
                    "TRAMP_NOT_FTRACE_STUB",
                    f"arch.{attr} is not a stub that loads the kernel TOC ({tstub.kind.value})",
                    module=mod.name,
                    address=addr,
                )
            )
        if want is not None and tstub.target is not None and tstub.target != want:
            sym = symbols(tstub.target)
            where = sym.format(tstub.target) if sym else f"{tstub.target:#x}"
            result.findings.append(
                Finding(
                    "TRAMP_TARGET_MISMATCH",
                    f"arch.{attr} reaches {where}, not {want_name} ({want:#x})",
                    module=mod.name,
                    address=addr,
                )
            )
    return result


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
    kernel: KernelInfo, audits: Iterable[ModuleAudit], others: Iterable[ModuleInfo] = ()
) -> dict[int, str]:
    """TOC value -> owner (``"vmlinux"`` or a module name).

    :param others: modules not audited (a command limited to some modules): their
        TOC from the section address alone, with the rule the audited ones showed
    """
    tocs: dict[int, str] = {}
    audits = list(audits)
    plain = any(a.toc.rule == "plain" for a in audits)
    done = {a.module.name for a in audits}
    for mod in others:
        if mod.name in done:
            continue
        section = mod.toc_section if mod.toc_section is not None else mod.stubs
        if mod.arch_toc:
            tocs[mod.arch_toc] = mod.name
        elif section is not None:
            tocs[module_toc(section, rounded=not plain)] = mod.name
    for a in audits:
        if a.toc.toc is not None:
            tocs[a.toc.toc] = a.module.name
    if kernel.toc is not None:
        tocs[kernel.toc] = "vmlinux"
    return tocs


def _audit_modules(
    target: Target, kernel: KernelInfo, names: Sequence[str] | None
) -> tuple[list[ModuleAudit], list[ModuleInfo]]:
    everything = list(target.modules())
    chosen = select_modules(everything, names)
    loaded = _loaded_text(kernel, everything)
    symbols = _Symbols(target)
    audits = [
        audit_module(target, kernel, m, loaded_text=loaded, symbols=symbols) for m in chosen
    ]
    # STUB_BAD_MAGIC only on a kernel that writes the magic: decide over all modules.
    writes = any(s.magic_ok for a in audits for s in a.stubs)
    if not writes:
        for a in audits:
            a.findings = [f for f in a.findings if f.code != "STUB_BAD_MAGIC"]
    if _paca_tramp_kernel(target, kernel, audits, everything):
        for a in audits:
            a.findings.extend(a.r2_tramp_findings)
    return audits, everything


def _paca_tramp_kernel(
    target: Target, kernel: KernelInfo, audits: list[ModuleAudit], everything: list[ModuleInfo]
) -> bool:
    """Whether this kernel's ftrace trampolines load the kernel TOC from the paca.

    Feature detection instead of a config or version test: mprofile-kernel kernels
    (4.6+, 336a7b5dd80a) make ``ftrace_caller``/``_mcount`` stubs that load the
    kernel TOC; -pg kernels make none.  Decided from the audited modules' stubs,
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


def _damage_findings(target: Target) -> list[Finding]:
    """The back end's record of structures it could not walk (``Target.damage``)."""
    damage: Sequence[tuple[Any, ...]] = getattr(target, "damage", ())
    # (address, message) is MEMORY_UNREADABLE; (address, message, code) names its code
    # (LIST_CORRUPT for a list that loops or leaves kernel memory).
    return [
        Finding(d[2] if len(d) > 2 else "MEMORY_UNREADABLE", d[1], address=d[0]) for d in damage
    ]


@without_cyclic_gc
def stubs_report(target: Target, names: Sequence[str] | None = None) -> Report:
    """``klp-stubs``: every used slot of the named (or all) modules, decoded."""
    kernel = target.kernel()
    report = new_report(target, kernel, ("stubs", "findings"))
    audits, _ = _audit_modules(target, kernel, names)
    for a in audits:
        report.modules.append(a.record)
        report.extend(a.findings)
    report.extend(_damage_findings(target))
    return report


def _callsite_findings(
    target: Target, kernel: KernelInfo, audits: Iterable[ModuleAudit]
) -> list[Finding]:
    from .callsite_audit import audit_module_callsites

    out: list[Finding] = []
    for a in audits:
        addrs = [s.address for s in a.stubs if s.kind is not StubKind.EMPTY]
        out.extend(audit_module_callsites(target, a.module, addrs, kernel))
    return out


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
            if f.code in ("STUB_TOC_MISMATCH", "MEMORY_UNREADABLE") or f.code.startswith("TRAMP_")
        )
    if callsites:
        report.extend(_callsite_findings(target, kernel, audits))
    report.extend(_damage_findings(target))
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
    audits, everything = _audit_modules(target, kernel, names)
    for a in audits:
        report.modules.append(a.record)
        report.extend(a.findings)
    if callsites:
        report.extend(_callsite_findings(target, kernel, audits))
    if tasks:
        from .livepatch import audit_livepatch_stacks

        records, findings = audit_livepatch_stacks(
            target, module_toc_map(kernel, audits, everything), pids=pids
        )
        report.tasks = records
        report.extend(findings)
    report.extend(_damage_findings(target))
    return report


def tocs_for(target: Target) -> Mapping[int, str]:
    """TOC value -> owner for every module of ``target`` (for livepatch commands)."""
    kernel = target.kernel()
    audits, _ = _audit_modules(target, kernel, None)
    return module_toc_map(kernel, audits)
