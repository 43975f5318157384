"""The gdb back end of the Target protocol: plain facts from gdb's selected inferior.

Runs inside gdb's embedded Python (``import gdb``); the core never imports it.
gdb supplies the types (looked up lazily, cached per :class:`GdbTarget`) and
the raw memory (``gdb.selected_inferior().read_memory``); every structure is
read in one bulk read into a page-chunk cache and decoded with
``gdb.Value(buffer, type)``, so gdb never chases pointers on its own and
every read is counted (:attr:`GdbTarget.reads`).

A vmcore opened with ``core-file`` exposes only the linear map; module
memory (vmalloc space) is translated with the kernel's radix page tables
(:mod:`klpinspect.ppc64.radix`); QEMU's own dump (PT_LOAD at physical 0) is
read at ``vaddr - PAGE_OFFSET``.  Over a gdbstub QEMU translates.  Symbols:
vmlinux's ELF ``.symtab`` from the file gdb loaded (names with sizes, as
``%pS`` and drgn print them; gdb's Python API has no minimal symbol sizes)
and each module's own kallsyms (``mod->kallsyms``), since gdb knows only
vmlinux.  Stacks: the back chain from ``thread.ksp``, with the functions gdb's
DWARF says were inlined at each call as frames of their own (as drgn lists
them).  Kernel differences are found by feature detection, as in
:mod:`klpinspect.drgn.target`.
"""

from __future__ import annotations

