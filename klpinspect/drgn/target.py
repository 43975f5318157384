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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import drgn
from drgn import Object, cast, offsetof, sizeof
from drgn.helpers.linux.kallsyms import module_kallsyms
from drgn.helpers.linux.module import for_each_module, module_address_regions
from drgn.helpers.linux.pid import find_task, for_each_task

from klpinspect.drgn.program import core_notes, vmcoreinfo_release
from klpinspect.errors import KlpError, MemoryReadError, TargetError
from klpinspect.stackcheck import ListCorruption, guard_list
from klpinspect.symtab import ElfSymbols, read_elf_symbols
from klpinspect.target import (
    KernelInfo,
    ModuleInfo,
    StackFrame,
    SymbolInfo,
    TaskInfo,
    make_module_info,
)

__all__ = (
    "DrgnTarget",
    "kernel_toc",
    "module_section_addresses",
    "module_section_sizes",
    "module_text_ranges",
    "thread_size",
)

# Name of the symbol finder that adds module kallsyms to the program.
_KALLSYMS_FINDER = "klpinspect_module_kallsyms"


def _opt_int(obj: Object, member: str) -> int | None:
    """``obj->member`` as an int, or ``None`` if the kernel has no such member."""
    try:
        return int(obj.member_(member).value_())
    except LookupError:
        return None


def _symbol_address(prog: drgn.Program, name: str) -> int | None:
    try:
        return int(prog.symbol(name).address)
    except LookupError:
        return None


def _function_entry(prog: drgn.Program, name: str, abi: int) -> int | None:
    """Where function ``name``'s code starts.

    On ELFv1 the plain symbol is the function descriptor in ``.opd`` (an object)
    and the code is ``.name``; stubs hold the code address (the descriptor's
    first doubleword), so compare against that.
    """
    if abi == 1:
        dotted = _symbol_address(prog, "." + name)
        if dotted is not None:
            return dotted
        try:
            sym = prog.symbol(name)
            if sym.kind == drgn.SymbolKind.OBJECT:
                return int(prog.read_u64(sym.address))
        except (LookupError, drgn.FaultError):
            pass
    return _symbol_address(prog, name)


def _address(obj: Object) -> int:
    """The address a pointer ``Object`` holds."""
    return int(obj.value_())


def _string(obj: Object) -> str:
    data: bytes = obj.string_()
    return data.decode("utf-8", "replace")


def kernel_toc(prog: drgn.Program) -> tuple[int | None, str]:
    """The kernel TOC (r2) and where it came from.

    ``paca_ptrs[0]->kernel_toc`` is what module ftrace stubs load at run time
    (right for a relocated kernel too); the vmlinux ``.TOC.`` symbol is the
    link-time value.

    :returns: ``(toc, "paca")``, ``(toc, ".TOC.")`` or ``(None, "none")``
    """
    try:
        toc = int(prog["paca_ptrs"][0].kernel_toc.value_())
        if toc:
            return toc, "paca"
    except (LookupError, AttributeError, drgn.FaultError):
        pass
    # PCREL kernels (6.4+) have no kernel_toc in the paca, and no TOC at all.
    toc_sym = _symbol_address(prog, ".TOC.")
    if toc_sym is not None:
        return toc_sym, ".TOC."
    return None, "none"


def thread_size(prog: drgn.Program) -> int:
    """``THREAD_SIZE``: the size of ``union thread_union`` (16 KiB if unknown)."""
    try:
        return sizeof(prog.type("union thread_union")) or 16384
    except LookupError:
        return 16384


