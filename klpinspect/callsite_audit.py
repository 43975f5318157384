"""Call-site audit of a loaded module: every ``bl``/``b`` into its ``.stubs``.

Glue between a :class:`~klpinspect.target.Target` and the pure scanner in
:mod:`klpinspect.ppc64.callsites`: one bulk read per executable region of the
module, then a finding for every call site that breaks the kernel's TOC rules
(docs/kernel-facts.md §3): ``CALLSITE_NO_TOC_RESTORE`` for a ``bl`` into a stub not followed
by ``ld r2,24(r1)`` (40 on ELFv1), ``CALLSITE_SIBLING_VIA_STUB`` for a ``b``
into a stub.  The ``-mprofile-kernel`` ``mflr r0; bl <tramp>`` ftrace sites are
correct without a restore and give no finding; neither does a call through a
stub that never saves r2 (ftrace and PCREL stubs: the stub of each suspicious
site is read and decoded, so a PCREL kernel gives no false alarms).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import MemoryReadError
from .ppc64.callsites import CallFollow, CallSite, find_stub_calls
from .ppc64.disasm import disassemble, disassemble_word
from .ppc64.stubs import OOL_STUB_SIZE, Stub, StubKind, decode_stub, stub_size
from .report import Finding, FindingCode
from .target import KernelInfo, ModuleInfo, Target, try_symbolize

__all__ = ("audit_module_callsites", "module_text_regions")

# Executable sections a module can have (SHF_EXECINSTR output sections of the
# kernel's module linker script and the compiler); ".stubs" holds the stubs.
_EXEC_SECTIONS = (
    ".text",
    ".init.text",
    ".exit.text",
    ".ref.text",
    ".sched.text",
    ".spinlock.text",
    ".noinstr.text",
    ".kprobes.text",
    ".cpuidle.text",
    ".entry.text",
)
# Without a known size a section is bounded by the next section's address,
# and never read past this much (the module area is at most a few MB each).
_MAX_SECTION = 32 << 20
# Stubs that never store r2 at R2_STACK_OFFSET(r1): calls through them need no
# restore and a sibling call through them clobbers nothing (PCREL kernels have
# no TOC: restore_r2() returns at once; ftrace stubs load the kernel TOC).
_NO_TOC_SAVE = frozenset(
    {
        StubKind.FTRACE,
        StubKind.PCREL,
        StubKind.PCREL_FTRACE,
        StubKind.OOL_FTRACE,
        StubKind.LEGACY_MCOUNT,
        StubKind.LEGACY_2016_PROFILING,
    }
)
_CONTEXT_BEFORE = 4
_CONTEXT_AFTER = 2


def _is_exec_section(name: str) -> bool:
    return name in _EXEC_SECTIONS or name.startswith(".text.")


def module_text_regions(mod: ModuleInfo) -> list[tuple[str, int, int]]:
    """The executable regions of ``mod`` as ``(label, start, end)``.

    ``mod.text_ranges`` (``mod->mem[MOD_TEXT]``/``core_layout`` text, init text
    while present) when the back end gives them; otherwise the executable
    sections of ``mod->sect_attrs`` (some modules have an empty ``.text`` and
    all their code in ``.text.unlikely``), each bounded by its size when known,
    else by the next section's address.

    :param mod: ``struct module *`` as plain data
    """
    if mod.text_ranges:
        return [("text", start, end) for start, end in mod.text_ranges if end > start]
    addrs = sorted(set(mod.sections.values()))
    regions = []
    for name, start in sorted(mod.sections.items(), key=lambda kv: kv[1]):
        if not _is_exec_section(name):
            continue
        size = mod.section_sizes.get(name)
        if size is None:
            later = [a for a in addrs if a > start]
            size = min(later[0] - start, _MAX_SECTION) if later else None
        if size:
            regions.append((name, start, start + size))
    return regions


def _context(data: bytes, base: int, site: int, byteorder: str) -> tuple[str, ...]:
    i = (site - base) // 4
    lo = max(0, i - _CONTEXT_BEFORE)
    hi = min(len(data) // 4, i + _CONTEXT_AFTER + 1)
    lines = disassemble(data[4 * lo : 4 * hi], base + 4 * lo, byteorder=byteorder)
    prefix = f"{site:#x}:"
    return tuple(("=> " if line.startswith(prefix) else "   ") + line for line in lines)


def _read_stub(target: Target, address: int, kernel: KernelInfo) -> Stub | None:
    """The stub slot at ``address``, decoded (``None`` if unreadable)."""
    try:
        data = target.read(address, stub_size(kernel.abi, kernel.func_desc_size))
    except MemoryReadError:
        return None
    return decode_stub(
        data,
        address,
        kernel_toc=kernel.toc,
        byteorder=kernel.byteorder,
        abi=kernel.abi,
        kernelbase=kernel.kernelbase,
    )


def _describe_stub(target: Target, address: int, stub: Stub | None) -> str:
    """``stub 0x… (-> symbol)``: the stub's target (its funcdata) names the callee."""
    callee = None if stub is None else (stub.target or stub.funcdata)
    if not callee:
        return f"stub {address:#x}"
    sym = try_symbolize(target, callee)
    return f"stub {address:#x} (-> {sym.format(callee) if sym else hex(callee)})"


