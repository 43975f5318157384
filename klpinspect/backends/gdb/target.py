"""The gdb back end of the Target protocol: plain facts from gdb's selected inferior.

Runs inside gdb's embedded Python (``import gdb``); the core never imports it.
Memory is :class:`~klpinspect.backends.gdb.memory.GdbMemory` (core-file
dispatch, radix translation, chunk cache), types and the struct view are in
:mod:`klpinspect.backends.gdb.types`, and the kernel's layouts (modules,
tasks, the paca) come from :mod:`klpinspect.backends.layout`, shared with the
drgn back end.  Symbols: vmlinux's ELF ``.symtab`` from the file gdb loaded
(names with sizes, as ``%pS`` and drgn print them; gdb's Python API has no
minimal symbol sizes) and each module's own kallsyms (``mod->kallsyms``),
since gdb knows only vmlinux.  Stacks: the back chain from ``thread.ksp``,
with the functions gdb's DWARF says were inlined at each call as frames of
their own (as drgn lists them).
"""

from __future__ import annotations

import bisect
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

from klpinspect.backends import layout
from klpinspect.backends.btflayout import BtfTypes
from klpinspect.backends.elfcore import core_file_truncation, read_elf_core
from klpinspect.backends.gdb.memory import (
    CHUNK_SIZE,
    MAX_PREFETCH,
    GdbMemory,
    RadixSetup,
    core_file_path,
    vmcoreinfo_page_size,
)
from klpinspect.backends.gdb.types import GdbKernel, GdbTypes
from klpinspect.btf import Btf, BtfError
from klpinspect.errors import KlpError, MemoryReadError, TargetError
from klpinspect.livepatch import back_chain_stack_trace
from klpinspect.ppc64.radix import check_radix
from klpinspect.symtab import ElfSymbols, elf_has_section, read_elf_symbols
from klpinspect.target import (
    KernelInfo,
    ModuleInfo,
    StackFrame,
    SymbolInfo,
    TaskInfo,
)

# gdb's own module, only inside gdb.  Imported by name so that type checkers
# do not mistake the checkout's gdb/ directory for it.  Outside gdb only the
# pure helpers (ElfSymbols, read_elf_symbols) work; tests use them.
try:
    gdb: Any = importlib.import_module("gdb")
except ImportError:
    gdb = None

__all__ = (
    "CHUNK_SIZE",
    "ElfSymbols",
    "GdbTarget",
    "read_elf_symbols",
)  # ElfSymbols and read_elf_symbols live in klpinspect.symtab


# The vmlinux symbols the layout layer, the audit and the ftrace view ask for by
# name (klp-audit, klp-stubs, klp-ftrace, klp-lpstack on 6.1 to 7.2), found
# together (ElfSymbols.prefetch_names): ~2 ms a name alone on a distribution
# vmlinux, ~15 ms all of them.  Only a speed-up: a name not here is looked up
# when asked, as before.
_LAYOUT_SYMBOLS = (
    "__cpu_online_mask", "__per_cpu_offset", "__start_BTF", "__stop_BTF", "_einittext",
    "_end", "_etext", "_mcount", "_sinittext", "_stext", "cur_cpu_spec", "ftrace_caller",
    "ftrace_list_end", "ftrace_ops_list", "ftrace_pages_start", "ftrace_regs_caller",
    "init_mm", "init_task", "init_uts_ns", "klp_ftrace_handler", "klp_ops", "klp_patches",
    "klp_transition_patch", "livepatch_handler", "modules", "nr_cpu_ids", "paca_ptrs",
    "runqueues",
)


