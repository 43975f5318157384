"""The radix page-table walker against the real ppc64le 6.1 dump.

The fixture's ``vmcore.elf`` maps only the linear map; the walker translates
module (vmalloc) addresses through ``init_mm.pgd`` using reads of that map
alone, and must give the bytes drgn reads for the same addresses.  A small
synthetic tree covers the 2M and 1G leaves the fixture does not use.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import drgn
import pytest
from ptloads import SegmentReader

from klpinspect.backends.drgn.program import open_core
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.errors import MemoryReadError, TargetError
from klpinspect.ppc64.radix import (
    HASH_MMU_MESSAGE,
    LINEAR_MAP_BASE,
    RADIX_4K,
    RADIX_64K,
    RadixPageTables,
    check_radix,
    is_linear_map,
    radix_enabled,
    radix_geometry,
)


@pytest.fixture(scope="module")
def prog(vmcore_elf: Path, vmlinux_debug: Path) -> drgn.Program:
    program = open_core(vmcore_elf)
    program.load_debug_info([str(vmlinux_debug)])
    return program


@pytest.fixture(scope="module")
def phys(vmcore_elf: Path) -> Iterator[SegmentReader]:
    mem = SegmentReader(vmcore_elf, "p_paddr")  # read_phys: physical = p_paddr
    yield mem
    mem.close()


@pytest.fixture()
def tables(prog: drgn.Program, phys: SegmentReader) -> RadixPageTables:
    pgd = int(prog["init_mm"].pgd.value_())
    return RadixPageTables.from_pgd_vaddr(phys, pgd, RADIX_64K)


def test_fixture_is_radix(prog: drgn.Program) -> None:
    features = int(prog["cur_cpu_spec"].mmu_features)
    assert radix_enabled(features)
    check_radix(features)
    # The fixture's VMCOREINFO names the same root.
    assert int(prog["init_mm"].pgd.value_()) == int(prog["swapper_pg_dir"].address_of_())


def test_hash_mmu_refused(prog: drgn.Program) -> None:
    features = int(prog["cur_cpu_spec"].mmu_features) & ~0x40
    assert not radix_enabled(features)
    with pytest.raises(TargetError, match="hash MMU; module memory cannot be translated"):
        check_radix(features)
    assert "hash MMU" in HASH_MMU_MESSAGE


def test_vmcore_has_only_the_linear_map(phys: SegmentReader) -> None:
    # Why the walker exists: no PT_LOAD covers 0xc008… (the README's rk_lib .stubs).
    assert len(phys.loads) == 1 and phys.loads[0][0] == 0
    assert is_linear_map(0xC000000000BE8000)
    assert not is_linear_map(0xC008000000EF0068)


@pytest.mark.parametrize(
    "address",
    [
        0xC008000000EF0068,  # rk_lib .stubs
        0xC008000000F40068,  # rk_target_inner
        0xC008000000F90128,  # rk_lp .stubs
        0xC008000000FB0000,  # rk_lp .toc
        0xC0080000008A31F8,  # bridge .stubs
    ],
)
def test_module_addresses_match_drgn(
    prog: drgn.Program, tables: RadixPageTables, address: int
) -> None:
    paddr = tables.translate(address)
    assert paddr < 512 << 20
    assert tables.read(address, 4096) == prog.read(address, 4096)


def test_every_module_region_matches_drgn(prog: drgn.Program, tables: RadixPageTables) -> None:
    mods = list(DrgnTarget(prog).modules())
    assert len(mods) == 40
    total = 0
    for mod in mods:
        assert mod.stubs is not None
        for start, end in mod.text_ranges:
            assert tables.read(start, end - start) == prog.read(start, end - start), mod.name
            total += end - start
        assert tables.read(mod.stubs, 40 * 8) == prog.read(mod.stubs, 40 * 8)
        # struct module itself is in module memory too
        assert mod.address is not None
        assert tables.read(mod.address, 1024) == prog.read(mod.address, 1024)
    assert total > 1 << 20
    # Tables are read once: 1 PGD, few PUD/PMD, one PTE fragment per 2M.
    assert tables.table_reads < 64


def test_mapped_run_is_the_module_allocation(prog: drgn.Program, tables: RadixPageTables) -> None:
    """Around a ``struct module`` the pages mapped without a gap are its allocation
    (6.1: ``core_layout``, text to kallsyms), cut at the limits given."""
    mods = list(DrgnTarget(prog).modules())
    regions = {
        (int(m.core_layout.base), int(m.core_layout.base) + int(m.core_layout.size))
        for m in (drgn.Object(prog, "struct module", address=mod.address) for mod in mods)
    }
    page = RADIX_64K.page_size
    for mod in mods:
        assert mod.address is not None
        (region,) = [r for r in regions if r[0] <= mod.address < r[1]]
        assert tables.mapped_run(mod.address, 1 << 20, 1 << 20) == region, mod.name
        here = mod.address & ~(page - 1)
        assert tables.mapped_run(mod.address, 0, 0) == (here, here + page)
    with pytest.raises(MemoryReadError):
        tables.mapped_run(0xC008100000000000, 1 << 20, 1 << 20)


def test_linear_map_translates_to_itself(tables: RadixPageTables) -> None:
    for address in (0xC000000000BE8000, 0xC0000000037E8008):
        assert tables.translate(address) == address - LINEAR_MAP_BASE


def test_unmapped_address(tables: RadixPageTables) -> None:
    # vmalloc space far beyond anything the 512 MiB guest mapped
    with pytest.raises(MemoryReadError, match="not mapped in the kernel page tables"):
        tables.read(0xC008100000000000, 8)
    # a read that runs off the end of a module's mapping
    with pytest.raises(MemoryReadError):
        tables.read(0xC008000000EF0000, 64 << 20)


def test_pgd_outside_the_dump(phys: SegmentReader) -> None:
    tables = RadixPageTables(phys, 1 << 40)
    with pytest.raises(MemoryReadError, match="pgd table at physical 0x10000000000 not in"):
        tables.translate(0xC008000000EF0068)
    with pytest.raises(TargetError, match="not a linear-map address"):
        RadixPageTables.from_pgd_vaddr(phys, 0xC008000000000000)


def test_geometry() -> None:
    assert radix_geometry(65536) is RADIX_64K
    assert radix_geometry(4096) is RADIX_4K
    assert RADIX_64K.shifts() == (39, 30, 21, 16)
    assert RADIX_4K.shifts() == (39, 30, 21, 12)
    with pytest.raises(TargetError, match="PAGE_SIZE 16384"):
        radix_geometry(16384)


# -- synthetic trees: leaves at the PMD (2M) and PUD (1G) levels ----------------

_PRESENT = 1 << 63
_LEAF = 1 << 62 | _PRESENT


class _Tables:
    """Physical memory holding hand-built radix tables (big-endian entries)."""

    def __init__(self) -> None:
        self.mem: dict[int, bytearray] = {}

    def table(self, paddr: int, bits: int) -> bytearray:
        return self.mem.setdefault(paddr, bytearray(8 << bits))

    def set(self, paddr: int, bits: int, index: int, value: int) -> None:
        struct.pack_into(">Q", self.table(paddr, bits), index * 8, value)

    def __call__(self, paddr: int, size: int) -> bytes:
        for base, data in self.mem.items():
            if base <= paddr and paddr + size <= base + len(data):
                return bytes(data[paddr - base : paddr - base + size])
        # data pages: a recognisable pattern derived from the address
        return b"".join(struct.pack(">Q", (paddr + i) | 1) for i in range(0, size, 8))[:size]


def _indexes(vaddr: int) -> tuple[int, int, int, int]:
    s = RADIX_64K.shifts()
    bits = RADIX_64K.index_bits
    return tuple((vaddr >> sh) & ((1 << b) - 1) for sh, b in zip(s, bits, strict=True))  # type: ignore[return-value]


def test_pmd_and_pud_leaves() -> None:
    mem = _Tables()
    pgd, pud, pmd, pte = 0x10000, 0x20000, 0x30000, 0x40000
    nls = 9  # next-level size in the low bits, masked off by the walker
    va_2m = 0xC008000000200000 + 0x1234
    va_1g = 0xC008000040000000 + 0x123456
    va_64k = 0xC008000000000000 + 0x10000 + 0x42
    i = _indexes(va_2m)
    mem.set(pgd, 13, i[0], _PRESENT | pud | nls)
    mem.set(pud, 9, i[1], _PRESENT | pmd | nls)
    mem.set(pmd, 9, i[2], _LEAF | 0x8000000)  # 2M page at 128 MiB
    j = _indexes(va_1g)
    mem.set(pud, 9, j[1], _LEAF | 0x40000000)  # 1G page at 1 GiB
    k = _indexes(va_64k)
    mem.set(pmd, 9, k[2], _PRESENT | pte | 5)
    mem.set(pte, 5, k[3], _LEAF | 0x5550000 | 0x3F)  # low flag bits are not address
    t = RadixPageTables(mem, pgd, RADIX_64K)
    assert t.translate(va_2m) == 0x8000000 + 0x1234
    assert t.translate_page(va_2m)[1] == (2 << 20) - 0x1234
    assert t.translate(va_1g) == 0x40000000 + 0x123456
    assert t.translate(va_64k) == 0x5550042
    # a read across the 2M leaf is one physical run
    data = t.read(va_2m, 0x20000)
    assert data[:8] == mem(0x8000000 + 0x1234, 8)
    # an empty PTE slot next to the mapped one
    with pytest.raises(MemoryReadError, match="pte none"):
        t.translate(va_64k + 0x10000)


def _page_by_page(t: RadixPageTables, start: int, end: int) -> list[tuple[int, int, int]]:
    """What :meth:`RadixPageTables.translate_page` says for each base page of a range."""
    page = t.geometry.page_size
    out = []
    for vaddr in range(start, end, page):
        try:
            paddr, _avail = t.translate_page(vaddr)
        except MemoryReadError:
            continue
        out.append((vaddr, paddr, page))
    return out


def _per_page(maps: list[tuple[int, int, int]], page: int) -> list[tuple[int, int, int]]:
    return [(v + o, p + o, page) for v, p, n in maps for o in range(0, n, page)]


def test_mappings_are_translate_page_over_a_range(tables: RadixPageTables) -> None:
    """The fixture's module area, 16 MiB of it: mapped pieces and guard pages as
    the per-page walk finds them."""
    start, end = 0xC008000000000000, 0xC008000001000000
    maps = tables.mappings(start, end)
    assert len(maps) > 100  # modules, each followed by its unmapped guard page
    assert _per_page(maps, RADIX_64K.page_size) == _page_by_page(tables, start, end)
    # clipped to the range asked for, even inside a page
    inner = tables.mappings(maps[3][0] + 0x100, maps[3][0] + 0x200)
    assert inner == [(maps[3][0] + 0x100, maps[3][1] + 0x100, 0x100)]
    assert tables.mappings(0xC008100000000000, 0xC008100000100000) == []


def test_mappings_through_pmd_and_pud_leaves() -> None:
    mem = _Tables()
    pgd, pud, pmd = 0x10000, 0x20000, 0x30000
    va = 0xC008000000000000
    i = _indexes(va + (2 << 20))
    mem.set(pgd, 13, i[0], _PRESENT | pud | 9)
    mem.set(pud, 9, i[1], _PRESENT | pmd | 9)
    mem.set(pmd, 9, i[2], _LEAF | 0x8000000)  # 2M page at 128 MiB
    mem.set(pud, 9, _indexes(va + (1 << 30))[1], _LEAF | 0x40000000)  # 1G page at 1 GiB
    t = RadixPageTables(mem, pgd, RADIX_64K)
    lo, hi = va + (2 << 20) - 0x10000, va + (4 << 20) + 0x10000
    assert t.mappings(lo, hi) == [(va + (2 << 20), 0x8000000, 2 << 20)]
    assert _per_page(t.mappings(lo, hi), 0x10000) == _page_by_page(t, lo, hi)
    gig = va + (1 << 30) + 0x123000
    assert t.mappings(gig, gig + 0x5000) == [(gig, 0x40000000 + 0x123000, 0x5000)]
