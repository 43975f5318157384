"""The drgn back end of the Target protocol: plain facts from a ``drgn.Program``.

:class:`DrgnTarget` turns ``struct module``, ``struct task_struct`` and the
paca into the plain dataclasses of :mod:`klpinspect.target`, using drgn's
helpers (``for_each_module``, ``for_each_task``, ``find_task``,
``prog.symbol``, ``prog.stack_trace``).  Kernel differences are found by
feature detection (does the member exist?), never by version number.
Module symbols come from the module's own kallsyms when there is no module
debug info, so nothing here needs more than the vmlinux debug info.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import drgn
from drgn import Object

from klpinspect.backends import layout
from klpinspect.backends.drgn.btf_finder import (
    KallsymsSymbols,
    debuginfo_source,
    kallsyms_symtab,
    retire_lazy_finders,
)
from klpinspect.backends.drgn.program import core_notes, vmcoreinfo_release
from klpinspect.backends.drgn.symtab_finder import symtab_symbols
from klpinspect.backends.drgn.view import DrgnKernel
from klpinspect.errors import KlpError, MemoryReadError, TargetError
from klpinspect.symtab import ElfSymbols, read_elf_symbols
from klpinspect.target import (
    KernelInfo,
    ModuleInfo,
    StackFrame,
    SymbolInfo,
    TaskInfo,
)

__all__ = ("DrgnTarget",)

# vmlinux addresses named through drgn's Program.symbol before the .symtab is indexed
_FEW_LOOKUPS = 64


class DrgnTarget(layout.LayoutQueries):
    """The :class:`klpinspect.target.Target` protocol over a ``drgn.Program``.

    :param prog: a Linux kernel program with vmlinux debug info loaded, or
        BTF + kallsyms finders (:mod:`klpinspect.backends.drgn.btf_finder`)
    :param kind: ``"vmcore"``, ``"live"`` or ``"qemu"``
    """

    _k: DrgnKernel

    def __init__(self, prog: drgn.Program, kind: str = "vmcore") -> None:
        self.prog = prog
        self.kind = kind
        self._k = DrgnKernel(prog)
        self._kernel: KernelInfo | None = None
        self._owners: layout.ModuleOwners | None = None
        self._symbol_starts: list[int] | None = None
        self._vmlinux_symbols: ElfSymbols | KallsymsSymbols | None = None
        self._vmlinux_symbols_tried = False
        #: where the kernel's types and symbols came from: "dwarf" or "btf+kallsyms"
        self.debuginfo: str | None = debuginfo_source(prog)
        retire_lazy_finders(prog)  # the plugin's, once they can only say no
        self._vmlinux_lookups = 0
        self._expected_lookups = 0
        self._module_symbols: dict[int, ElfSymbols] = {}
        #: whether a forked child may read this target beside this process
        #: (klpinspect.forked): api.open_target sets it for a vmcore file
        #: read without DWARF (libdrgn's DWARF indexing runs OpenMP threads,
        #: which a forked child cannot use)
        self.forkable = False
        #: structures that could not be walked (see Target.damage)
        self.damage = layout.Damage((None, n) for n in core_notes(prog))

    # --- memory and symbols ---------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        """Read kernel virtual memory (never writes).

        :raises MemoryReadError: if any byte is unreadable
        """
        try:
            data: bytes = self.prog.read(address, size)
        except drgn.FaultError as e:
            raise MemoryReadError(address, size, str(e)) from None
        except (ValueError, OverflowError) as e:
            raise MemoryReadError(address, size, str(e)) from None
        return data

    def _module_kallsyms(self, mod_addr: int) -> ElfSymbols:
        """The kallsyms of the module at ``mod_addr`` (:func:`layout.module_kallsyms`:
        two bulk reads, only for a module an address falls in), once.

        Modules without debug info have no ELF symbol table in drgn 0.3.0;
        their kallsyms are in memory.  drgn's ``module_kallsyms`` helper makes a
        Python ``drgn.Symbol`` of every symbol of every module instead (~0.8 s
        for Debian sid's 50 modules).
        """
        table = self._module_symbols.get(mod_addr)
        if table is None:
            table = layout.module_kallsyms(self._k, self._module_owners(), mod_addr)
            self._module_symbols[mod_addr] = table
        return table

    def _size_to_next_symbol(self, address: int) -> int:
        """Distance from ``address`` to the next symbol, as kallsyms sizes symbols.

        For assembler labels with no ELF size (``livepatch_handler``), so
        that ``name+off/size`` reads like the kernel's ``%pS``.
        """
        if self._symbol_starts is None:
            # prog.symbols() is one call into drgn (a few ms for 60k symbols).
            self._symbol_starts = sorted({int(s.address) for s in self.prog.symbols()})
        i = bisect.bisect_right(self._symbol_starts, address)
        return self._symbol_starts[i] - address if i < len(self._symbol_starts) else 0

    def _module_addresses_unnamed(self) -> bool:
        """:func:`~klpinspect.backends.drgn.kallsyms.module_addresses_unnamed`, once."""
        found: bool | None = getattr(self, "_unnamed", None)
        if found is None:
            from klpinspect.backends.drgn.kallsyms import module_addresses_unnamed

            found = self._unnamed = module_addresses_unnamed(self.prog)
        return found

    def _module_owners(self) -> layout.ModuleOwners:
        if self._owners is None:
            try:
                self._owners = layout.ModuleOwners.build(self._k, self.damage)
            except (MemoryReadError, TargetError):
                self._owners = layout.ModuleOwners([])
        return self._owners

    def _vmlinux_symtab(self) -> ElfSymbols | KallsymsSymbols | None:
        """The kernel's ELF symbol table, read once from its debug file.

        drgn 0.3.0's ``Program.symbol`` costs ~250 us an address on a vmlinux;
        an audit resolves about a thousand stub targets, so a bisect over the
        same ``.symtab`` (with libdrgn's tie-breaking rules) pays for itself.
        """
        if not self._vmlinux_symbols_tried:
            self._vmlinux_symbols_tried = True
            given = symtab_symbols(self.prog)  # -s VMLINUX without its DWARF
            if given is not None:
                self._vmlinux_symbols = given
                return given
            try:
                path = self.prog.main_module().debug_file_path
            except (LookupError, AttributeError):
                path = None
            if path:
                try:
                    self._vmlinux_symbols = read_elf_symbols(path)
                except TargetError:
                    pass
            else:
                self._vmlinux_symbols = kallsyms_symtab(self.prog)
        return self._vmlinux_symbols

    def expect_symbols(self, count: int) -> None:
        """A hint from the checks: about ``count`` more addresses are to be named.

        Past :data:`_FEW_LOOKUPS` in all, the ``.symtab`` index is the cheaper
        way from the first address on (drgn's ``Program.symbol`` costs ~0.7 ms
        an address on a distribution vmlinux: 64 of them, ~50 ms, before the
        index an audit builds anyway).  Names do not change: both ways follow
        libdrgn's rules."""
        self._expected_lookups += count
        if self._expected_lookups > _FEW_LOOKUPS:
            self._vmlinux_lookups = max(self._vmlinux_lookups, _FEW_LOOKUPS)

    def _few_vmlinux_lookup(self, address: int) -> SymbolInfo | None:
        """The first few vmlinux addresses through drgn's ``Program.symbol``.

        A backtrace names ~10 addresses: drgn's own look-up (~250 us each)
        beats indexing the whole ``.symtab`` (~0.3 s for a distribution
        vmlinux's 125,000 symbols).  Both name alike (:class:`ElfSymbols`
        follows libdrgn's rules); only a label with no ELF size needs the
        table, for its kallsyms-style size from one scan (no sort).
        """
        self._vmlinux_lookups += 1
        # a table read for a label's size is not indexed yet (ElfSymbols.from_symtab):
        # drgn stays the cheaper way for the few
        table = self._vmlinux_symbols
        if self._vmlinux_lookups > _FEW_LOOKUPS or (
                table is not None and getattr(table, "indexed", True)):
            return None
        try:
            sym = self.prog.symbol(address)
        except LookupError:
            return None
        start, size = int(sym.address), int(sym.size)
        if size:
            return SymbolInfo(sym.name, start, size, "vmlinux")
        table = self._vmlinux_symtab()
        if table is None:
            return None
        return SymbolInfo(sym.name, start, table.size_to_next(start), "vmlinux")

    def symbolize(self, address: int) -> SymbolInfo | None:
        """The symbol containing ``address`` with its owner (``vmlinux`` or a module)."""
        owner, mod_addr = self._module_owners().owner(address)
        symtab = None
        if owner == "vmlinux":
            few = self._few_vmlinux_lookup(address)
            if few is not None:
                return few
            symtab = self._vmlinux_symtab()
        if symtab is not None:
            found = symtab.lookup(address)
            if found is not None:
                start, size, name = found
                return SymbolInfo.make(name, start, size or symtab.size_to_next(start), owner)
        try:
            if mod_addr is not None and self._module_addresses_unnamed():
                raise LookupError  # no finder knows modules: straight to their kallsyms
            sym = self.prog.symbol(address)
        except LookupError:
            table = self._module_kallsyms(mod_addr) if mod_addr is not None else None
            hit = table.lookup(address) if table is not None else None
            if table is None or hit is None:
                return None
            start, size, name = hit
            return SymbolInfo.make(name, start, size or table.size_to_next(start), owner)
        start, size = int(sym.address), int(sym.size)
        if not size:
            size = self._size_to_next_symbol(start)
        return SymbolInfo.make(sym.name, start, size, owner)

    def symbolize_many(self, addresses: Sequence[int]) -> list[SymbolInfo | None]:
        """:meth:`symbolize` of each address; a module's addresses named together
        from its kallsyms where no drgn finder knows modules (an audit's ~12,000
        OOL stub sites on Debian's 7.2 kernel)."""
        out: list[SymbolInfo | None] = [None] * len(addresses)
        owners = self._module_owners()
        batches: dict[int, tuple[str, list[int]]] = {}
        unnamed = self._module_addresses_unnamed()
        for i, address in enumerate(addresses):
            owner, mod_addr = owners.owner(address)
            if owner != "vmlinux" and mod_addr is not None and unnamed:
                batches.setdefault(mod_addr, (owner, []))[1].append(i)
            else:
                out[i] = self.symbolize(address)
        layout.name_from_module_kallsyms(addresses, batches, self._module_kallsyms, out)
        return out

    # --- kernel ---------------------------------------------------------------

    def kernel(self) -> KernelInfo:
        """Kernel-wide facts, computed once.

        :raises TargetError: if the kernel's own data cannot be read
        """
        if self._kernel is None:
            try:
                self._kernel = self._compute_kernel()
            except MemoryReadError as e:
                raise TargetError(
                    f"cannot read the kernel's own data ({e.reason}): is the core truncated, "
                    "or the debug info for another kernel?"
                ) from None
        return self._kernel

    def _compute_kernel(self) -> KernelInfo:
        platform = self.prog.platform
        if platform is None or platform.arch != drgn.Architecture.PPC64:
            # Only ppc64 has these stubs; "ppc64le" must not name any little-endian kernel.
            arch = "unknown" if platform is None else platform.arch.name.lower()
            raise TargetError(f"not a ppc64 kernel: the program's architecture is {arch}")
        info = layout.kernel_info(self._k)
        expected = vmcoreinfo_release(self.prog)
        if expected is not None and info.release != expected:
            # KERNELOFFSET or the page tables are off: every read is of wrong memory
            raise TargetError(
                f"the kernel image in this target says release {info.release!r}, its "
                f"VMCOREINFO says {expected!r}: wrong --vmcoreinfo, or a dump of another kernel?"
            )
        return info

    # --- modules and tasks: the layout layer ----------------------------------------

    def modules(self) -> Iterator[ModuleInfo]:
        """Every loaded module, in ``modules`` list order.

        A module whose ``struct module`` cannot be read is left out and a broken
        list ends the walk; both are recorded in :attr:`damage`, not raised.
        """
        return layout.modules(self._k, self.damage)

    def tasks(self) -> Iterator[TaskInfo]:
        """Every task (threads included), by pid; damage recorded as for :meth:`modules`."""
        return iter(layout.tasks(self._k, self.damage))

    def task_info(self, task: Object) -> TaskInfo:
        """Plain facts about one task, also one :meth:`tasks` does not visit (a
        CPU's idle task): what :func:`klpinspect.api.backtrace` unwinds by address.

        :param task: ``struct task_struct *``
        """
        address = int(task.value_())
        view = self._k.object("struct task_struct", address)
        return layout.task_info(self._k, address, view, layout.thread_size(self._k))


    def _find_task(self, pid: int) -> Object:
        # the task list, as tasks() walks it: find_task() walks the pid idr,
        # which a damaged dump may have lost where the list survives
        for task in self.tasks():
            if task.pid == pid and task.address is not None:
                return Object(self.prog, "struct task_struct *", value=task.address)
        raise KlpError(f"no task with pid {pid}")

    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        """drgn's unwind of task ``pid``, innermost frame first.

        :raises KlpError: if there is no such task or it cannot be unwound
        """
        return self.task_stack_trace(self._find_task(pid), f"pid {pid}")

    def task_stack_trace(self, task: Object, what: str) -> Sequence[StackFrame]:
        """drgn's unwind of ``task``, innermost frame first (also a task
        :meth:`tasks` does not visit, such as a CPU's idle task).

        :param task: ``struct task_struct *``
        :param what: the task as error messages name it
        :raises KlpError: if it cannot be unwound
        """
        try:
            trace = self.prog.stack_trace(task)
        except (ValueError, drgn.FaultError) as e:
            raise KlpError(f"cannot unwind {what}: {e}") from None
        frames = []
        for frame in trace:
            try:
                sp: int | None = int(frame.sp)
            except LookupError:
                sp = None
            inline = frame.name if frame.is_inline else None
            frames.append(StackFrame(pc=int(frame.pc), sp=sp, inline=inline))
        if frames and not _on_cpu(task):
            frames = _switched_out(self.prog, frames)
        return frames


def _on_cpu(task: Object) -> bool:
    """Whether drgn unwinds ``task`` from a CPU's registers (``task->on_cpu``,
    CONFIG_SMP), not from the switch frame ``thread.ksp`` points to."""
    try:
        return bool(task.on_cpu)
    except (AttributeError, LookupError, drgn.FaultError):
        return False


def _switched_out(prog: drgn.Program, frames: list[StackFrame]) -> list[StackFrame]:
    """The innermost frame of a switched-out task, inlined functions as at a call.

    Its pc is the return address ``_switch`` saved in ``__switch_to``, yet drgn
    marks the frame interrupted and so looks the inlined functions up at the pc
    itself: where the call is the function's last instruction before inlined
    code (no TOC restore after ``bl _switch`` on a PCREL kernel: ``get_current``
    follows it), a frame for code the task has not reached appears.  The
    kernel's own ``arch_stack_walk`` (``/proc/PID/stack``) and the gdb back end
    (:func:`klpinspect.backends.gdb.target._inlined_at`) name the call at
    ``pc - 4``; so does this, with drgn's ``Program.source_location``.
    """
    pc = frames[0].pc
    lead = next((i for i, f in enumerate(frames) if f.inline is None), None)
    if lead is None:
        return frames
    locate = getattr(prog, "source_location", None)
    try:
        # SourceLocation.name is a method (it reads the DWARF on demand)
        names = [loc.name() for loc in locate(pc - 4)] if locate is not None else []
    except (LookupError, ValueError, drgn.FaultError):
        names = []
    inlined = [StackFrame(pc=pc, sp=frames[lead].sp, inline=n) for n in names[:-1] if n]
    return inlined + frames[lead:]
