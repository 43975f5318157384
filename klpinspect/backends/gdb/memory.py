"""Kernel virtual memory of a gdb inferior: core-file dispatch, radix translation, cache.

A vmcore opened with ``core-file`` exposes only the linear map; module
memory (vmalloc space) is translated with the kernel's radix page tables
(:mod:`klpinspect.ppc64.radix`); QEMU's own dump (PT_LOAD at physical 0) is
read at ``vaddr - PAGE_OFFSET``.  Over a gdbstub QEMU translates.  Every
read goes through a page-chunk cache and is counted.

Nothing here imports gdb: :class:`GdbMemory` is given the inferior's raw
read, whether it is a core file, and gdb's ``info target`` text as
callables, so it is tested with plain functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from klpinspect.backends.chunkcache import ChunkCache
from klpinspect.backends.vmcoreinfo import vmcoreinfo_value
from klpinspect.errors import MemoryReadError, TargetError
from klpinspect.ppc64.radix import (
    PAGE_OFFSET,
    RadixPageTables,
    check_radix,
    is_linear_map,
    radix_geometry,
)

__all__ = (
    "CHUNK_SIZE",
    "LINEAR_CHUNK_SIZE",
    "MAX_PREFETCH",
    "MAX_READ",
    "MODULE_WINDOW",
    "GdbMemory",
    "RadixSetup",
    "core_file_path",
    "core_file_ranges",
    "vmcoreinfo_page_size",
)

# Cache granularity: small enough for a gdbstub round trip, large enough
# that a struct module or a .stubs section is one read.
CHUNK_SIZE = 4096
# Linear-map (slab) reads from a core file: a larger window, so the small
# objects hanging off many modules (mod->sect_attrs, the section names, the
# ftrace records) come in a few reads.  64 KiB, not 256: gdb's read_memory
# costs ~1 ms a MiB from a core file, and most of a 256 KiB window went unused
# (klp-audit read 14.5 MB of slab on the 7.2 fixture in 17 ms; with 64 KiB
# windows the audit's CPU time is 14 ms less there, 34 ms on Debian's 7.2, the
# same on 6.1; klp-stubs: 1.66 reads a module on Debian's 7.2, 1.08 before).
LINEAR_CHUNK_SIZE = 64 << 10
# Largest module text prefetched in one read (:meth:`GdbMemory.prefetch`).
MAX_PREFETCH = 1 << 20
# Module memory (vmalloc space) of a core file is read in windows this large
# and aligned (:meth:`GdbMemory.prefetch_window`; 2 MiB: one PTE table's reach
# with 4K pages): the allocations of neighbouring modules (struct module and
# kallsyms, text with .stubs) share them.
MODULE_WINDOW = 1 << 21
# Physical runs of one module window this close are read together (the bytes
# between them come along): a core file read costs the same for 4 KiB or 64.
_PHYS_GAP = 64 << 10
# Refuse absurd sizes read from a damaged dump.
MAX_READ = 64 << 20


def core_file_ranges(info_target: str) -> list[tuple[int, int]]:
    """``[start, end)`` of the core file's sections in gdb's ``info target`` text."""
    ranges = []
    in_core = False
    for line in info_target.splitlines():
        if line.startswith("Local core dump file"):
            in_core = True
        elif line and not line[0].isspace():
            in_core = False
        elif in_core and " is " in line and line.strip().startswith("0x"):
            start, _sep, rest = line.strip().partition(" - ")
            ranges.append((int(start, 16), int(rest.split()[0], 16)))
    return ranges


def core_file_path(info_target: str) -> str | None:
    """The core file gdb opened, from its ``info target`` text."""
    lines = info_target.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("Local core dump file"):
            text = lines[i + 1].strip()
            if text.startswith("`") and "'" in text:
                return text[1 : text.rindex("'")]
    return None


def vmcoreinfo_page_size(vmcoreinfo: bytes | str | None) -> int | None:
    """``PAGESIZE`` of a VMCOREINFO text, if it is one the radix walker knows (4K, 64K)."""
    if not vmcoreinfo:
        return None
    value = vmcoreinfo_value(vmcoreinfo, "PAGESIZE")
    if value is None or not value.isdigit() or int(value) not in (4096, 65536):
        return None
    return int(value)


@dataclass(frozen=True)
class RadixSetup:
    """What the page-table walker needs from the kernel.

    :param mmu_features: ``cur_cpu_spec->mmu_features``
    :param pgd: ``init_mm.pgd`` (a linear-map address)
    :param page_size: the base page size (``1 << mmu_psize_defs[mmu_virtual_psize].shift``)
    """

    mmu_features: int
    pgd: int
    page_size: int


class GdbMemory:
    """Reads of kernel virtual memory, never writes.

    :param raw_read: the inferior's ``read_memory`` (raises :class:`MemoryReadError`)
    :param is_core: whether the inferior is a core file (else live: gdbstub)
    :param info_target: gdb's ``info target`` text
    :param radix_setup: reads what the page-table walker needs (through this
        object's :meth:`read`; linear-map reads only)
    """

    def __init__(
        self,
        raw_read: Callable[[int, int], bytes],
        is_core: Callable[[], bool],
        info_target: Callable[[], str],
        radix_setup: Callable[[], RadixSetup],
    ) -> None:
        self._gdb_read = raw_read
        self._is_core = is_core
        self._info_target = info_target
        self._radix_setup = radix_setup
        self._radix: RadixPageTables | None = None
        self._radix_error: TargetError | None = None
        self._physical_core: bool | None = None
        self._cache = ChunkCache(self._raw_read, CHUNK_SIZE)
        self._linear = ChunkCache(self._raw_read, LINEAR_CHUNK_SIZE)
        # MODULE_WINDOW-aligned windows of module memory already read (prefetch_window)
        self._windows: set[int] = set()
        #: raw reads (module memory on a core: translated reads)
        self.reads = 0
        #: bytes those reads asked for
        self.bytes_read = 0
        #: physical (linear-map) reads made by the page-table walker
        self.phys_reads = 0

    def clear(self) -> None:
        """Forget cached memory and page tables (the target ran)."""
        self._cache.clear()
        self._linear.clear()
        self._windows.clear()
        self._radix = None

    def read(self, address: int, size: int) -> bytes:
        """Read kernel virtual memory.

        :raises MemoryReadError: if any byte is unreadable
        """
        if size > MAX_READ or address < 0 or address + size > 1 << 64:
            raise MemoryReadError(address, size, "implausible read")  # a damaged length
        if is_linear_map(address) and size <= LINEAR_CHUNK_SIZE and self._is_core():
            try:
                return self._linear.read(address, size)
            except MemoryReadError:
                pass  # the window reaches past the dump's memory: the page alone
        return self._cache.read(address, size)

    def read_uncached(self, address: int, size: int) -> bytes:
        """One read of ``[address, address + size)``, kept nowhere (a large object
        read once: the kernel's BTF, megabytes a chunk cache would only copy).

        :raises MemoryReadError: if any byte is unreadable
        """
        if size > MAX_READ or size < 0 or address < 0 or address + size > 1 << 64:
            raise MemoryReadError(address, size, "implausible read")
        return self._raw_read(address, size)

    def prefetch(self, address: int, size: int) -> None:
        """Bring ``[address, address + size)`` into the cache in one read, if readable
        (cached chunks inside it do not split the read: :meth:`ChunkCache.prefetch`).

        The gdb back end prefetches a module's text after its ``struct
        module`` so that ``.stubs`` (and, before 6.4, the kallsyms in the same
        allocation) are cache hits.  An unreadable range is left to the reads
        that need it, which report it.
        """
        if 0 < size <= MAX_PREFETCH and address >= 0 and address + size <= 1 << 64:
            try:
                self._cache.prefetch(address, size)
            except MemoryReadError:
                pass

    def prefetch_window(self, address: int, end: int | None = None) -> bool:
        """Core files: bring the mapped pages of the :data:`MODULE_WINDOW`-aligned
        window(s) of module (vmalloc) memory covering ``[address, end)`` into the
        cache, one read a window: the page tables say which pages are mapped
        (the unmapped ones, such as the guard page after each allocation, are
        skipped), and those are read through them.

        Modules' allocations are packed together in vmalloc space: a window
        around one ``struct module`` holds the ``struct module``s, kallsyms
        (before 6.4 ``core_layout``, since then ``mem[MOD_DATA]``) and texts
        with ``.stubs`` (``mem[MOD_TEXT]`` since 6.4, ac3b43283923 "module:
        replace module_layout with module_memory") of its neighbours too, so a
        module costs a fraction of a read instead of two.  A page that is
        mapped but not in the dump is left out: the read that needs it reports
        it, as without the window.

        Nothing on a live target (QEMU translates; the bytes are the cost
        there), for the linear map, or when the page tables cannot be walked.

        :returns: whether the windows were read (else the caller reads on its own)
        """
        if is_linear_map(address) or not self._is_core():
            return False
        try:
            radix = self.page_tables()
        except (MemoryReadError, TargetError):
            return False
        last = address if end is None or end <= address else end - 1
        for index in range(address // MODULE_WINDOW, last // MODULE_WINDOW + 1):
            if index not in self._windows:
                self._windows.add(index)
                self._read_window(radix, index * MODULE_WINDOW)
        return True

    def _read_window(self, radix: RadixPageTables, base: int) -> None:
        """The mapped pages of ``[base, base + MODULE_WINDOW)`` into the cache: the
        page tables walked once (:meth:`RadixPageTables.mappings`), each
        physically contiguous run read at once."""
        runs: list[list[int]] = []  # [vaddr, paddr, size], contiguous both ways
        for vaddr, paddr, size in radix.mappings(base, base + MODULE_WINDOW):
            last = runs[-1] if runs else None
            if last is not None and last[0] + last[2] == vaddr and last[1] + last[2] == paddr:
                last[2] += size
            else:
                runs.append([vaddr, paddr, size])
        if not runs:
            return
        self.reads += 1
        # Runs close together in physical memory (vmalloc takes its pages from
        # the page allocator, which hands out neighbours) are read together.
        runs.sort(key=lambda r: r[1])
        group = [runs[0]]
        for run in runs[1:]:
            if run[1] - (group[-1][1] + group[-1][2]) <= _PHYS_GAP:
                group.append(run)
                continue
            self._read_runs(group, radix.geometry.page_size)
            group = [run]
        self._read_runs(group, radix.geometry.page_size)

    def _read_runs(self, runs: list[list[int]], page: int) -> None:
        """Read ``[vaddr, paddr, size]`` runs sorted by ``paddr`` (one physical read
        from the first to the end of the last) into the cache; where that fails,
        each run alone, then each page (a page not in the dump is left out)."""
        lo = runs[0][1]
        hi = max(p + n for _v, p, n in runs)
        if len(runs) > 1:
            try:
                data = self._read_phys(lo, hi - lo)
            except MemoryReadError:
                data = b""
            if len(data) == hi - lo:
                self.bytes_read += hi - lo
                for vaddr, paddr, size in runs:
                    self._cache.insert(vaddr, data[paddr - lo : paddr - lo + size])
                return
        for vaddr, paddr, size in runs:
            pieces = [(vaddr, paddr, size)]
            while pieces:
                v, p, n = pieces.pop()
                try:
                    data = self._read_phys(p, n)
                except MemoryReadError:
                    data = b""
                if len(data) == n:
                    self.bytes_read += n
                    self._cache.insert(v, data)
                elif n > page:  # a page not in the dump: keep the others
                    pieces.extend((v + o, p + o, page) for o in range(0, n, page))

    def core_maps_physical(self) -> bool:
        """Whether the core file's PT_LOADs are at physical addresses (``p_vaddr`` 0).

        QEMU's ``dump-guest-memory`` (``paging`` false) writes them so; the
        kernel's ``/proc/vmcore`` and the lab's fix-up put the linear map
        there.  gdb would read kernel addresses from the vmlinux file instead
        (zeros for .data/.bss of a debug file), so linear-map reads go to
        ``vaddr - PAGE_OFFSET`` themselves.
        """
        if self._physical_core is None:
            ranges = core_file_ranges(self._info_target())
            self._physical_core = bool(ranges) and all(end <= PAGE_OFFSET for _s, end in ranges)
        return self._physical_core

    def _raw_read(self, address: int, size: int) -> bytes:
        self.reads += 1
        self.bytes_read += size
        if not self._is_core():
            return self._gdb_read(address, size)
        if is_linear_map(address):
            if self.core_maps_physical():
                try:
                    return self._gdb_read(address - PAGE_OFFSET, size)
                except MemoryReadError as err:
                    raise MemoryReadError(address, size, err.reason) from None
            return self._gdb_read(address, size)
        if self._radix is not None:
            return self._radix.read(address, size)
        try:
            return self._gdb_read(address, size)
        except MemoryReadError:
            # vmalloc/module memory: no PT_LOAD maps it; walk the page tables.
            return self.page_tables().read(address, size)

    def _read_phys(self, paddr: int, size: int) -> bytes:
        self.phys_reads += 1
        base = 0 if self.core_maps_physical() else PAGE_OFFSET
        return self._gdb_read(base + paddr, size)

    def page_tables(self) -> RadixPageTables:
        """The radix walker for module memory in a core file, built once.

        :raises TargetError: on a hash-MMU dump, or if the page tables cannot be read
        """
        if self._radix is not None:
            return self._radix
        if self._radix_error is not None:
            raise self._radix_error
        try:
            setup = self._radix_setup()
            # The hash MMU keeps translations elsewhere: say so plainly.
            check_radix(setup.mmu_features)
            self._radix = RadixPageTables.from_pgd_vaddr(
                self._read_phys, setup.pgd, radix_geometry(setup.page_size)
            )
        except TargetError as err:
            self._radix_error = err
            raise
        except MemoryReadError as err:
            self._radix_error = TargetError(f"cannot walk the kernel page tables: {err}")
            raise self._radix_error from None
        return self._radix