import bisect
import importlib
import struct
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from klpinspect.chunkcache import ChunkCache
from klpinspect.errors import KlpError, MemoryReadError, TargetError
from klpinspect.ppc64.lpstack import unwind_back_chain
from klpinspect.ppc64.radix import (
    LINEAR_MAP_BASE,
    RadixPageTables,
    check_radix,
    is_linear_map,
    radix_geometry,
)
from klpinspect.stackcheck import KERNEL_SPACE, ListCorruption
from klpinspect.symtab import ElfSymbols, SymEntry, parse_elf_symbols, read_elf_symbols
from klpinspect.target import (
    KernelInfo,
    ModuleInfo,
    StackFrame,
    SymbolInfo,
    TaskInfo,
    make_module_info,
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

# Cache granularity: small enough for a gdbstub round trip, large enough
# that a struct module or a .stubs section is one read.
CHUNK_SIZE = 4096
# Refuse absurd sizes read from a damaged dump.
_MAX_READ = 64 << 20
_MAX_LIST = 1 << 20



# -- memory ------------------------------------------------------------------------


def _gdb_error_text(err: BaseException) -> str:
    return str(err) or type(err).__name__


# -- the target --------------------------------------------------------------------


class _ListUnreadable(ListCorruption):
    """A list link that cannot be followed (unreadable, NULL): ``MEMORY_UNREADABLE``."""

    code = "MEMORY_UNREADABLE"


class GdbTarget:
    """The :class:`klpinspect.target.Target` protocol over gdb's selected inferior.

    :raises TargetError: when gdb has no kernel, no target, or not a ppc64 one
    """

    kind = "gdb"

    def __init__(self) -> None:
        self._types: dict[str, Any] = {}
        self._kernel: KernelInfo | None = None
        self._symbols: ElfSymbols | None = None
        self._module_symbols: dict[int, ElfSymbols] = {}
        # [start, end) of module memory -> (name, struct module address)
        self._owners: list[tuple[int, int, str, int]] | None = None
        self._owner_starts: list[int] = []
        self._radix: RadixPageTables | None = None
        self._radix_error: TargetError | None = None
        self._physical_core: bool | None = None
        self._byteorder: Literal["little", "big"] = "little"
        self._mem = ChunkCache(self._raw_read, CHUNK_SIZE)
        #: raw ``read_memory`` calls (module memory on a core: translated reads)
        self.reads = 0
        # (address, message[, code]) of lists that could not be walked (Target.damage)
        self.damage: list[tuple[Any, ...]] = []
        #: bytes those calls asked for
        self.bytes_read = 0
        #: physical (linear-map) reads made by the page-table walker
        self.phys_reads = 0
        self._check()

    # --- setup ------------------------------------------------------------------

    def _check(self) -> None:
        if not gdb.objfiles():
            raise TargetError(
                "no kernel loaded: load vmlinux with debug info first "
                "('file vmlinux' or 'symbol-file vmlinux.debug')"
            )
        try:
            self._type("struct module")
        except TargetError:
            raise TargetError(
                "no kernel debug info: 'struct module' is unknown; load vmlinux with "
                "DWARF (e.g. 'symbol-file vmlinux.debug')"
            ) from None
        inferior = gdb.selected_inferior()
        if inferior.connection is None or inferior.pid == 0 and not self._is_core():
            raise TargetError(
                "no target: open a dump with 'core-file VMCORE' or connect with "
                "'target remote HOST:PORT'"
            )
        arch = inferior.architecture().name()
        if not arch.startswith("powerpc") or self._type("long").sizeof != 8:
            raise TargetError(f"not a ppc64 target: gdb architecture is {arch}")
        endian = gdb.execute("show endian", to_string=True)
        self._byteorder = "big" if "big endian" in endian else "little"

    @staticmethod
    def _is_core() -> bool:
        conn = gdb.selected_inferior().connection
        return conn is not None and conn.type == "core"

    @property
    def live(self) -> bool:
        """Whether memory can change under us (anything but a core file)."""
        return not self._is_core()

    def clear_memory_cache(self) -> None:
        """Forget cached memory (the target ran); types and symbols stay."""
        self._mem.clear()
        self._radix = None
        self._owners = None
        self._module_symbols = {}

    def _type(self, name: str) -> Any:
        try:
            return self._types[name]
        except KeyError:
            pass
        try:
            t = gdb.lookup_type(name)
        except gdb.error:
            if name.startswith("struct ") or name.startswith("union "):
                raise TargetError(f"no type '{name}' in the kernel debug info") from None
            raise TargetError(f"no type '{name}'") from None
        self._types[name] = t
        return t

    # --- memory -------------------------------------------------------------------

    def _core_maps_physical(self) -> bool:
        """Whether the core file's PT_LOADs are at physical addresses (``p_vaddr`` 0).

        QEMU's ``dump-guest-memory`` (``paging`` false) writes them so; the
        kernel's ``/proc/vmcore`` and the lab's fix-up put the linear map
        there.  gdb would read kernel addresses from the vmlinux file instead
        (zeros for .data/.bss of a debug file), so linear-map reads go to
        ``vaddr - PAGE_OFFSET`` themselves.
        """
        if self._physical_core is None:
            ranges = []
            text = gdb.execute("info target", to_string=True)
            in_core = False
            for line in text.splitlines():
                if line.startswith("Local core dump file"):
                    in_core = True
                elif line and not line[0].isspace():
                    in_core = False
                elif in_core and " is " in line and line.strip().startswith("0x"):
                    start, _sep, rest = line.strip().partition(" - ")
                    ranges.append((int(start, 16), int(rest.split()[0], 16)))
            self._physical_core = bool(ranges) and all(
                end <= LINEAR_MAP_BASE for _start, end in ranges
            )
        return self._physical_core

    def _gdb_read(self, address: int, size: int) -> bytes:
        try:
            return bytes(gdb.selected_inferior().read_memory(address, size))
        except (gdb.MemoryError, gdb.error, OverflowError, ValueError) as err:
            raise MemoryReadError(address, size, _gdb_error_text(err)) from None

    def _raw_read(self, address: int, size: int) -> bytes:
        self.reads += 1
        self.bytes_read += size
        if not self._is_core():
            return self._gdb_read(address, size)
        if is_linear_map(address):
            if self._core_maps_physical():
                try:
                    return self._gdb_read(address - LINEAR_MAP_BASE, size)
                except MemoryReadError as err:
                    raise MemoryReadError(address, size, err.reason) from None
            return self._gdb_read(address, size)
        if self._radix_ok():
            return self._translated_read(address, size)
        try:
            return self._gdb_read(address, size)
        except MemoryReadError:
            # vmalloc/module memory: no PT_LOAD maps it; walk the page tables.
            return self._translated_read(address, size)

    def _radix_ok(self) -> bool:
        return self._radix is not None

    def _read_phys(self, paddr: int, size: int) -> bytes:
        self.phys_reads += 1
        base = 0 if self._core_maps_physical() else LINEAR_MAP_BASE
        return self._gdb_read(base + paddr, size)

    def _page_tables(self) -> RadixPageTables:
        """The radix walker for module memory in a core file, built once."""
        if self._radix is not None:
            return self._radix
        if self._radix_error is not None:
            raise self._radix_error
        try:
            spec = self._read_ulong(self._symbol_address_required("cur_cpu_spec"))
            features = self._read_uint(spec + self._offsetof("struct cpu_spec", "mmu_features"))
            # The hash MMU keeps translations elsewhere: say so plainly.
            check_radix(features)
            pgd = self._read_ulong(
                self._symbol_address_required("init_mm") + self._offsetof("struct mm_struct", "pgd")
            )
            geometry = radix_geometry(1 << self._page_shift())
            self._radix = RadixPageTables.from_pgd_vaddr(self._read_phys, pgd, geometry)
        except TargetError as err:
            self._radix_error = err
            raise
        except MemoryReadError as err:
            self._radix_error = TargetError(f"cannot walk the kernel page tables: {err}")
            raise self._radix_error from None
        return self._radix

    def _page_shift(self) -> int:
        """``mmu_psize_defs[mmu_virtual_psize].shift`` (PAGE_SHIFT), 16 if unknown."""
        try:
            idx = self._read_uint(self._symbol_address_required("mmu_virtual_psize"))
            defs = self._symbol_address_required("mmu_psize_defs")
            t = self._type("struct mmu_psize_def")
            shift = self._read_uint(defs + idx * t.sizeof + self._offsetof(t, "shift"))
            if shift in (12, 16):
                return shift
        except (TargetError, MemoryReadError):
            pass
        return 16

    def _translated_read(self, address: int, size: int) -> bytes:
        return self._page_tables().read(address, size)

    def read(self, address: int, size: int) -> bytes:
        """Read kernel virtual memory (never writes).

        :raises MemoryReadError: if any byte is unreadable
        """
        if size > _MAX_READ or address < 0 or address + size > 1 << 64:
            raise MemoryReadError(address, size, "implausible read")  # a damaged length
        return self._mem.read(address, size)

    def _u64(self, data: bytes, offset: int = 0) -> int:
        return int.from_bytes(data[offset : offset + 8], self._byteorder)

    def _read_ulong(self, address: int) -> int:
        return self._u64(self.read(address, 8))

    def _read_uint(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), self._byteorder)

    def _value(self, address: int, type_: Any) -> Any:
        """A ``gdb.Value`` of ``type_`` at ``address``, from one bulk read."""
        if isinstance(type_, str):
            type_ = self._type(type_)
        return gdb.Value(self.read(address, type_.sizeof), type_)

    def _string(self, address: int, limit: int = 256) -> str:
        """A NUL-terminated string in target memory."""
        out = b""
        while len(out) < limit:
            n = CHUNK_SIZE - (address + len(out)) % CHUNK_SIZE
            data = self.read(address + len(out), min(n, limit - len(out)))
            end = data.find(b"\0")
            if end >= 0:
                return (out + data[:end]).decode("utf-8", "replace")
            out += data
        return out.decode("utf-8", "replace")

    # --- types and fields ---------------------------------------------------------------

    def _offsetof(self, type_: Any, path: str) -> int:
        """Byte offset of member ``path`` (``a.b``) in ``type_``.

        :raises TargetError: if there is no such member
        """
        t = self._type(type_) if isinstance(type_, str) else type_
        off = 0
        for name in path.split("."):
            t = t.strip_typedefs()
            found = _find_field(t, name)
            if found is None:
                raise TargetError(f"no member '{name}' in {t}")
            field_off, t = found
            off += field_off
        return off

    def _has_member(self, type_name: str, path: str) -> bool:
        try:
            self._offsetof(type_name, path)
            return True
        except TargetError:
            return False

    # --- symbols ---------------------------------------------------------------------

    def _symbol_address(self, name: str) -> int | None:
        """Address of a kernel symbol: the ``.symtab`` of the file gdb loaded, else gdb's
        own lookup (a vmlinux without ``.symtab``; ~10 ms a name, so second)."""
        address = self._elf_symbols().address_of(name)
        if address is None and (name[0].isalpha() or name[0] == "_"):
            try:
                return int(gdb.parse_and_eval(f"&'{name}'").cast(self._type("unsigned long")))
            except gdb.error:
                return None
        return address

    def _function_entry(self, name: str, abi: int) -> int | None:
        """Where function ``name``'s code starts: on ELFv1 the plain symbol is its
        ``.opd`` descriptor and the code is ``.name`` (stubs hold the code address)."""
        if abi == 1:
            dotted = self._symbol_address("." + name)
            if dotted is not None:
                return dotted
        return self._symbol_address(name)

    def _symbol_address_required(self, name: str) -> int:
        address = self._symbol_address(name)
        if address is None:
            raise TargetError(f"no symbol '{name}' in the kernel")
        return address

    def _elf_symbols(self) -> ElfSymbols:
        if self._symbols is None:
            best: ElfSymbols | None = None
            for objfile in gdb.objfiles():
                if not objfile.filename:
                    continue
                try:
                    syms = read_elf_symbols(objfile.filename)
                except TargetError:
                    continue
                if best is None or len(syms) > len(best):
                    best = syms
            self._symbols = best if best is not None else ElfSymbols([])
        return self._symbols

    def _module_kallsyms(self, mod_addr: int) -> ElfSymbols:
        """The kallsyms of the module at ``mod_addr`` that name its own memory.

        Read only for modules an address falls in (two bulk reads each).  A
        livepatch module also keeps its resolved undefined/klp symbols (type
        ``u``) pointing elsewhere: only addresses in its own regions count.
        """
        table = self._module_symbols.get(mod_addr)
        if table is None:
            mod = self._value(mod_addr, "struct module")
            try:
                regions = self._module_regions(mod)
                entries = [
                    e
                    for e in self._kallsyms_entries(mod_addr, mod)
                    if any(s <= e[0] < end for s, end in regions)
                ]
            except (MemoryReadError, TargetError):
                entries = []  # a module whose kallsyms cannot be read: no names
            table = self._module_symbols[mod_addr] = ElfSymbols(entries)
        return table

    def _kallsyms_entries(self, mod_addr: int, mod: Any) -> list[SymEntry]:
        try:
            ks_ptr = int(_ptr(mod["kallsyms"]))
            ks = self._value(ks_ptr, "struct mod_kallsyms")
        except gdb.error:
            # Before 4.5 (commit 8244062ef1e5 "modules: fix longstanding
            # /proc/kallsyms vs module insertion race.") the fields were in
            # struct module.
            ks = mod
        num = int(ks["num_symtab"])
        symtab_addr = int(_ptr(ks["symtab"]))
        strtab_addr = int(_ptr(ks["strtab"]))
        if not num or not symtab_addr or not strtab_addr or num > _MAX_LIST:
            return []
        symtab = self.read(symtab_addr, num * 24)
        fmt = struct.Struct(("<" if self._byteorder == "little" else ">") + "I")
        last = max(fmt.unpack_from(symtab, i * 24)[0] for i in range(num))
        strtab = self.read(strtab_addr, last + 1)
        while strtab.find(b"\0", last) < 0 and len(strtab) < last + 4096:
            strtab = self.read(strtab_addr, len(strtab) + 64)
        return parse_elf_symbols(symtab, strtab, self._byteorder)

    def _module_ranges(self) -> list[tuple[int, int, str, int]]:
        if self._owners is None:
            ranges = []
            try:
                for mod_addr, mod in self._module_values():
                    name = _array_string(mod["name"])
                    try:
                        for start, end in self._module_regions(mod):
                            ranges.append((start, end, name, mod_addr))
                    except (MemoryReadError, TargetError, gdb.error):
                        continue
            except ListCorruption:
                pass  # the modules before the damage (modules() records it)
            ranges.sort()
            self._owners = ranges
            self._owner_starts = [r[0] for r in ranges]
        return self._owners

    def _owner(self, address: int) -> tuple[str, int | None]:
        """``(module name, struct module address)``, or ``("vmlinux", None)``."""
        ranges = self._module_ranges()
        i = bisect.bisect_right(self._owner_starts, address) - 1
        if i >= 0 and ranges[i][0] <= address < ranges[i][1]:
            return ranges[i][2], ranges[i][3]
        return "vmlinux", None

    def symbolize(self, address: int) -> SymbolInfo | None:
        """The symbol containing ``address`` with its owner (``vmlinux`` or a module)."""
        elf = self._elf_symbols()
        # vmlinux's table names only the image: a size-0 label such as _end
        # must not swallow module (vmalloc) addresses.
        end = elf.address_of("_end")
        table = elf
        hit = elf.lookup(address) if end is None or address < end else None
        owner, mod_addr = self._owner(address)
        if hit is None and mod_addr is not None:
            table = self._module_kallsyms(mod_addr)
            hit = table.lookup(address)
        if hit is None:
            return None
        start, size, name = hit
        if not size:
            size = table.size_to_next(start)
        return SymbolInfo(name, start, size, owner)

    # --- kernel -----------------------------------------------------------------------

    def kernel(self) -> KernelInfo:
        """Kernel-wide facts, computed once."""
        if self._kernel is None:
            self._kernel = self._compute_kernel()
        return self._kernel

    def _paca0(self) -> int | None:
        try:
            paca_ptrs = self._read_ulong(self._symbol_address_required("paca_ptrs"))
            return self._read_ulong(paca_ptrs) if paca_ptrs else None
        except (TargetError, MemoryReadError):
            return None

    def _paca_field(self, paca: int | None, member: str) -> int | None:
        if paca is None:
            return None
        try:
            return self._read_ulong(paca + self._offsetof("struct paca_struct", member))
        except (TargetError, MemoryReadError):
            return None

    def _compute_kernel(self) -> KernelInfo:
        little = self._byteorder == "little"
        uts = self._symbol_address_required("init_uts_ns")
        try:
            release = self._string(
                uts + self._offsetof("struct uts_namespace", "name.release"), 65
            )
        except MemoryReadError as err:
            raise TargetError(f"cannot read init_uts_ns: {err}") from None
        paca = self._paca0()
        toc = self._paca_field(paca, "kernel_toc")
        if toc:
            toc_source = "paca"
        else:
            # PCREL kernels (6.4+) have no kernel_toc in the paca, and no TOC at all.
            toc = self._elf_symbols().address_of(".TOC.")
            toc_source = ".TOC." if toc is not None else "none"
        try:
            func_desc_size = self._type("func_desc_t").sizeof
        except TargetError:
            func_desc_size = 8 if little else 16
        try:
            paca_toc_offset: int | None = self._offsetof("struct paca_struct", "kernel_toc")
        except TargetError:
            paca_toc_offset = None
        abi = 2 if func_desc_size == 8 else 1
        text = []
        for start, end in (("_stext", "_etext"), ("_sinittext", "_einittext")):
            a, b = self._symbol_address(start), self._symbol_address(end)
            if a is not None and b is not None and a < b:
                text.append((a, b))
        return KernelInfo(
            release=release,
            arch="ppc64le" if little else "ppc64",
            byteorder=self._byteorder,
            abi=abi,
            toc=toc,
            toc_source=toc_source,
            kernelbase=self._paca_field(paca, "kernelbase"),
            ftrace_caller=self._function_entry("ftrace_caller", abi),
            ftrace_regs_caller=self._function_entry("ftrace_regs_caller", abi),
            mcount=self._function_entry("_mcount", abi),
            livepatch_handler=self._symbol_address("livepatch_handler"),
            text_ranges=tuple(text),
            func_desc_size=func_desc_size,
            has_livepatch_sp=self._has_member("struct thread_info", "livepatch_sp"),
            paca_toc_offset=paca_toc_offset,
        )

    # --- lists ----------------------------------------------------------------------------

    def _list(self, head: int, what: str) -> Iterator[int]:
        """The ``list_head`` nodes after ``head`` (``list_for_each``)."""
        seen: set[int] = set()
        node = self._read_ulong(head)
        while node != head:
            if not node:
                raise _ListUnreadable(node, f"{what} list broken: NULL link")
            if len(seen) > _MAX_LIST:
                raise TargetError(f"{what} list is damaged at {node:#x}")
            if node < KERNEL_SPACE or node in seen:  # loops, or leaves kernel memory
                how = "leaves kernel memory" if node < KERNEL_SPACE else "loops"
                raise ListCorruption(node, f"{what} list {how}: link {node:#x} after "
                                     f"{len(seen)} entries; the walk stops there")
            seen.add(node)
            yield node
            node = self._read_ulong(node)

    # --- modules -------------------------------------------------------------------------

    def _module_values(self) -> Iterator[tuple[int, Any]]:
        """``(address, struct module value)`` of every module, in list order."""
        t = self._type("struct module")
        off = self._offsetof(t, "list")
        try:
            for node in self._list(self._symbol_address_required("modules"), "modules"):
                yield node - off, self._value(node - off, t)
        except MemoryReadError as err:
            raise _ListUnreadable(err.address, f"modules list broken: {err}") from None

    def _module_regions(self, mod: Any) -> list[tuple[int, int]]:
        """``[start, end)`` of all of a module's memory (``module_address_regions``)."""
        out = []
        try:
            # 6.4+ (commit ac3b43283923 "module: replace module_layout with module_memory")
            mems = mod["mem"]
        except gdb.error:
            mems = None
        if mems is not None:
            n = mems.type.range()[1] + 1
            for i in range(n):
                base, size = int(_ptr(mems[i]["base"])), int(mems[i]["size"])
                if base and size:
                    out.append((base, base + size))
            return out
        try:
            layouts = [mod["core_layout"], mod["init_layout"]]
            pairs = [(int(_ptr(x["base"])), int(x["size"])) for x in layouts]
        except gdb.error:
            # Before 4.5 (commit 7523e4dc5057): module_core/core_size in struct module.
            pairs = [
                (int(_ptr(mod[f"module_{k}"])), int(mod[f"{k}_size"])) for k in ("core", "init")
            ]
        return [(b, b + s) for b, s in pairs if b and s]

    def _module_text_ranges(self, mod: Any) -> list[tuple[int, int]]:
        ranges = []
        try:
            mems = mod["mem"]
        except gdb.error:
            mems = None
        if mems is not None:
            for kind in ("MOD_TEXT", "MOD_INIT_TEXT"):
                try:
                    mem = mems[int(gdb.parse_and_eval(kind))]
                except gdb.error:
                    continue
                base, size = int(_ptr(mem["base"])), int(mem["size"])
                if base and size:
                    ranges.append((base, base + size))
            return ranges
        try:
            for layout in (mod["core_layout"], mod["init_layout"]):
                base, size = int(_ptr(layout["base"])), int(layout["text_size"])
                if base and size:
                    ranges.append((base, base + size))
        except gdb.error:
            # Before 4.5 (commit 7523e4dc5057 "module: use a structure to
            # encapsulate layout"): module_core/core_text_size in struct module.
            for kind in ("core", "init"):
                base = int(_ptr(mod[f"module_{kind}"]))
                size = int(mod[f"{kind}_text_size"])
                if base and size:
                    ranges.append((base, base + size))
        return ranges

    def _sect_attrs_sections(self, mod: Any) -> dict[str, int]:
        """Section addresses from ``mod->sect_attrs`` (``/sys/module/<m>/sections``)."""
        try:
            attrs_addr = int(_ptr(mod["sect_attrs"]))
        except gdb.error:  # !CONFIG_KALLSYMS || !CONFIG_SYSFS
            return {}
        if not attrs_addr:
            return {}
        t = self._type("struct module_sect_attrs")
        attrs = self._value(attrs_addr, t)
        out: dict[str, int] = {}
        try:
            n = int(attrs["nsections"])
        except gdb.error:
            # 7.x (commit "module: sysfs: use bin_attribute::private for
            # section addresses"): NULL-terminated grp.bin_attrs, address in
            # ->private.
            grp = attrs["grp"]
            try:
                battrs = int(_ptr(grp["bin_attrs_new"]))
            except gdb.error:
                battrs = int(_ptr(grp["bin_attrs"]))
            bt = self._type("struct bin_attribute")
            name_off = self._offsetof(bt, "attr.name")
            priv_off = self._offsetof(bt, "private")
            i = 0
            while i < _MAX_LIST:
                battr = self._read_ulong(battrs + 8 * i)
                if not battr:
                    break
                name = self._string(self._read_ulong(battr + name_off))
                out[name] = self._read_ulong(battr + priv_off)
                i += 1
            return out
        # 5.10 ... 6.x: struct module_sect_attr { struct bin_attribute battr;
        # unsigned long address; }
        at = self._type("struct module_sect_attr")
        if not 0 <= n <= 4096:  # damaged: the module is left out and recorded, as in drgn
            raise MemoryReadError(attrs_addr, abs(n) * at.sizeof,
                                  f"implausible mod->sect_attrs->nsections {n}")
        base = attrs_addr + self._offsetof(t, "attrs")
        data = self.read(base, n * at.sizeof)
        name_off = self._offsetof(at, "battr.attr.name")
        addr_off = self._offsetof(at, "address")
        for i in range(n):
            rec = i * at.sizeof
            name = self._string(self._u64(data, rec + name_off))
            out[name] = self._u64(data, rec + addr_off)
        return out

    def _klp_sechdrs(self, mod: Any) -> list[tuple[str, int, int, int]]:
        """``(name, sh_addr, sh_size, sh_flags)`` of a livepatch module's sections.

        ``mod->klp_info`` keeps the ELF section headers with final addresses
        (``copy_module_elf()``, CONFIG_LIVEPATCH).
        """
        try:
            if not int(mod["klp"]):
                return []
            info_addr = int(_ptr(mod["klp_info"]))
        except gdb.error:
            return []
        if not info_addr:
            return []
        info = self._value(info_addr, "struct klp_modinfo")
        shnum = int(info["hdr"]["e_shnum"])
        shstrndx = int(info["hdr"]["e_shstrndx"])
        sechdrs, secstrings = int(_ptr(info["sechdrs"])), int(_ptr(info["secstrings"]))
        if not shnum or not sechdrs or not secstrings or not 0 < shstrndx < shnum:
            return []
        st = self._type("Elf64_Shdr")
        # One read for the whole header table.
        raw = self.read(sechdrs, shnum * st.sizeof)
        shdrs = [gdb.Value(raw[i * st.sizeof : (i + 1) * st.sizeof], st) for i in range(shnum)]
        strtab = self.read(secstrings, int(shdrs[shstrndx]["sh_size"]))
        out = []
        for sh in shdrs[1:]:
            start = int(sh["sh_name"])
            name = strtab[start : strtab.find(b"\0", start)]
            out.append(
                (
                    name.decode("ascii", "replace"),
                    int(sh["sh_addr"]),
                    int(sh["sh_size"]),
                    int(sh["sh_flags"]),
                )
            )
        return out

    def _module_info(self, address: int, mod: Any) -> ModuleInfo:
        arch = mod["arch"]
        klp = self._klp_sechdrs(mod)
        sections = self._sect_attrs_sections(mod)
        if not sections:
            sections = {name: a for name, a, _size, flags in klp if flags & 2 and a}
        sizes = {name: size for name, a, size, flags in klp if flags & 2 and a}
        try:
            livepatch = bool(int(mod["klp"]))
        except gdb.error:  # !CONFIG_LIVEPATCH
            livepatch = False
        return make_module_info(
            name=_array_string(mod["name"]),
            text_ranges=self._module_text_ranges(mod),
            sections=sections,
            section_sizes=sizes,
            arch=lambda member: _opt_int(arch, member),
            livepatch=livepatch,
            address=address,
        )

    def modules(self) -> Iterator[ModuleInfo]:
        """Every loaded module, in ``modules`` list order; a list that loops or
        leaves kernel memory ends the walk and is recorded in :attr:`damage`."""
        values = self._module_values()
        while True:
            try:
                address, mod = next(values)
            except StopIteration:
                return
            except ListCorruption as e:
                self._damaged(e.address, str(e), e.code)
                return
            try:
                info = self._module_info(address, mod)
            except MemoryReadError as err:  # as drgn: left out, recorded
                self._damaged(err.address, f"struct module at {address:#x} unreadable: {err}",
                              "MEMORY_UNREADABLE")
                continue
            yield info

    def _damaged(self, address: int | None, message: str, code: str) -> None:
        if (address, message, code) not in self.damage:
            self.damage.append((address, message, code))

    # --- tasks ----------------------------------------------------------------------------

    def _task_values(self) -> Iterator[tuple[int, Any]]:
        """Every thread of every process (``for_each_process_thread``), not the idle tasks."""
        t = self._type("struct task_struct")
        tasks_off = self._offsetof(t, "tasks")
        init_task = self._symbol_address_required("init_task")
        try:
            # 6.1: signal->thread_head + task->thread_node (commit 0c740d0afc3b, v3.14)
            node_off: int | None = self._offsetof(t, "thread_node")
            head_off: int | None = self._offsetof("struct signal_struct", "thread_head")
            signal_off = self._offsetof(t, "signal")
        except TargetError:
            node_off = head_off = None
            signal_off = 0
        group_off = None if node_off is not None else self._offsetof(t, "thread_group")
        for node in self._list(init_task + tasks_off, "init_task.tasks"):
            leader = node - tasks_off
            if node_off is not None and head_off is not None:
                signal = self._read_ulong(leader + signal_off)
                threads = [n - node_off for n in self._list(signal + head_off, "thread")]
            else:
                assert group_off is not None
                threads = [leader] + [
                    n - group_off for n in self._list(leader + group_off, "thread_group")
                ]
            for task in threads:
                yield task, self._value(task, t)

    def _thread_size(self) -> int:
        try:
            return int(self._type("union thread_union").sizeof) or 16384
        except TargetError:
            return 16384

    def _task_info(self, address: int, task: Any) -> TaskInfo:
        stack = int(_ptr(task["stack"]))
        try:
            ti = task["thread_info"]  # CONFIG_THREAD_INFO_IN_TASK
            in_task = True
            ti_size = 0
        except gdb.error:
            # thread_info at the bottom of the stack; the livepatch stack starts above it.
            ti = self._value(stack, "struct thread_info")
            in_task = False
            ti_size = int(self._type("struct thread_info").sizeof)
        lp_sp = _opt_int(ti, "livepatch_sp")
        try:
            ksp: int | None = int(task["thread"]["ksp"])
        except gdb.error:
            ksp = None
        return TaskInfo(
            pid=int(task["pid"]),
            comm=_array_string(task["comm"]),
            stack=stack,
            stack_size=self._thread_size(),
            livepatch_sp=lp_sp,
            thread_info_in_task=in_task,
            thread_info_size=ti_size,
            ksp=ksp,
            address=address,
        )

    def tasks(self) -> Iterator[TaskInfo]:
        """Every task (threads included), by pid."""
        infos = []
        try:
            for address, task in self._task_values():
                infos.append(self._task_info(address, task))
        except MemoryReadError as err:  # as drgn: the walk ends, the damage is recorded
            self._damaged(err.address, f"task list broken: {err}", "MEMORY_UNREADABLE")
        except ListCorruption as e:
            self._damaged(e.address, str(e), e.code)
        infos.sort(key=lambda t: t.pid)
        return iter(infos)

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
            data = self.read(task.stack, task.stack_size)
        except MemoryReadError as err:
            raise KlpError(f"cannot unwind pid {pid}: {err}") from None
        chain = unwind_back_chain(data, task.stack, task.ksp, byteorder=self._byteorder)
        # ksp is _switch's own frame: nothing it called saved an LR into it,
        # so its LR slot is stale; the walk starts at __switch_to's frame
        # (as the kernel's arch_stack_walk output does).
        frames: list[StackFrame] = []
        for sp, lr in chain[1:]:
            frames.extend(StackFrame(pc=lr, sp=sp, inline=name) for name in _inlined_at(lr))
            frames.append(StackFrame(pc=lr, sp=sp))
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


def _find_field(t: Any, name: str) -> tuple[int, Any] | None:
    """``(byte offset, type)`` of member ``name``, looking into anonymous members."""
    for f in t.fields():
        if f.name == name:
            return f.bitpos // 8, f.type
        if not f.name and f.type.strip_typedefs().code in (gdb.TYPE_CODE_STRUCT,
                                                           gdb.TYPE_CODE_UNION):
            inner = _find_field(f.type.strip_typedefs(), name)
            if inner is not None:
                return f.bitpos // 8 + inner[0], inner[1]
    return None


def _ptr(value: Any) -> Any:
    """A pointer value as an integer-convertible value."""
    return value.cast(gdb.lookup_type("unsigned long")) if value.type.code == gdb.TYPE_CODE_PTR \
        else value


def _opt_int(value: Any, member: str) -> int | None:
    """``value.member`` as an int, or ``None`` if the kernel has no such member."""
    try:
        return int(_ptr(value[member]))
    except gdb.error:
        return None


def _array_string(value: Any) -> str:
    """A ``char[]`` member as text (up to the first NUL)."""
    data: str = value.string(length=value.type.sizeof, errors="replace")
    return data.split("\0", 1)[0]
