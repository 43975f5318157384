"""ppc64 Book3S radix page tables: translate kernel virtual addresses offline.

A ppc64 vmcore maps only the linear map (``0xc000000000000000 + paddr``) in
its PT_LOADs; module memory lives in vmalloc space (``0xc008…``), so a
debugger that reads only PT_LOADs (gdb) cannot read modules.  The kernel's
own page tables are in the dump: walk them from ``init_mm.pgd``
(``swapper_pg_dir``) through physical reads.

Layout (``arch/powerpc/include/asm/book3s/64/``):

* four levels PGD/PUD/PMD/PTE with index sizes 13/9/9/5 for 64K pages
  (``radix-64k.h``) or 13/9/9/9 for 4K pages (``radix-4k.h``);
* every entry is ``__be64`` whatever the kernel's byte order (``pte_raw``);
* ``_PAGE_PRESENT`` (bit 63) marks a valid entry (``_PAGE_INVALID``, bit 61,
  a present-but-invalidated one, e.g. during a THP split), ``_PAGE_PTE``
  (bit 62) a leaf, which may sit at the PUD (1G) or PMD (2M) level;
* a directory entry points at the next table with ``val & ~0xc0000000000000ff``
  (``P4D/PUD/PMD_MASKED_BITS``, the low bits are the next level size), a leaf
  at its page with ``val & PTE_RPN_MASK`` (physical bits below
  ``_PAGE_PA_MAX`` = 53, above the page shift).

Only radix is handled: the hash MMU keeps a different Linux page table format
and translations in the hashed page table, so a dump taken with it is refused
(:func:`check_radix`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from klpinspect.errors import MemoryReadError, TargetError

__all__ = (
    "HASH_MMU_MESSAGE",
    "LINEAR_MAP_BASE",
    "PAGE_OFFSET",
    "MMU_FTR_HPTE_TABLE",
    "MMU_FTR_TYPE_RADIX",
    "RADIX_4K",
    "RADIX_64K",
    "RadixGeometry",
    "RadixPageTables",
    "check_radix",
    "is_linear_map",
    "radix_enabled",
    "radix_geometry",
)

# PAGE_OFFSET of ppc64 Book3S: the linear map of physical memory.
# The ppc64 linear map: physical address p is at PAGE_OFFSET + p (the kernel's
# PAGE_OFFSET, arch/powerpc/include/asm/page.h, for 64-bit Book3S).
PAGE_OFFSET = 0xC000000000000000
LINEAR_MAP_BASE = PAGE_OFFSET
# The linear map ends where vmalloc space starts (0xc008… with 64K pages on
# radix, commit 0034d395f89d "powerpc/mm/hash64: Map all the kernel regions in
# the same 0xc range"); anything below it is a linear-map address.
_LINEAR_MAP_END = 0xC008000000000000

# arch/powerpc/include/asm/mmu.h: cpu_spec.mmu_features bits.
MMU_FTR_HPTE_TABLE = 0x00000001
MMU_FTR_TYPE_RADIX = 0x00000040

HASH_MMU_MESSAGE = "this dump was taken with the hash MMU; module memory cannot be translated"

# book3s/64/pgtable.h
_PAGE_PRESENT = 1 << 63
_PAGE_PTE = 1 << 62
_PAGE_INVALID = 1 << 61
_PAGE_PA_MAX = 53
_DIR_MASKED_BITS = 0xC0000000000000FF

_BE64 = struct.Struct(">Q")

PhysReader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class RadixGeometry:
    """Index sizes of the four levels, top first, and the base page shift.

    :param index_bits: ``(PGD, PUD, PMD, PTE)`` ``RADIX_*_INDEX_SIZE``
    """

    page_shift: int
    index_bits: tuple[int, int, int, int]

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def shifts(self) -> tuple[int, int, int, int]:
        """``(PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT, PAGE_SHIFT)``."""
        pte, pmd, pud = self.index_bits[3], self.index_bits[2], self.index_bits[1]
        s = self.page_shift
        return (s + pte + pmd + pud, s + pte + pmd, s + pte, s)


RADIX_64K = RadixGeometry(16, (13, 9, 9, 5))
RADIX_4K = RadixGeometry(12, (13, 9, 9, 9))

_LEVEL_NAMES = ("pgd", "pud", "pmd", "pte")


def radix_geometry(page_size: int) -> RadixGeometry:
    """The radix layout for ``PAGE_SIZE`` (VMCOREINFO ``PAGESIZE``).

    :raises TargetError: for a page size radix does not use
    """
    if page_size == 1 << 16:
        return RADIX_64K
    if page_size == 1 << 12:
        return RADIX_4K
    raise TargetError(f"no radix page table layout for PAGE_SIZE {page_size}")


def radix_enabled(mmu_features: int) -> bool:
    """Whether ``cur_cpu_spec->mmu_features`` says the radix MMU was in use.

    ``early_radix_enabled()`` tests exactly this bit; ``MMU_FTR_HPTE_TABLE``
    may stay set next to it.
    """
    return bool(mmu_features & MMU_FTR_TYPE_RADIX)


def check_radix(mmu_features: int) -> None:
    """Refuse a hash-MMU kernel with a plain message.

    :raises TargetError: :data:`HASH_MMU_MESSAGE` when radix is not in use
    """
    if not radix_enabled(mmu_features):
        raise TargetError(HASH_MMU_MESSAGE)


def is_linear_map(address: int) -> bool:
    """Whether ``address`` is in the linear map (``__va(paddr)``)."""
    return LINEAR_MAP_BASE <= address < _LINEAR_MAP_END


class RadixPageTables:
    """Translate kernel virtual addresses through the radix tree at ``pgd``.

    Tables are read whole (256 B to 64 KiB) once and kept; translations are
    cached per page.

    :param read_phys: ``read_phys(paddr, size) -> bytes``; raises
        :class:`MemoryReadError` (or returns short data) for memory not in the dump
    :param pgd: physical address of the top table (``__pa(init_mm.pgd)``)
    """

    def __init__(
        self, read_phys: PhysReader, pgd: int, geometry: RadixGeometry = RADIX_64K
    ) -> None:
        self._read_phys = read_phys
        self.pgd = pgd
        self.geometry = geometry
        self._tables: dict[tuple[int, int], bytes] = {}
        # base page number -> (physical base, size) of the leaf mapping it
        self._pages: dict[int, tuple[int, int]] = {}
        self.table_reads = 0

    @classmethod
    def from_pgd_vaddr(
        cls, read_phys: PhysReader, pgd_vaddr: int, geometry: RadixGeometry = RADIX_64K
    ) -> RadixPageTables:
        """From ``init_mm.pgd`` as the kernel stores it (a linear-map address)."""
        if not is_linear_map(pgd_vaddr):
            raise TargetError(f"init_mm.pgd {pgd_vaddr:#x} is not a linear-map address")
        return cls(read_phys, pgd_vaddr - LINEAR_MAP_BASE, geometry)

    def _table(self, paddr: int, level: int, vaddr: int) -> bytes:
        size = 8 << self.geometry.index_bits[level]
        key = (paddr, level)
        try:
            return self._tables[key]
        except KeyError:
            pass
        try:
            data = self._read_phys(paddr, size)
        except MemoryReadError as e:
            raise MemoryReadError(
                vaddr, 1, f"{_LEVEL_NAMES[level]} table at physical {paddr:#x} not in the dump"
            ) from e
        if len(data) != size:
            raise MemoryReadError(
                vaddr, 1, f"{_LEVEL_NAMES[level]} table at physical {paddr:#x} not in the dump"
            )
        self.table_reads += 1
        self._tables[key] = data
        return data

    def translate_page(self, vaddr: int) -> tuple[int, int]:
        """Physical address of ``vaddr`` and how many bytes stay contiguous from it.

        The run ends at the end of the mapping that holds ``vaddr`` (base
        page, 2M or 1G leaf).

        :raises MemoryReadError: if ``vaddr`` is not mapped
        """
        g = self.geometry
        page = vaddr >> g.page_shift
        hit = self._pages.get(page)
        if hit is not None:
            base, size = hit
            off = vaddr & (size - 1)
            return base + off, size - off
        table = self.pgd
        shifts = g.shifts()
        for level, shift in enumerate(shifts):
            index = (vaddr >> shift) & ((1 << g.index_bits[level]) - 1)
            data = self._table(table, level, vaddr)
            (entry,) = _BE64.unpack_from(data, index * 8)
            if not entry & (_PAGE_PRESENT | _PAGE_INVALID):
                raise MemoryReadError(
                    vaddr, 1, f"not mapped in the kernel page tables ({_LEVEL_NAMES[level]} none)"
                )
            if entry & _PAGE_PTE or level == 3:
                size = 1 << shift
                rpn = entry & ((1 << _PAGE_PA_MAX) - 1) & ~(g.page_size - 1)
                base = rpn & ~(size - 1)
                self._pages[page] = (base, size)
                off = vaddr & (size - 1)
                return base + off, size - off
            table = entry & ~_DIR_MASKED_BITS
        raise AssertionError("unreachable")

    def mapped_run(self, vaddr: int, before: int, after: int) -> tuple[int, int]:
        """``[start, end)``: the base pages mapped without a gap around ``vaddr``.

        At most ``before`` bytes below ``vaddr``'s page and ``after`` bytes above
        it.  A vmalloc allocation (a module's ``core_layout`` or ``mem[]``
        region) is mapped page by page and followed by an unmapped guard page,
        so the run around an address in it is that allocation, as far as the
        limits reach.  Only the page tables are read.

        :raises MemoryReadError: if ``vaddr`` itself is not mapped
        """
        page = self.geometry.page_size
        self.translate_page(vaddr)
        start = end = vaddr & ~(page - 1)
        while start - page >= vaddr - before:
            try:
                self.translate_page(start - page)
            except MemoryReadError:
                break
            start -= page
        end += page
        while end + page <= vaddr + after:
            try:
                self.translate_page(end)
            except MemoryReadError:
                break
            end += page
        return start, end

    def mappings(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """``(vaddr, paddr, size)`` of every mapped piece of ``[start, end)``, in
        address order, clipped to it: what :meth:`translate_page` says page by
        page, found by walking each table once (an empty directory entry skips
        its whole span).  Unmapped pages, and those under a table not in the
        dump, are left out.  ``[start, end)`` must lie within one top-level
        (PGD) table's reach, as any range of a few MiB does.
        """
        out: list[tuple[int, int, int]] = []
        if start < end:
            self._walk(self.pgd, 0, start, end, out)
        return out

    def _walk(
        self, table: int, level: int, start: int, end: int, out: list[tuple[int, int, int]]
    ) -> None:
        g = self.geometry
        shift = g.shifts()[level]
        bits = g.index_bits[level]
        span = 1 << shift
        try:
            data = self._table(table, level, start)
        except MemoryReadError:
            return
        mask = (1 << bits) - 1
        base = start & ~((span << bits) - 1)  # where this table's reach starts
        for index in range((start >> shift) & mask, (((end - 1) >> shift) & mask) + 1):
            (entry,) = _BE64.unpack_from(data, index * 8)
            if not entry & (_PAGE_PRESENT | _PAGE_INVALID):
                continue
            first = base + index * span
            lo, hi = max(start, first), min(end, first + span)
            if entry & _PAGE_PTE or level == 3:
                rpn = entry & ((1 << _PAGE_PA_MAX) - 1) & ~(g.page_size - 1)
                out.append((lo, (rpn & ~(span - 1)) + lo - first, hi - lo))
            else:
                self._walk(entry & ~_DIR_MASKED_BITS, level + 1, lo, hi, out)

    def translate(self, vaddr: int) -> int:
        """Physical address of kernel virtual address ``vaddr``.

        :raises MemoryReadError: if it is not mapped
        """
        return self.translate_page(vaddr)[0]

    def read(self, vaddr: int, size: int) -> bytes:
        """Read ``size`` bytes at ``vaddr`` through the page tables.

        Physically contiguous pages are read together.

        :raises MemoryReadError: if any page is unmapped or not in the dump
        """
        runs: list[tuple[int, int]] = []
        addr, left = vaddr, size
        while left > 0:
            try:
                paddr, avail = self.translate_page(addr)
            except MemoryReadError as e:
                raise MemoryReadError(vaddr, size, f"{addr:#x}: {e.reason}") from None
            n = min(avail, left)
            if runs and runs[-1][0] + runs[-1][1] == paddr:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((paddr, n))
            addr += n
            left -= n
        out = []
        for paddr, n in runs:
            try:
                data = self._read_phys(paddr, n)
            except MemoryReadError:
                data = b""
            if len(data) != n:
                raise MemoryReadError(vaddr, size, f"physical {paddr:#x} not in the dump")
            out.append(data)
        return b"".join(out)
