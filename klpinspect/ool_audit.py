"""Site, owner and checks of a module's out-of-line ftrace stubs (6.13+), over any Target.

The pure checks are in :mod:`klpinspect.ppc64.ool`; this module reads what
they need through the :class:`~klpinspect.target.Target` protocol (the site
words, a few reads per module) and turns the results into report records and
findings.  Both back ends get it through :func:`klpinspect.audit.audit_module`.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MemoryReadError
from .ftrace_view import (
    FtraceUnsupported,
    LayoutSource,
    klp_ops_names,
    read_ftrace_ool_sites,
    read_klp_funcs,
)
from .ppc64.insn import words
from .ppc64.ool import OolCode, check_ool_stubs, ool_insn0
from .ppc64.stubs import Stub, StubKind
from .report import Finding, FindingCode, OolStubRecord, StubRecord
from .stackcheck import ListBroken, ListCorruption
from .target import KernelInfo, ModuleInfo, Target

__all__ = (
    "OolRead",
    "audit_ool_stubs",
    "check_ool",
    "livepatch_ops_names",
    "read_ool_sites",
    "read_site_words",
    "recorded_ool_sites",
)

# Read a module's sites in one go when they span at most this much, else one by one.
_MAX_SPAN = 4 << 20
_WORDS = array.array("I")  # 32-bit words, where the platform's unsigned int is 4 bytes

Namer = Callable[[int], tuple[str | None, str | None]]


class _OolRecordBag(StubRecord):
    """A slot bag with :class:`OolStubRecord`'s layout: the records are built with
    plain slot stores and one class switch, ~5x cheaper than the frozen ``__init__``
    (as ``stubs._StubBuilder``); every slot must be set.

    ``__class__`` assignment needs the same base (:class:`StubRecord`) and the same
    added slots; the object ``__setattr__``/``__delattr__`` pair keeps the C-level
    attribute stores (either one inherited from the frozen base would not).
    """

    __slots__ = OolStubRecord.__slots__
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


_new = object.__new__


# the pure checks' codes as findings
_FINDING = {
    OolCode.TRAMP_MISMATCH: FindingCode.OOL_STUB_TRAMP_MISMATCH,
    OolCode.RETURN_MISMATCH: FindingCode.OOL_STUB_RETURN_MISMATCH,
    OolCode.SITE_NOT_PATCHED: FindingCode.OOL_SITE_NOT_PATCHED,
    OolCode.SITE_CLAIMED_TWICE: FindingCode.OOL_SITE_CLAIMED_TWICE,
}


def read_site_words(
    target: Target,
    sites: Iterable[int],
    ranges: Sequence[tuple[int, int]],
    byteorder: str = "little",
) -> tuple[dict[int, int], list[int]]:
    """The instruction word at each site: ``({site: word}, [unreadable sites])``.

    Sites inside one of ``ranges`` (the module's text) are read in one read
    per range when they span at most 4 MiB; the rest one word at a time.
    """
    out: dict[int, int] = {}
    bad: list[int] = []
    pending = sorted(set(sites))
    for start, end in ranges:
        inside = [s for s in pending if start <= s and s + 4 <= end]
        if not inside:
            continue
        lo, hi = inside[0], inside[-1] + 4
        if hi - lo > _MAX_SPAN:
            continue
        try:
            data = target.read(lo, hi - lo)
        except MemoryReadError:
            continue
        offsets = [s - lo for s in inside]
        if _WORDS.itemsize == 4 and not any(map((3).__and__, offsets)):
            # every site word-aligned from the first (instructions are): the span's
            # words unpacked in C, gathered by index
            span = array.array("I", data[: len(data) & ~3])
            if (byteorder == "little") != (sys.byteorder == "little"):
                span.byteswap()
            out.update(zip(inside, map(span.__getitem__, map((2).__rrshift__, offsets)),
                           strict=True))
            continue
        for s in inside:
            (out[s],) = words(data[s - lo : s - lo + 4], byteorder)
    for s in pending:
        if s in out:
            continue
        try:
            (out[s],) = words(target.read(s, 4), byteorder)
        except MemoryReadError:
            bad.append(s)
    return out, bad


def recorded_ool_sites(target: Target) -> dict[int, int] | None:
    """``rec->arch.ool_stub`` -> ``rec->ip`` of every ftrace record that has an OOL stub.

    ``None`` when the back end cannot read the records (no layout queries, no
    ``struct dyn_ftrace`` in the debug info, unreadable pages) or no record has
    a stub: the checks then take each stub's own closing ``b`` as its site.
    """
    if not isinstance(target, LayoutSource):
        return None
    try:
        sites = read_ftrace_ool_sites(target)
    except (FtraceUnsupported, MemoryReadError):
        return None
    return sites or None


def livepatch_ops_names(target: Target) -> dict[int, str]:
    """``&klp_ops->fops`` -> ``klp_ops(object:function)`` from ``klp_patches``, so that an
    OOL stub's ``ftrace_op`` pointing at a livepatch's (kmalloc'd) ops is named; empty
    when the back end or the kernel cannot say (no layout queries, no CONFIG_LIVEPATCH)."""
    if not isinstance(target, LayoutSource):
        return {}
    try:
        return klp_ops_names(read_klp_funcs(target))
    except (FtraceUnsupported, MemoryReadError, ListBroken, ListCorruption):
        return {}


@dataclass
class OolRead:
    """What reading found for one module's OOL stubs, for :func:`check_ool`.

    :param stubs: the module's OOL stubs as :func:`~klpinspect.ppc64.stubs.for_each_ool_stub`
        decoded them
    :param site_words: site -> the instruction word there
    :param unreadable: sites that could not be read
    :param recorded_sites: ``&insn[0]`` -> ``rec->ip`` from the ftrace records, if read
    :param ops_names: ``ftrace_ops`` address -> name for ops without a symbol
        (:func:`livepatch_ops_names`)
    """

    stubs: Sequence[Stub]
    site_words: dict[int, int] = field(default_factory=dict)
    unreadable: list[int] = field(default_factory=list)
    recorded_sites: Mapping[int, int] | None = None
    ops_names: Mapping[int, str] | None = None


def read_ool_sites(
    target: Target,
    kernel: KernelInfo,
    mod: ModuleInfo,
    stubs: Sequence[Stub],
    *,
    recorded_sites: Mapping[int, int] | None = None,
    ops_names: Mapping[int, str] | None = None,
) -> tuple[OolRead, list[Finding]]:
    """Read the word at every site the stubs claim (their own ``b`` and the records').

    The findings are only what reading found: ``MEMORY_UNREADABLE`` for unreadable
    sites; the rules run in :func:`check_ool`.
    """
    sites = [s.site for s in stubs if s.kind is StubKind.OOL_FTRACE and s.site is not None]
    if recorded_sites:
        # rec->ip of each stub's &insn[0], where a record names one
        found = map(recorded_sites.get, map(ool_insn0, stubs))
        sites.extend(site for site in found if site is not None)
    site_words, unreadable = read_site_words(target, sites, mod.text_ranges, kernel.byteorder)
    findings = []
    if unreadable:
        findings.append(
            Finding(FindingCode.MEMORY_UNREADABLE, f"{len(unreadable)} ftrace site(s) of "
                    f"out-of-line stubs unreadable, first {unreadable[0]:#x}", module=mod.name,
                    address=unreadable[0])
        )
    return OolRead(stubs, site_words, unreadable, recorded_sites, ops_names), findings


def check_ool(
    kernel: KernelInfo,
    mod: ModuleInfo,
    read: OolRead,
    namer: Namer,
    prefetch: Callable[[Iterable[int]], None] | None = None,
) -> tuple[list[OolStubRecord], list[Finding]]:
    """Records (with ``site``, ``site_symbol``, ``ftrace_op``...) and the rules' findings
    (:func:`klpinspect.ppc64.ool.check_ool_stubs`) for what :func:`read_ool_sites` read.

    :param namer: address -> ``(symbol, owner)`` (the audit's memoized symbolizer)
    :param prefetch: names the sites together first (``Symbolizer.prefetch``)
    """
    tramps = {
        t
        for t in (mod.tramp, mod.tramp_regs, kernel.ftrace_caller, kernel.ftrace_regs_caller)
        if t is not None
    }
    checks, problems = check_ool_stubs(
        read.stubs,
        tramps=tramps,
        site_words=read.site_words,
        recorded_sites=read.recorded_sites,
        text_ranges=mod.text_ranges,
    )
    by_stub = {c.stub.address: c for c in checks}
    if prefetch is not None:  # every site is its own address: named together
        prefetch(c.site for c in checks if c.site is not None)
    records: list[OolStubRecord] = []
    ops_names = read.ops_names or {}
    # stubs share a few targets (arch.tramp, ftrace_caller) and ftrace_ops: each is
    # named once here, not once a stub; every site is its own address
    named: dict[int, tuple[str | None, str | None]] = {}
    for stub in read.stubs:
        target = stub.target
        if target is None:
            target_symbol = owner = None
        else:
            try:
                target_symbol, owner = named[target]
            except KeyError:
                target_symbol, owner = named[target] = namer(target)
        check = by_stub.get(stub.address)
        if check is None:
            records.append(OolStubRecord(stub, None, target_symbol, owner))
            continue
        site, op = check.site, check.ftrace_op
        op_symbol = None
        if op:
            try:
                op_symbol = named[op][0]
            except KeyError:
                op_symbol = named.setdefault(op, namer(op))[0]
            op_symbol = op_symbol or ops_names.get(op)
        rec: Any = _new(_OolRecordBag)
        rec.stub = stub
        rec.index = None
        rec.target_symbol = target_symbol
        rec.target_owner = owner
        rec.site = site
        rec.site_symbol = None if site is None else namer(site)[0]
        rec.site_state = check.state.value
        rec.ftrace_op = op
        rec.ftrace_op_symbol = op_symbol
        rec.__class__ = OolStubRecord
        records.append(rec)
    findings = [
        Finding(_FINDING[p.code], p.message, module=mod.name, address=p.stub,
                symbol=None if p.site is None else namer(p.site)[0])
        for p in problems
    ]
    return records, findings


def audit_ool_stubs(
    target: Target,
    kernel: KernelInfo,
    mod: ModuleInfo,
    stubs: Sequence[Stub],
    namer: Namer,
    *,
    recorded_sites: Mapping[int, int] | None = None,
    ops_names: Mapping[int, str] | None = None,
) -> tuple[list[OolStubRecord], list[Finding]]:
    """:func:`read_ool_sites` then :func:`check_ool`: records and every finding."""
    read, read_findings = read_ool_sites(target, kernel, mod, stubs,
                                         recorded_sites=recorded_sites, ops_names=ops_names)
    records, findings = check_ool(kernel, mod, read, namer)
    return records, findings + read_findings