def _sect_attrs_sections(mod: Object) -> dict[str, int]:
    """Section addresses from ``mod->sect_attrs`` (``/sys/module/<m>/sections``)."""
    try:
        attrs = mod.sect_attrs
    except AttributeError:  # !CONFIG_KALLSYMS || !CONFIG_SYSFS
        return {}
    if not attrs:
        return {}
    out: dict[str, int] = {}
    try:
        n = int(attrs.nsections)
    except AttributeError:
        # 7.x (commit "module: sysfs: use bin_attribute::private for section
        # addresses"): attrs[] are bin_attributes, the address is in
        # ->private and grp.bin_attrs is NULL-terminated.
        grp = attrs.grp
        try:
            battrs = grp.bin_attrs_new
        except AttributeError:
            battrs = grp.bin_attrs
        i = 0
        while battrs[i]:
            battr = battrs[i]
            out[_string(battr.attr.name)] = int(cast("unsigned long", battr.private))
            i += 1
        return out
    # 5.10 ... 6.x: struct module_sect_attr { struct bin_attribute battr; unsigned long address; }
    for i in range(n):
        a = attrs.attrs[i]
        out[_string(a.battr.attr.name)] = int(a.address)
    return out


def _klp_sechdrs(mod: Object) -> list[tuple[str, int, int, int]]:
    """``(name, sh_addr, sh_size, sh_flags)`` of every section of a livepatch module.

    ``mod->klp_info`` keeps the module's ELF section headers with their final
    addresses (``copy_module_elf()``, CONFIG_LIVEPATCH).
    """
    try:
        if not mod.klp:
            return []
        info = mod.klp_info
    except AttributeError:
        return []
    if not info:
        return []
    prog = mod.prog_
    shnum = int(info.hdr.e_shnum)
    if not shnum or not info.sechdrs or not info.secstrings:
        return []
    # One read for the whole header table.
    shdrs = Object(
        prog,
        prog.array_type(info.sechdrs.type_.type, shnum),
        address=int(info.sechdrs.value_()),
    ).read_()
    shstrndx = int(info.hdr.e_shstrndx)
    if not 0 < shstrndx < shnum:
        return []
    strtab = prog.read(int(info.secstrings.value_()), int(shdrs[shstrndx].sh_size))
    out = []
    for i in range(1, shnum):
        sh = shdrs[i]
        start = int(sh.sh_name)
        name = strtab[start : strtab.find(b"\0", start)]
        out.append(
            (name.decode("ascii", "replace"), int(sh.sh_addr), int(sh.sh_size), int(sh.sh_flags))
        )
    return out


def module_section_addresses(mod: Object) -> dict[str, int]:
    """Section name -> load address of a module.

    From ``mod->sect_attrs`` (what sysfs shows: every ``SHF_ALLOC`` section
    with a size), else from ``klp_info`` for a livepatch module.

    :param mod: ``struct module *``
    """
    secs = _sect_attrs_sections(mod)
    if not secs:
        secs = {name: addr for name, addr, size, flags in _klp_sechdrs(mod) if flags & 2 and addr}
    return secs


def module_section_sizes(mod: Object) -> dict[str, int]:
    """Section name -> size, known only for livepatch modules (``klp_info``).

    :param mod: ``struct module *``
    """
    return {name: size for name, addr, size, flags in _klp_sechdrs(mod) if flags & 2 and addr}


def module_text_ranges(mod: Object) -> list[tuple[int, int]]:
    """``[start, end)`` of the module's executable memory (core and init text).

    :param mod: ``struct module *``
    """
    prog = mod.prog_
    ranges = []
    try:
        # 6.4+ (commit ac3b43283923 "module: replace module_layout with
        # module_memory"): mod->mem[MOD_TEXT], mod->mem[MOD_INIT_TEXT].
        mems = mod.mem
    except AttributeError:
        mems = None
    if mems is not None:
        for kind in ("MOD_TEXT", "MOD_INIT_TEXT"):
            try:
                mem = mems[int(prog.constant(kind).value_())]
            except LookupError:
                continue
            base, size = int(mem.base.value_()), int(mem.size)
            if base and size:
                ranges.append((base, base + size))
        return ranges
    try:
        layouts = [mod.core_layout, mod.init_layout]
        for layout in layouts:
            base, size = int(layout.base.value_()), int(layout.text_size)
            if base and size:
                ranges.append((base, base + size))
    except AttributeError:
        # Before 4.5 (commit 7523e4dc5057 "module: use a structure to
        # encapsulate layout"): module_core/core_text_size in struct module.
        for kind in ("core", "init"):
            base = int(mod.member_(f"module_{kind}").value_())
            size = int(mod.member_(f"{kind}_text_size"))
            if base and size:
                ranges.append((base, base + size))
    return ranges