# The type tags, typedefs and enumerators they ask of the kernel's BTF
# (GdbKernel.btf), found in one pass over its strings (Btf.prefetch_strings):
# as above, only a speed-up.
_LAYOUT_TYPES = (
    "FTRACE_FL_CALL_OPS", "FTRACE_FL_CALL_OPS_EN", "FTRACE_FL_DIRECT", "FTRACE_FL_DIRECT_EN",
    "FTRACE_FL_DISABLED", "FTRACE_FL_ENABLED", "FTRACE_FL_IPMODIFY", "FTRACE_FL_MODIFIED",
    "FTRACE_FL_REGS", "FTRACE_FL_REGS_EN", "FTRACE_FL_TOUCHED", "FTRACE_FL_TRAMP",
    "FTRACE_FL_TRAMP_EN", "FTRACE_OPS_FL_ENABLED", "MOD_INIT_TEXT", "MOD_MEM_NUM_TYPES",
    "MOD_TEXT", "bin_attribute", "cpu_spec", "cpumask", "dyn_ftrace", "ftrace_func_entry",
    "ftrace_hash", "ftrace_ops", "ftrace_ops_hash", "ftrace_page", "func_desc_t", "klp_func",
    "klp_object", "klp_ops", "klp_patch", "mm_struct", "module", "module_sect_attr",
    "paca_struct", "rq", "signal_struct", "task_struct", "thread_info", "thread_union",
    "uts_namespace",
)


