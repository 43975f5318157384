"""The Target protocol: what a back end tells the pure core about a kernel.

A back end (drgn, gdb, a synthetic test target) answers a handful of
questions with plain data: read bytes, symbolize an address, list modules and
tasks, and give the kernel-wide facts (TOC, ftrace entry points).  Nothing
here knows about drgn or gdb.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import KlpError
from .ppc64.toc import KernelTocSource

__all__ = (
    "KernelInfo",
    "ModuleInfo",
    "StackFrame",
    "SymbolInfo",
    "Target",
    "TaskInfo",
    "make_module_info",
    "try_symbolize",
)


@dataclass(frozen=True)
class KernelInfo:
    """Kernel-wide facts.

    :param release: ``init_uts_ns.name.release``
    :param arch: ``"ppc64le"`` or ``"ppc64"``
    :param byteorder: ``"little"`` or ``"big"``
    :param abi: 2 for ELFv2, 1 for ELFv1 (function descriptors)
    :param toc: the kernel TOC (r2) value, ``paca_ptrs[cpu]->kernel_toc`` or ``.TOC.``
    :param toc_source: ``"paca"``, ``".TOC."`` or ``"none"``
    :param kernelbase: ``paca->kernelbase`` (PCREL ftrace stubs are relative to it)
    :param ftrace_caller: address of ``ftrace_caller``
    :param ftrace_regs_caller: address of ``ftrace_regs_caller``
    :param mcount: address of ``_mcount``
    :param livepatch_handler: address of ``livepatch_handler`` (a local symbol)
    :param text_ranges: ``[start, end)`` ranges of kernel text (``_stext`` .. ``_etext``,
        init text), to tell whether an address is in loaded text
    :param func_desc_size: ``sizeof(func_desc_t)``: 8 on ELFv2, 16 or 24 on ELFv1
    :param has_livepatch_sp: whether ``struct thread_info`` has ``livepatch_sp``
    :param paca_toc_offset: ``offsetof(struct paca_struct, kernel_toc)`` when known
    """

    release: str
    arch: str = "ppc64le"
    byteorder: str = "little"
    abi: int = 2
    toc: int | None = None
    toc_source: KernelTocSource = KernelTocSource.NONE
    kernelbase: int | None = None
    ftrace_caller: int | None = None
    ftrace_regs_caller: int | None = None
    mcount: int | None = None
    livepatch_handler: int | None = None
    text_ranges: tuple[tuple[int, int], ...] = ()
    func_desc_size: int = 8
    has_livepatch_sp: bool = False
    paca_toc_offset: int | None = None


@dataclass(frozen=True)
class ModuleInfo:
    """One loaded module, as plain data.

    :param name: ``mod->name``
    :param text_ranges: ``[start, end)`` of each executable region
        (``mod->mem[MOD_TEXT]`` / ``core_layout`` text, init text while present)
    :param sections: section name -> load address, from ``mod->sect_attrs``
        (what ``/sys/module/<m>/sections`` shows) or ``klp_info->sechdrs``
    :param section_sizes: section name -> size where the back end knows it
    :param stubs: address of ``.stubs``
    :param stubs_size: size of ``.stubs`` when known (from ``klp_info`` or the
        ``.ko`` file); ``None`` means "walk until the sentinel"
    :param toc_section: address of ``.toc`` (``None`` if the module has none)
    :param arch_toc: ``mod->arch.toc`` (kernels <= 4.x with DYNAMIC_FTRACE)
    :param tramp: ``mod->arch.tramp``
    :param tramp_regs: ``mod->arch.tramp_regs``
    :param stub_count: ``mod->arch.stub_count`` (7.2+)
    :param ool_stubs: ``mod->arch.ool_stubs`` (6.13+, ``struct ftrace_ool_stub *``)
    :param ool_stub_count: ``mod->arch.ool_stub_count``
    :param ool_stub_index: ``mod->arch.ool_stub_index``: how many of the OOL stubs
        ``ftrace_init_ool_stub()`` has handed out (the rest are unused)
    :param livepatch: ``mod->klp`` is set (a livepatch module)
    :param address: address of the ``struct module`` itself
    """

    name: str
    text_ranges: tuple[tuple[int, int], ...] = ()
    sections: Mapping[str, int] = field(default_factory=dict)
    section_sizes: Mapping[str, int] = field(default_factory=dict)
    stubs: int | None = None
    stubs_size: int | None = None
    toc_section: int | None = None
    arch_toc: int | None = None
    tramp: int | None = None
    tramp_regs: int | None = None
    stub_count: int | None = None
    ool_stubs: int | None = None
    ool_stub_count: int | None = None
    ool_stub_index: int | None = None
    livepatch: bool = False
    address: int | None = None


def make_module_info(
    *,
    name: str,
    text_ranges: Iterable[tuple[int, int]],
    sections: Mapping[str, int],
    section_sizes: Mapping[str, int],
    arch: Callable[[str], int | None],
    livepatch: bool,
    address: int | None,
) -> ModuleInfo:
    """A :class:`ModuleInfo` from what every back end reads of a ``struct module``.

    :param arch: reads a member of ``mod->arch`` (``struct mod_arch_specific``),
        ``None`` where this kernel has no such member
    """
    return ModuleInfo(
        name=name,
        text_ranges=tuple(text_ranges),
        sections=sections,
        section_sizes=section_sizes,
        stubs=sections.get(".stubs"),
        stubs_size=section_sizes.get(".stubs"),
        toc_section=sections.get(".toc"),
        # <= 4.x with DYNAMIC_FTRACE: the module TOC kept for the tramp.
        arch_toc=arch("toc"),
        tramp=arch("tramp"),
        tramp_regs=arch("tramp_regs"),
        # b137312fbf2d ("powerpc64/modules: replace stub allocation sentinel with an
        # explicit counter", v6.18)
        stub_count=arch("stub_count"),
        # eec37961a56a ("powerpc64/ftrace: Move ftrace sequence out of line", 6.13;
        # docs/kernel-facts.md §1)
        ool_stubs=arch("ool_stubs"),
        ool_stub_count=arch("ool_stub_count"),
        # same commit: the next free OOL stub; feature-detected like the others
        ool_stub_index=arch("ool_stub_index"),
        livepatch=livepatch,
        address=address,
    )


@dataclass(frozen=True)
class TaskInfo:
    """One task.

    :param pid: ``task->pid``
    :param comm: ``task->comm``
    :param stack: lowest address of the kernel stack (``task->stack``, or the
        ``thread_info`` base on pre-THREAD_INFO_IN_TASK kernels)
    :param stack_size: ``THREAD_SIZE``
    :param livepatch_sp: ``thread_info.livepatch_sp`` (``None`` without livepatch)
    :param thread_info_in_task: the livepatch stack starts at ``stack + 8``
        (THREAD_INFO_IN_TASK) rather than above ``struct thread_info``
    :param thread_info_size: ``sizeof(struct thread_info)`` for the older layout
    :param ksp: saved kernel stack pointer (``task->thread.ksp``) of a sleeping task
    :param address: address of the ``struct task_struct``
    """

    pid: int
    comm: str
    stack: int
    stack_size: int
    livepatch_sp: int | None = None
    thread_info_in_task: bool = True
    thread_info_size: int = 0
    ksp: int | None = None
    address: int | None = None


@dataclass(frozen=True)
class SymbolInfo:
    """A symbolized address: ``name+offset/size [owner]``.

    :param owner: ``"vmlinux"`` or the module name
    """

    name: str
    address: int
    size: int
    owner: str

    @classmethod
    def make(cls, name: str, address: int, size: int, owner: str) -> SymbolInfo:
        """``SymbolInfo(name, address, size, owner)``, about half the cost of the
        frozen ``__init__``: one per named address (an audit of Debian sid names
        ~14,000)."""
        info: Any = _new(_SymbolInfoBag)
        info.name = name
        info.address = address
        info.size = size
        info.owner = owner
        info.__class__ = cls
        return info  # type: ignore[no-any-return]

    def format(self, address: int) -> str:
        """Render ``address`` as ``name+0xoff/0xsize`` like the kernel's %pS."""
        text = f"{self.name}+{address - self.address:#x}"
        if self.size:  # ELF symbols from assembly often have no size
            text += f"/{self.size:#x}"
        return text if self.owner == "vmlinux" else f"{text} [{self.owner}]"