def _finding(
    target: Target,
    mod: ModuleInfo,
    site: CallSite,
    stub: Stub | None,
    data: bytes,
    base: int,
    kernel: KernelInfo,
) -> Finding:
    bo = kernel.byteorder
    restore = "ld r2,24(r1)" if kernel.abi == 2 else "ld r2,40(r1)"
    where = _describe_stub(target, site.target, stub)
    if site.follow is CallFollow.SIBLING:
        code = FindingCode.CALLSITE_SIBLING_VIA_STUB
        off = 24 if kernel.abi == 2 else 40
        msg = (
            f"sibling call (b, no link) into {where}: the stub's std r2,{off}(r1) "
            "overwrites the TOC saved by the caller's caller, which restores the wrong r2 "
            "if it reached this function through a stub; fix: "
            '__attribute__((optimize("-fno-optimize-sibling-calls"))) on the caller'
        )
    else:
        code = FindingCode.CALLSITE_NO_TOC_RESTORE
        if site.next_word is None:
            after = "nothing (end of text)"
        elif site.follow is CallFollow.NOP:
            after = "a nop that restore_r2() never patched"
        else:
            after = (
                f"{site.next_word:08x} "
                f"({disassemble_word(site.next_word, site.address + 4, bo)})"
            )
        msg = (
            f"bl into {where} is followed by {after}, not {restore}: "
            "the caller runs on with the callee's TOC in r2"
        )
    sym = try_symbolize(target, site.address)
    return Finding(
        code=code,
        message=msg,
        module=mod.name,
        address=site.address,
        symbol=sym.format(site.address) if sym else None,
        context=_context(data, base, site.address, bo),
    )


def audit_module_callsites(
    target: Target,
    mod: ModuleInfo,
    stub_addresses: Sequence[int],
    kernel: KernelInfo,
) -> list[Finding]:
    """Check every call from ``mod``'s text into its own ``.stubs``.

    One ``target.read`` per executable region (see :func:`module_text_regions`);
    an unreadable region gives a ``MEMORY_UNREADABLE`` warning, not an error.

    :param target: the kernel
    :param mod: ``struct module *`` as plain data
    :param stub_addresses: addresses of the module's used stub slots
        (``struct ppc64_stub_entry *``), e.g. from
        :func:`klpinspect.ppc64.stubs.for_each_stub`
    :param kernel: kernel-wide facts (byte order, ABI)
    :returns: ``CALLSITE_NO_TOC_RESTORE`` / ``CALLSITE_SIBLING_VIA_STUB``
        findings in address order
    """
    stubs = set(stub_addresses)
    if mod.ool_stubs is not None and mod.ool_stub_count:
        # "b ool_stub" is ftrace, not a call.
        ool_end = mod.ool_stubs + OOL_STUB_SIZE * mod.ool_stub_count
        stubs = {s for s in stubs if not mod.ool_stubs <= s < ool_end}
    tramps = {t for t in (mod.tramp, mod.tramp_regs) if t is not None}
    stubs |= tramps
    findings: list[Finding] = []
    if not stubs:
        return findings
    decoded: dict[int, Stub | None] = {}  # only the stubs of suspicious sites are read
    for label, start, end in module_text_regions(mod):
        try:
            data = target.read(start, end - start)
        except MemoryReadError as e:
            findings.append(
                Finding(
                    code=FindingCode.MEMORY_UNREADABLE,
                    message=f"call-site audit skipped {label}: {e}",
                    module=mod.name,
                    address=start,
                )
            )
            continue
        for site in find_stub_calls(
            data, start, stubs, tramps=tramps, byteorder=kernel.byteorder, abi=kernel.abi,
            suspect_only=True,
        ):
            if site.target not in decoded:
                decoded[site.target] = _read_stub(target, site.target, kernel)
            stub = decoded[site.target]
            if stub is not None and stub.kind in _NO_TOC_SAVE:
                continue
            findings.append(_finding(target, mod, site, stub, data, start, kernel))
    return findings