class DrgnTarget:
    """The :class:`klpinspect.target.Target` protocol over a ``drgn.Program``.

    :param prog: a Linux kernel program with vmlinux debug info loaded
    :param kind: ``"vmcore"``, ``"live"`` or ``"qemu"``
    """

    def __init__(self, prog: drgn.Program, kind: str = "vmcore") -> None:
        self.prog = prog
        self.kind = kind
        self._kernel: KernelInfo | None = None
        self._thread_size: int | None = None
        self._owners: list[tuple[int, int, str]] | None = None
        self._owner_starts: list[int] = []
        self._symbol_starts: list[int] | None = None
        self._vmlinux_symbols: ElfSymbols | None = None
        self._vmlinux_symbols_tried = False
        # (address, message) of structures that could not be walked; see Target
        self.damage: list[tuple[Any, ...]] = [(None, n) for n in core_notes(prog)]

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

    def _enable_module_kallsyms(self) -> None:
        """Add module kallsyms to the program's symbol finders, once.

        Modules without debug info have no ELF symbol table in drgn 0.3.0;
        their kallsyms (``mod->kallsyms``) are in memory.
        """
        prog = self.prog
        if _KALLSYMS_FINDER in prog.registered_symbol_finders():
            return
        symbols: list[drgn.Symbol] = []
        for mod in self._for_each_module():
            try:
                regions = [(s, s + n) for s, n in module_address_regions(mod) if s and n]
                # A livepatch module keeps its resolved SHN_UNDEF/klp symbols
                # too (kallsyms type 'u'): only its own memory names it.
                symbols.extend(
                    sym
                    for sym in module_kallsyms(mod)
                    if any(s <= sym.address < e for s, e in regions)
                )
            except (drgn.FaultError, LookupError, AttributeError, IndexError):
                continue  # a module whose kallsyms cannot be read: no names
        # Last, so debug info symbols win where both exist.
        prog.register_symbol_finder(
            _KALLSYMS_FINDER,
            drgn.SymbolIndex(symbols),
            enable_index=len(prog.enabled_symbol_finders()),
        )
        self._symbol_starts = None

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

    def _module_ranges(self) -> list[tuple[int, int, str]]:
        if self._owners is None:
            ranges = []
            for mod in self._for_each_module():
                try:
                    name = _string(mod.name)
                    for start, length in module_address_regions(mod):
                        if start and length:
                            ranges.append((start, start + length, name))
                except (drgn.FaultError, LookupError, AttributeError):
                    continue
            ranges.sort()
            self._owners = ranges
            self._owner_starts = [r[0] for r in ranges]
        return self._owners

    def _owner(self, address: int) -> str:
        ranges = self._module_ranges()
        i = bisect.bisect_right(self._owner_starts, address) - 1
        if i >= 0 and ranges[i][0] <= address < ranges[i][1]:
            return ranges[i][2]
        return "vmlinux"

    def _vmlinux_symtab(self) -> ElfSymbols | None:
        """The kernel's ELF symbol table, read once from its debug file.

        drgn 0.3.0's ``Program.symbol`` costs ~250 us an address on a vmlinux;
        an audit resolves about a thousand stub targets, so a bisect over the
        same ``.symtab`` (with libdrgn's tie-breaking rules) pays for itself.
        """
        if not self._vmlinux_symbols_tried:
            self._vmlinux_symbols_tried = True
            try:
                path = self.prog.main_module().debug_file_path
            except (LookupError, AttributeError):
                path = None
            if path:
                try:
                    self._vmlinux_symbols = read_elf_symbols(path)
                except TargetError:
                    pass
        return self._vmlinux_symbols

    def symbolize(self, address: int) -> SymbolInfo | None:
        """The symbol containing ``address`` with its owner (``vmlinux`` or a module)."""
        owner = self._owner(address)
        symtab = self._vmlinux_symtab() if owner == "vmlinux" else None
        if symtab is not None:
            found = symtab.lookup(address)
            if found is not None:
                start, size, name = found
                return SymbolInfo(name, start, size or symtab.size_to_next(start), owner)
        try:
            sym = self.prog.symbol(address)
        except LookupError:
            self._enable_module_kallsyms()
            try:
                sym = self.prog.symbol(address)
            except LookupError:
                return None
        start, size = int(sym.address), int(sym.size)
        if not size:
            size = self._size_to_next_symbol(start)
        return SymbolInfo(sym.name, start, size, owner)

    # --- kernel ---------------------------------------------------------------

    def kernel(self) -> KernelInfo:
        """Kernel-wide facts, computed once.

        :raises TargetError: if the kernel's own data cannot be read
        """
        if self._kernel is None:
            try:
                self._kernel = self._compute_kernel()
            except drgn.FaultError as e:
                raise TargetError(
                    f"cannot read the kernel's own data ({e}): is the core truncated, "
                    "or the debug info for another kernel?"
                ) from None
        return self._kernel

    def _compute_kernel(self) -> KernelInfo:
        prog = self.prog
        little = bool(prog.platform and prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
        release = _string(prog["init_uts_ns"].name.release)
        expected = vmcoreinfo_release(prog)
        if expected is not None and release != expected:
            # KERNELOFFSET or the page tables are off: every read is of wrong memory
            raise TargetError(
                f"the kernel image in this target says release {release!r}, its VMCOREINFO "
                f"says {expected!r}: wrong --vmcoreinfo, or a dump of another kernel?"
            )
        toc, toc_source = kernel_toc(prog)
        kernelbase = None
        try:
            kernelbase = int(prog["paca_ptrs"][0].kernelbase.value_())
        except (LookupError, AttributeError, drgn.FaultError):
            pass
        try:
            func_desc_size = sizeof(prog.type("func_desc_t"))
        except LookupError:
            func_desc_size = 8 if little else 16
        try:
            paca_toc_offset: int | None = offsetof(prog.type("struct paca_struct"), "kernel_toc")
        except LookupError:
            paca_toc_offset = None
        try:
            has_lp_sp = prog.type("struct thread_info").has_member("livepatch_sp")
        except LookupError:
            has_lp_sp = False
        # ELFv1 has 16/24-byte function descriptors, ELFv2 just the address.
        abi = 2 if func_desc_size == 8 else 1
        text = []
        for start, end in (("_stext", "_etext"), ("_sinittext", "_einittext")):
            a, b = _symbol_address(prog, start), _symbol_address(prog, end)
            if a is not None and b is not None and a < b:
                text.append((a, b))
        return KernelInfo(
            release=release,
            arch="ppc64le" if little else "ppc64",
            byteorder="little" if little else "big",
            abi=abi,
            toc=toc,
            toc_source=toc_source,
            kernelbase=kernelbase,
            ftrace_caller=_function_entry(prog, "ftrace_caller", abi),
            ftrace_regs_caller=_function_entry(prog, "ftrace_regs_caller", abi),
            mcount=_function_entry(prog, "_mcount", abi),
            livepatch_handler=_symbol_address(prog, "livepatch_handler"),
            text_ranges=tuple(text),
            func_desc_size=func_desc_size,
            has_livepatch_sp=has_lp_sp,
            paca_toc_offset=paca_toc_offset,
        )

    # --- modules --------------------------------------------------------------

    def module_info(self, mod: Object) -> ModuleInfo:
        """Plain facts about one module.

        :param mod: ``struct module *``
        """
        arch = mod.arch
        sections: Mapping[str, int] = module_section_addresses(mod)
        sizes = module_section_sizes(mod)
        try:
            livepatch = bool(mod.klp)
        except AttributeError:  # !CONFIG_LIVEPATCH
            livepatch = False
        return make_module_info(
            name=_string(mod.name),
            text_ranges=module_text_ranges(mod),
            sections=sections,
            section_sizes=sizes,
            arch=lambda member: _opt_int(arch, member),
            livepatch=livepatch,
            address=int(mod.value_()),
        )

    def _for_each_module(self) -> Iterator[Object]:
        """``for_each_module()``, ending (and recording the damage) at a broken link."""
        it = guard_list(for_each_module(self.prog), _address, "modules")
        while True:
            try:
                mod = next(it)
            except StopIteration:
                return
            except drgn.FaultError as e:
                self._damaged(e.address, f"modules list broken: {e}")
                return
            except ListCorruption as e:
                self._damaged(e.address, str(e), e.code)
                return
            yield mod

    def modules(self) -> Iterator[ModuleInfo]:
        """Every loaded module, in ``modules`` list order.

        A module whose ``struct module`` cannot be read is left out and a broken
        list ends the walk; both are recorded in :attr:`damage`, not raised.
        """
        for mod in self._for_each_module():
            try:
                yield self.module_info(mod)
            except drgn.FaultError as e:
                self._damaged(e.address, f"struct module at {mod.value_():#x} unreadable: {e}")

    def _damaged(self, address: int | None, message: str, code: str | None = None) -> None:
        entry: tuple[Any, ...] = (address, message) if code is None else (address, message, code)
        if entry not in self.damage:
            self.damage.append(entry)

    # --- tasks ------------------------------------------------------------------

    def task_info(self, task: Object) -> TaskInfo:
        """Plain facts about one task.

        :param task: ``struct task_struct *``
        """
        if self._thread_size is None:
            self._thread_size = thread_size(self.prog)
        stack = int(cast("unsigned long", task.stack))
        try:
            ti = task.thread_info  # CONFIG_THREAD_INFO_IN_TASK
            in_task = True
            ti_size = 0
        except AttributeError:
            # thread_info at the bottom of the stack; the livepatch stack
            # starts above it.
            ti = Object(self.prog, "struct thread_info", address=stack)
            in_task = False
            ti_size = sizeof(self.prog.type("struct thread_info"))
        try:
            lp_sp: int | None = int(cast("unsigned long", ti.livepatch_sp))
        except AttributeError:
            lp_sp = None
        try:
            ksp: int | None = int(task.thread.ksp)
        except AttributeError:
            ksp = None
        return TaskInfo(
            pid=int(task.pid),
            comm=_string(task.comm),
            stack=stack,
            stack_size=self._thread_size,
            livepatch_sp=lp_sp,
            thread_info_in_task=in_task,
            thread_info_size=ti_size,
            ksp=ksp,
            address=int(task.value_()),
        )

    def tasks(self) -> Iterator[TaskInfo]:
        """Every task (threads included); damage is recorded as for :meth:`modules`."""
        it = guard_list(for_each_task(self.prog), _address, "task")
        while True:
            try:
                task = next(it)
            except StopIteration:
                return
            except drgn.FaultError as e:
                self._damaged(e.address, f"task list broken: {e}")
                return
            except ListCorruption as e:
                self._damaged(e.address, str(e), e.code)
                return
            try:
                yield self.task_info(task)
            except drgn.FaultError as e:
                self._damaged(e.address, f"task_struct at {task.value_():#x} unreadable: {e}")

    def _find_task(self, pid: int) -> Object:
        task = find_task(self.prog, pid)
        if not task:
            raise KlpError(f"no task with pid {pid}")
        return task

    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        """drgn's unwind of task ``pid``, innermost frame first.

        :raises KlpError: if there is no such task or it cannot be unwound
        """
        task = self._find_task(pid)
        try:
            trace = self.prog.stack_trace(task)
        except (ValueError, drgn.FaultError) as e:
            raise KlpError(f"cannot unwind pid {pid}: {e}") from None
        frames = []
        for frame in trace:
            try:
                sp: int | None = int(frame.sp)
            except LookupError:
                sp = None
            inline = frame.name if frame.is_inline else None
            frames.append(StackFrame(pc=int(frame.pc), sp=sp, inline=inline))
        return frames
