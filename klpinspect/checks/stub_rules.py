"""The stub and trampoline finding rules, each a small function over decoded stubs.

Kernel-wide traits (does this kernel write ``STUB_MAGIC``? do its ftrace
trampolines load the kernel TOC from the paca?) are decided once, from every
audited module, before any module is checked (:class:`KernelTraits`); each
rule then looks at one stub (or one trampoline) with those traits and returns
its finding or ``None``.  :func:`stub_findings` runs the per-slot rules in
the audit's hot loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from klpinspect.checks.symbols import Symbolizer
from klpinspect.ppc64.stubs import Stub, StubKind
from klpinspect.report import Finding, FindingCode, Severity
from klpinspect.target import KernelInfo, ModuleInfo

__all__ = (
    "KernelTraits",
    "LoadedText",
    "bad_magic",
    "dangling_target",
    "paca_offset",
    "stub_findings",
    "toc_mismatch",
    "tramp_findings",
    "unknown_stub",
)


class LoadedText(Protocol):
    """Every ``[start, end)`` of loaded text, asked whether it holds an address."""

    def __contains__(self, address: int) -> bool: ...


@dataclass(frozen=True)
class KernelTraits:
    """What the rules need to know about the kernel as a whole.

    :param writes_stub_magic: the kernel stores ``STUB_MAGIC`` in word 7 of each
        stub (f17c4e01e906, v4.6): some audited slot has it
    :param paca_tramps: the module ftrace trampolines load the kernel TOC from the
        paca (336a7b5dd80a, v4.6, mprofile-kernel); on ``-pg`` kernels they are
        normal r2-relative stubs by design
    """

    writes_stub_magic: bool = True
    paca_tramps: bool = True


def _words(stub: Stub) -> str:
    return " ".join(f"{w:08x}" for w in stub.words)


def unknown_stub(mod: ModuleInfo, stub: Stub) -> Finding | None:
    """``STUB_UNKNOWN``: a used slot that matches no known layout."""
    if stub.kind is not StubKind.UNKNOWN:
        return None
    return Finding(FindingCode.STUB_UNKNOWN, "used slot matches no known stub layout: "
                   + _words(stub), module=mod.name, address=stub.address)


def bad_magic(mod: ModuleInfo, stub: Stub, traits: KernelTraits) -> Finding | None:
    """``STUB_BAD_MAGIC``: word 7 is not ``STUB_MAGIC`` on a kernel that writes it."""
    if stub.magic_ok is not False or not traits.writes_stub_magic:
        return None
    return Finding(FindingCode.STUB_BAD_MAGIC, f"magic is {stub.words[7]:#010x}, not "
                   "STUB_MAGIC 0x73747562", module=mod.name, address=stub.address)


def toc_mismatch(
    mod: ModuleInfo, stub: Stub, mod_toc: int | None, toc_source: str
) -> Finding | None:
    """``STUB_TOC_MISMATCH``: an r2-relative stub implies another TOC than the module's."""
    implied = stub.implied_toc
    if implied is None or mod_toc is None or implied == mod_toc:
        return None
    return Finding(
        FindingCode.STUB_TOC_MISMATCH,
        f"stub implies TOC {implied:#x}, module TOC is {mod_toc:#x} (from {toc_source})",
        module=mod.name,
        address=stub.address,
    )


def paca_offset(mod: ModuleInfo, stub: Stub, kernel: KernelInfo) -> Finding | None:
    """``FTRACE_STUB_PACA_OFFSET``: an ftrace stub's ``ld r12,X(r13)`` misses ``kernel_toc``."""
    want = kernel.paca_toc_offset
    if stub.kind is not StubKind.FTRACE or want is None or stub.paca_offset in (None, want):
        return None
    return Finding(
        FindingCode.FTRACE_STUB_PACA_OFFSET,
        f"ld r12,{stub.paca_offset}(r13) does not load paca->kernel_toc (offset {want})",
        module=mod.name,
        address=stub.address,
    )


def dangling_target(mod: ModuleInfo, stub: Stub, loaded: LoadedText) -> Finding | None:
    """``STUB_TARGET_DANGLING``: the target is in no loaded kernel or module text.

    A livepatch module keeps its klp relocations' stubs after the patched module
    is unloaded (``restore_r2()`` accepts them again on reload, 6.12+): harmless
    until that module comes back, so only a warning there.
    """
    dest = stub.target
    if dest is None or dest in loaded:
        return None
    return Finding(
        FindingCode.STUB_TARGET_DANGLING,
        f"target {dest:#x} is in no loaded kernel or module text"
        + (" (patched module unloaded?)" if mod.livepatch else ""),
        severity=Severity.WARNING if mod.livepatch else None,
        module=mod.name,
        address=stub.address,
    )


def stub_findings(
    mod: ModuleInfo,
    stubs: Iterable[Stub],
    *,
    kernel: KernelInfo,
    traits: KernelTraits,
    mod_toc: int | None,
    toc_source: str,
    loaded: LoadedText | None,
) -> list[Finding]:
    """Every per-slot rule over a module's used slots, in slot order.

    :param loaded: loaded text (kernel and modules), ``None`` to skip the dangling rule
    """
    out: list[Finding] = []
    unknown, normal = StubKind.UNKNOWN, StubKind.NORMAL  # hot loop: no enum look-ups
    for s in stubs:
        kind = s.kind
        if kind is unknown:
            found = unknown_stub(mod, s)
            if found is not None:
                out.append(found)
            continue
        # the common slot (a normal stub with its magic, implying the module TOC, into
        # loaded text) breaks no rule: checked inline, it costs no calls
        if (
            kind is normal
            and (s.magic_ok or not traits.writes_stub_magic)
            and s.implied_toc == mod_toc
            and (loaded is None or (s.target is not None and s.target in loaded))
        ):
            continue
        for finding in (
            bad_magic(mod, s, traits),
            toc_mismatch(mod, s, mod_toc, toc_source),
            paca_offset(mod, s, kernel),
            None if loaded is None else dangling_target(mod, s, loaded),
        ):
            if finding is not None:
                out.append(finding)
    return out


def tramp_findings(
    mod: ModuleInfo,
    attr: str,
    stub: Stub,
    *,
    want_name: str,
    want: int | None,
    traits: KernelTraits,
    symbols: Symbolizer,
) -> list[Finding]:
    """The rules for ``mod->arch.tramp`` / ``tramp_regs``: a stub that loads the kernel
    TOC (on kernels whose trampolines do), reaching ``want_name``."""
    out: list[Finding] = []
    address = stub.address
    if stub.kind.r2_relative:
        if traits.paca_tramps:
            out.append(Finding(
                FindingCode.TRAMP_NOT_FTRACE_STUB,
                f"arch.{attr} is a {stub.kind.value} (r2-relative) stub: it only works "
                "while r2 holds this module's TOC",
                module=mod.name, address=address,
            ))
    elif not stub.kind.uses_kernel_toc and stub.kind is not StubKind.PCREL:
        out.append(Finding(
            FindingCode.TRAMP_NOT_FTRACE_STUB,
            f"arch.{attr} is not a stub that loads the kernel TOC ({stub.kind.value})",
            module=mod.name, address=address,
        ))
    if want is not None and stub.target is not None and stub.target != want:
        sym = symbols.info(stub.target)
        where = sym.format(stub.target) if sym else f"{stub.target:#x}"
        out.append(Finding(
            FindingCode.TRAMP_TARGET_MISMATCH,
            f"arch.{attr} reaches {where}, not {want_name} ({want:#x})",
            module=mod.name, address=address,
        ))
    return out