def _gdb_error_text(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _gdb_read(address: int, size: int) -> bytes:
    try:
        return bytes(gdb.selected_inferior().read_memory(address, size))
    except (gdb.MemoryError, gdb.error, OverflowError, ValueError) as err:
        raise MemoryReadError(address, size, _gdb_error_text(err)) from None


def _is_core() -> bool:
    conn = gdb.selected_inferior().connection
    return conn is not None and conn.type == "core"


def _info_target() -> str:
    text: str = gdb.execute("info target", to_string=True)
    return text


class GdbTarget(layout.LayoutQueries):
    """The :class:`klpinspect.target.Target` protocol over gdb's selected inferior.

    :raises TargetError: when gdb has no kernel, no target, or not a ppc64 one
    """

    _k: GdbKernel

    kind = "gdb"
    # Where types and symbols come from (report target.debuginfo): gdb reads
    # the vmlinux DWARF it was given.
    debuginfo = "dwarf"

    def __init__(self) -> None:
        self.types = GdbTypes()
        self._kernel: KernelInfo | None = None
        self._symbols: ElfSymbols | None = None
        self._module_symbols: dict[int, ElfSymbols] = {}
        # string tables of the files' .symtab (see _surely_absent), gdb look-ups by name
        self._strtabs: list[bytes] = []
        self._fallback: dict[str, int | None] = {}
        self._image_end: tuple[int | None] | None = None  # vmlinux's _end (symbolize)
        self._owners: layout.ModuleOwners | None = None
        # A core stays a core for this target's life (the commands make a new
        # target when the connection changes): asked once, not on every read.
        core = _is_core()
        self.memory = GdbMemory(_gdb_read, lambda: core, _info_target, self._radix_setup)
        self._check()
        self._k = GdbKernel(
            self.types, self.read, self._symbol_address, self._byteorder, self._before_object,
            self._kernel_btf,
        )
        #: structures that could not be walked (see Target.damage)
        self.damage = layout.Damage()
        self._module_walk = 0  # > 0 inside modules(): struct modules come with their memory
        if _is_core():
            path = core_file_path(_info_target())
            note = core_file_truncation(path) if path else None
            if note:
                self.damage.add(None, note)

    @property
    def reads(self) -> int:
        """Raw ``read_memory`` calls (module memory on a core: translated reads)."""
        return self.memory.reads

    @property
    def bytes_read(self) -> int:
        """Bytes those calls asked for."""
        return self.memory.bytes_read

    @property
    def phys_reads(self) -> int:
        """Physical (linear-map) reads made by the page-table walker."""
        return self.memory.phys_reads

    # --- setup ------------------------------------------------------------------

    def _check(self) -> None:
        if not gdb.objfiles():
            raise TargetError(
                "no kernel loaded: load vmlinux with debug info first "
                "('file vmlinux' or 'symbol-file vmlinux.debug')"
            )
        if not self._has_dwarf():
            raise TargetError(
                "no kernel debug info: 'struct module' is unknown; load vmlinux with "
                "DWARF (e.g. 'symbol-file vmlinux.debug')"
            )
        inferior = gdb.selected_inferior()
        if inferior.connection is None or inferior.pid == 0 and not _is_core():
            raise TargetError(
                "no target: open a dump with 'core-file VMCORE' or connect with "
                "'target remote HOST:PORT'"
            )
        arch = inferior.architecture().name()
        if not arch.startswith("powerpc") or self._type("long").sizeof != 8:
            raise TargetError(f"not a ppc64 target: gdb architecture is {arch}")
        endian = gdb.execute("show endian", to_string=True)
        self._byteorder: str = "big" if "big endian" in endian else "little"

    def _has_dwarf(self) -> bool:
        """Whether gdb has the kernel's DWARF: a loaded file with ``.debug_info``
        (read from its section headers: asking gdb for ``struct module`` expands
        a DWARF unit, 6-37 ms, where the kernel's BTF may answer every type
        question), else gdb's own answer for ``struct module``."""
        for objfile in gdb.objfiles():
            if objfile.filename and elf_has_section(objfile.filename, ".debug_info"):
                return True
        try:
            self._type("struct module")
        except TargetError:
            return False
        return True

    def _kernel_btf(self) -> BtfTypes | None:
        """The kernel's BTF (``__start_BTF`` .. ``__stop_BTF``, ``CONFIG_DEBUG_INFO_BTF``)
        from a core file, for the layout layer's type questions
        (:attr:`GdbKernel.btf`); ``None`` without it, or over a gdbstub (megabytes
        a packet at a time cost more than gdb's own look-ups)."""
        if self.live:
            return None
        elf = self._elf_symbols()
        start, stop = elf.address_of("__start_BTF"), elf.address_of("__stop_BTF")
        if start is None or stop is None or not 0 < stop - start <= 64 << 20:
            return None
        try:
            btf = Btf(self.memory.read_uncached(start, stop - start))
        except (MemoryReadError, BtfError):
            return None
        btf.prefetch_strings(_LAYOUT_TYPES)
        return BtfTypes(btf)

    @property
    def live(self) -> bool:
        """Whether memory can change under us (anything but a core file)."""
        return not _is_core()

    def clear_memory_cache(self) -> None:
        """Forget cached memory (the target ran); types and symbols stay."""
        self.memory.clear()
        self._owners = None
        self._module_symbols = {}

    def _type(self, name: str) -> Any:
        return self.types.type(name)

    # --- memory -------------------------------------------------------------------

    def read(self, address: int, size: int) -> bytes:
        """Read kernel virtual memory (never writes).

        :raises MemoryReadError: if any byte is unreadable
        """
        return self.memory.read(address, size)

    def _radix_setup(self) -> RadixSetup:
        k = self._k
        spec = k.u64(self._symbol_address_required("cur_cpu_spec"))
        features = k.u32(spec + self._offsetof_required("struct cpu_spec", "mmu_features"))
        check_radix(features)  # a hash-MMU dump: say that, before asking for the page size
        init_mm = self._symbol_address_required("init_mm")
        pgd = k.u64(init_mm + self._offsetof_required("struct mm_struct", "pgd"))
        return RadixSetup(features, pgd, 1 << self._page_shift())

    def _offsetof_required(self, type_name: str, member: str) -> int:
        off = self._k.offsetof(type_name, member)
        if off is None:
            raise TargetError(f"no member '{member}' in {type_name}")
        return off

    def _page_shift(self) -> int:
        """PAGE_SHIFT, from the kernel's own data, never a default.

        ``mmu_psize_defs[mmu_virtual_psize].shift`` where the kernel has that
        variable (hash MMU built in); on radix-only kernels
        (``CONFIG_PPC_64S_HASH_MMU=n``) ``mmu_virtual_psize`` is a macro, and the
        VMCOREINFO ``PAGESIZE`` tells it (the core file's note, else the
        kernel's ``vmcoreinfo_data``).  A 4K kernel walked with 64K geometry
        would read the wrong pages.  A core file's own VMCOREINFO note is
        asked first: it says the same (``PAGESIZE`` is ``PAGE_SIZE``) without
        gdb expanding the debug info of ``struct mmu_psize_def`` (~6 ms).

        :raises TargetError: if nothing tells the page size
        """
        if _is_core():
            size = vmcoreinfo_page_size(self._core_vmcoreinfo())
            if size is not None:
                return size.bit_length() - 1
        try:
            idx = self._k.u32(self._symbol_address_required("mmu_virtual_psize"))
            defs = self._symbol_address_required("mmu_psize_defs")
            t = self._type("struct mmu_psize_def")
            shift = self._k.u32(defs + idx * t.sizeof + self.types.offsetof(t, "shift"))
            if shift in (12, 16):
                return shift
        except (TargetError, MemoryReadError):
            pass
        size = vmcoreinfo_page_size(self._vmcoreinfo())
        if size is None:
            raise TargetError(
                "cannot tell the kernel's page size: no mmu_virtual_psize and no "
                "VMCOREINFO PAGESIZE"
            )
        return size.bit_length() - 1

    def _core_vmcoreinfo(self) -> bytes | None:
        """The VMCOREINFO note of the core file gdb opened, if it has one."""
        path = core_file_path(_info_target())
        if path:
            try:
                with open(path, "rb") as f:
                    head = f.read(64)
                    if head[:4] == b"\x7fELF":
                        return read_elf_core(path, f, head).vmcoreinfo or None
            except (OSError, TargetError):
                pass
        return None

    def _vmcoreinfo(self) -> bytes | None:
        """The VMCOREINFO text: the core file's note, else ``vmcoreinfo_data`` in memory."""
        if _is_core():
            note = self._core_vmcoreinfo()
            if note:
                return note
        try:
            data = self._k.u64(self._symbol_address_required("vmcoreinfo_data"))
            size = self._k.u64(self._symbol_address_required("vmcoreinfo_size"))
            if data and 0 < size <= 1 << 16:
                return self.read(data, size)
        except (TargetError, MemoryReadError):
            pass
        return None

    # --- symbols ---------------------------------------------------------------------

    def _symbol_address(self, name: str) -> int | None:
        """Address of a kernel symbol: the ``.symtab`` of the file gdb loaded, else gdb's
        own lookup (a vmlinux without ``.symtab``, a ``static`` variable the table does
        not name; ~10 ms a name, so second).

        gdb's ``&'name'`` finds a minimal symbol (from those same symbol tables)
        or a debug-info symbol; a name neither in any string table nor in gdb's
        symbol index is not looked up that way: such a miss costs gdb 0.05-0.4 s
        on a distribution vmlinux (``_mcount``, ``livepatch_handler`` and
        ``klp_patches`` on a kernel without them: most of the audit's cost there).
        """
        address = self._elf_symbols().address_of(name)
        if address is None and (name[0].isalpha() or name[0] == "_"):
            if name in self._fallback:
                return self._fallback[name]
            found = None
            if not self._surely_absent(name):
                try:
                    value = gdb.parse_and_eval(f"&'{name}'")
                    found = int(value.cast(self._type("unsigned long")))
                except gdb.error:
                    found = None
            self._fallback[name] = found
            return found
        return address

    def _surely_absent(self, name: str) -> bool:
        """Whether gdb's ``&'name'`` cannot succeed: no string table of the loaded
        files holds ``name`` (not even as the tail of a longer one: no minimal
        symbol) and gdb knows no debug-info symbol of that name."""
        self._elf_symbols()
        if not self._strtabs:
            return False  # no .symtab read: gdb's own tables are all there is
        needle = name.encode("ascii", "replace") + b"\0"
        best = self._symbols
        for strtab in self._strtabs:
            # the loaded vmlinux's table knows the names it was asked for at once
            if best is not None and strtab is getattr(best, "_strtab", None):
                if best.in_strtab(name):
                    return False
            elif needle in strtab:
                return False
        try:
            return gdb.lookup_global_symbol(name) is None and (
                gdb.lookup_static_symbol(name) is None
            )
        except gdb.error:
            return False

    def _symbol_address_required(self, name: str) -> int:
        address = self._symbol_address(name)
        if address is None:
            raise TargetError(f"no symbol '{name}' in the kernel")
        return address

    def _elf_symbols(self) -> ElfSymbols:
        if self._symbols is None:
            best: ElfSymbols | None = None
            strtabs: list[bytes] = []
            complete = True
            for objfile in gdb.objfiles():
                if not objfile.filename:
                    continue
                try:
                    syms = read_elf_symbols(objfile.filename)
                except TargetError:
                    complete = False  # gdb may have symbols of it (.dynsym) we have not
                    continue
                # the string table a lookup by name searches (ElfSymbols keeps it)
                strtab = getattr(syms, "_strtab", None)
                if isinstance(strtab, bytes):
                    strtabs.append(strtab)
                else:
                    complete = False
                if best is None or len(syms) > len(best):
                    best = syms
            self._symbols = best if best is not None else ElfSymbols([])
            self._symbols.prefetch_names(_LAYOUT_SYMBOLS)
            # every file's names known, else no name is taken as surely absent
            self._strtabs = strtabs if complete else []
        return self._symbols

    def _module_kallsyms(self, mod_addr: int) -> ElfSymbols:
        """The kallsyms of the module at ``mod_addr`` that name its own memory
        (:func:`layout.module_kallsyms`), read only for modules an address falls in."""
        table = self._module_symbols.get(mod_addr)
        if table is None:
            table = layout.module_kallsyms(self._k, self._module_owners(), mod_addr)
            self._module_symbols[mod_addr] = table
        return table

    def _module_owners(self) -> layout.ModuleOwners:
        if self._owners is None:
            self._owners = layout.ModuleOwners.build(self._k, self.damage)
        return self._owners

    def symbolize(self, address: int) -> SymbolInfo | None:
        """The symbol containing ``address`` with its owner (``vmlinux`` or a module)."""
        elf = self._elf_symbols()
        # vmlinux's table names only the image: a size-0 label such as _end
        # must not swallow module (vmalloc) addresses.
        if self._image_end is None:
            self._image_end = (elf.address_of("_end"),)
        end = self._image_end[0]
        table = elf
        hit = elf.lookup(address) if end is None or address < end else None
        owner, mod_addr = self._module_owners().owner(address)
        if hit is None and mod_addr is not None:
            table = self._module_kallsyms(mod_addr)
            hit = table.lookup(address)
        if hit is None:
            return None
        start, size, name = hit
        if not size:
            size = table.size_to_next(start)
        return SymbolInfo(name, start, size, owner)

    def symbolize_many(self, addresses: Sequence[int]) -> list[SymbolInfo | None]:
        """:meth:`symbolize` of each address; a module's addresses past vmlinux's
        image named together from its kallsyms (``ElfSymbols.lookup_many``: an
        audit's ~12,000 OOL stub sites on Debian's 7.2 kernel)."""
        out: list[SymbolInfo | None] = [None] * len(addresses)
        if self._image_end is None:
            self._image_end = (self._elf_symbols().address_of("_end"),)
        end = self._image_end[0]
        ranges = self._module_owners().ranges  # sorted: ModuleOwners.owner's bisect
        starts = [r[0] for r in ranges]
        batches: dict[int, tuple[str, list[int]]] = {}
        # the last module region found, as far as owner()'s bisect would find it
        # too (up to the next region's start): a module's sites come together
        lo = hi = 0
        where: list[int] = []
        for i, address in enumerate(addresses):
            if not lo <= address < hi:
                k = bisect.bisect_right(starts, address) - 1
                if k < 0 or not ranges[k][0] <= address < ranges[k][1]:
                    lo = hi = 0
                    out[i] = self.symbolize(address)  # vmlinux's, or no module's
                    continue
                start, stop, owner, mod_addr = ranges[k]
                lo, hi = start, min(stop, starts[k + 1]) if k + 1 < len(starts) else stop
                where = batches.setdefault(mod_addr, (owner, []))[1]
            if end is not None and address >= end:
                where.append(i)
            else:
                out[i] = self.symbolize(address)
        layout.name_from_module_kallsyms(addresses, batches, self._module_kallsyms, out)
        return out

    # --- kernel -----------------------------------------------------------------------

    def kernel(self) -> KernelInfo:
        """Kernel-wide facts, computed once."""
        if self._kernel is None:
            try:
                self._kernel = layout.kernel_info(self._k)
            except MemoryReadError as err:
                raise TargetError(f"cannot read init_uts_ns: {err}") from None
        return self._kernel

    # --- modules and tasks: the layout layer ----------------------------------------------

    def modules(self) -> Iterator[ModuleInfo]:
        """Every loaded module, in ``modules`` list order; damage recorded, not raised.

        As :func:`layout.modules`, with (core file) the module memory around
        each ``struct module`` read in windows that neighbouring modules share
        (its kallsyms and its text with ``.stubs`` are in there): a fraction
        of a read a module instead of one per object.
        """
        return self._modules_prefetched()

    def _modules_prefetched(self) -> Iterator[ModuleInfo]:
        self._module_walk += 1
        try:
            yield from layout.modules(self._k, self.damage, prefetch=self._prefetch_text)
        finally:
            self._module_walk -= 1

    def _before_object(self, type_name: str, address: int) -> None:
        """Before :meth:`modules` reads a ``struct module`` from a core file: the
        window of module memory around it in the same read
        (:meth:`GdbMemory.prefetch_window`), so that its kallsyms, its text and
        its neighbours' come with it.  Not for the other walks (the module
        owners a backtrace symbolizes with): they need the ``struct module``
        alone."""
        if self._module_walk and type_name == "struct module":
            self.memory.prefetch_window(address)

    def _prefetch_text(self, mod: Any) -> None:
        """Read ``mod``'s core text into the cache (see :meth:`modules`).

        On a core file the windows of module memory holding it
        (:meth:`GdbMemory.prefetch_window`: usually read already with a
        ``struct module``); where the page tables cannot be walked, the text
        alone, or where it shares one allocation with the ``struct module``
        itself (``mod->core_layout`` before 6.4, ac3b43283923 "module:
        replace module_layout with module_memory") that whole allocation, the
        module's kallsyms (``mod->core_kallsyms``) at its end included.

        Core files only: a local read costs the same for 64 KiB as for 4;
        over a gdbstub the bytes are the cost (a packet per few KiB), and
        the ``.stubs`` read alone is cheaper.
        """
        if self.live:
            return
        for start, end in layout.module_text_ranges(self._k, mod)[:1]:  # core text
            if self.memory.prefetch_window(start, end):
                continue
            here = mod.address()
            for base, limit in layout.module_regions(self._k, mod):
                if base <= start < limit and base <= here < limit and limit - base <= MAX_PREFETCH:
                    start, end = base, limit
                    break
            self.memory.prefetch(start, end - start)

    def tasks(self) -> Iterator[TaskInfo]:
        """Every task (threads included), by pid; damage recorded as for :meth:`modules`."""
        return iter(layout.tasks(self._k, self.damage))


    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        """Back-chain unwind of task ``pid`` from ``task->thread.ksp``, innermost first.

        :raises KlpError: if there is no such task or its stack cannot be read
        """
        for task in self.tasks():
            if task.pid == pid:
                break
        else:
            raise KlpError(f"no task with pid {pid}")
        if task.ksp is None or not task.stack:
            raise KlpError(f"cannot unwind pid {pid}: no saved stack pointer")
        try:
            # the kernel's arch_stack_walk order, from __switch_to's frame
            chain = back_chain_stack_trace(self, task, self._byteorder)
        except MemoryReadError as err:
            raise KlpError(f"cannot unwind pid {pid}: {err}") from None
        frames: list[StackFrame] = []
        for f in chain:
            frames.extend(StackFrame(pc=f.pc, sp=f.sp, inline=n) for n in _inlined_at(f.pc))
            frames.append(f)
        return frames


# -- gdb.Value helpers ---------------------------------------------------------------


def _inlined_at(return_address: int) -> list[str]:
    """Functions inlined at the call before ``return_address``, innermost first.

    From the DWARF lexical blocks gdb keeps (vmlinux only): drgn lists each
    as a frame of its own, and so do we.  The call instruction is the one
    before the return address, hence ``- 4``.
    """
    try:
        block = gdb.block_for_pc(return_address - 4)
    except (RuntimeError, gdb.error):
        return []
    names: list[str] = []
    while block is not None and not block.is_global and not block.is_static:
        if block.function is not None:
            names.append(block.function.name)
        block = block.superblock
    return names[:-1]  # the last one is the function the frame belongs to