class _SymbolInfoBag:
    """A plain object (``__dict__``, no slots: :class:`SymbolInfo`'s layout) whose
    fields are stored directly before its class becomes :class:`SymbolInfo`."""


_new = object.__new__


@dataclass(frozen=True)
class StackFrame:
    """One frame of an unwound stack, innermost first.

    :param pc: program counter / return address
    :param sp: stack pointer of the frame, when known
    :param inline: name of the inlined function this frame stands for, when the
        back end's unwinder knows (drgn lists inlined calls as frames of their own)
    """

    pc: int
    sp: int | None = None
    inline: str | None = None


@runtime_checkable
class Target(Protocol):
    """What the core needs from a kernel, live or dumped.

    ``kind`` is ``"vmcore"``, ``"live"``, ``"qemu"``, ``"gdb"`` or ``"synthetic"``.
    Implementations never write target memory.

    ``damage`` lists ``(address or None, message)`` for structures the back end
    could not walk (a broken module or task list, an unreadable ``struct
    module``, a truncated core file); the reports show each as a
    ``MEMORY_UNREADABLE`` finding instead of failing.  It grows while
    :meth:`modules` and :meth:`tasks` are walked.  A list that loops or leaves
    kernel memory is a ``LIST_CORRUPT`` finding instead (the damage list's
    ``codes``, see :class:`klpinspect.backends.layout.Damage`).
    """

    kind: str

    @property
    def damage(self) -> Sequence[tuple[int | None, str]]:
        """Structures that could not be walked: ``(address or None, message)``."""
        ...

    def kernel(self) -> KernelInfo:
        """Kernel-wide facts (computed once)."""
        ...

    def read(self, address: int, size: int) -> bytes:
        """Read ``size`` bytes of kernel virtual memory.

        :raises klpinspect.errors.MemoryReadError: if any byte is unreadable
        """
        ...

    def symbolize(self, address: int) -> SymbolInfo | None:
        """The symbol containing ``address`` (kallsyms or debug info), if any."""
        ...

    def modules(self) -> Iterable[ModuleInfo]:
        """Every loaded module, in ``modules`` list order."""
        ...

    def tasks(self) -> Iterable[TaskInfo]:
        """Every task (threads included)."""
        ...

    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        """The back end's own unwind of task ``pid``, innermost frame first.

        :raises klpinspect.errors.KlpError: if there is no such task
        """
        ...


def try_symbolize(target: Target, address: int) -> SymbolInfo | None:
    """``target.symbolize(address)``, or ``None`` where the back end cannot say
    (a damaged symbol table is no reason to stop an audit)."""
    try:
        return target.symbolize(address)
    except KlpError:
        return None
