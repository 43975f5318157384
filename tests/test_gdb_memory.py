"""The gdb back end's memory layer, without gdb: core-file dispatch, cache, page tables.

gdb's part (the inferior's ``read_memory``, the connection type, ``info
target``) is replaced by plain functions over a fake core; the text given
for ``info target`` is what gdb-multiarch 13 prints for the fixture dumps
(the same lines tests/test_gdb.py makes gdb print for real).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ptloads import SegmentReader

from klpinspect.backends.gdb.memory import (
    CHUNK_SIZE,
    LINEAR_CHUNK_SIZE,
    GdbMemory,
    RadixSetup,
    core_file_path,
    core_file_ranges,
    vmcoreinfo_page_size,
)
from klpinspect.errors import MemoryReadError, TargetError
from klpinspect.ppc64.radix import HASH_MMU_MESSAGE, PAGE_OFFSET

# gdb's "info target" after "core-file vmcore.elf" (the lab's fix-up: linear map)
INFO_LINEAR = """Symbols from "/x/vmlinux.debug".
Local core dump file:
\t`/x/vmcore.elf', file type elf64-powerpcle.
\t0xc000000000000000 - 0xc000000020000000 is load1
Local exec file:
\t`/x/vmlinux.debug', file type elf64-powerpcle.
\tEntry point: 0xc000000000000000
\t0xc000000000000000 - 0xc000000000c00000 is .text
"""
# ... after "core-file vmcore.qemu.elf" (QEMU's own: PT_LOAD at physical 0)
INFO_PHYSICAL = """Local core dump file:
\t`/x/vmcore.qemu.elf', file type elf64-powerpc.
\t0x0000000000000000 - 0x0000000020000000 is load1
"""


def test_info_target_parsing() -> None:
    assert core_file_ranges(INFO_LINEAR) == [(PAGE_OFFSET, PAGE_OFFSET + 0x20000000)]
    assert core_file_ranges(INFO_PHYSICAL) == [(0, 0x20000000)]
    assert core_file_path(INFO_LINEAR) == "/x/vmcore.elf"
    assert core_file_path(INFO_PHYSICAL) == "/x/vmcore.qemu.elf"
    assert core_file_path("Local exec file:\n\t`/x/vmlinux', file type elf64.\n") is None
    assert core_file_ranges("") == []


class FakeInferior:
    """``read_memory`` over a few ranges of a fake core, counting calls."""

    def __init__(self, ranges: dict[int, bytes]) -> None:
        self.ranges = ranges
        self.calls: list[tuple[int, int]] = []

    def read(self, address: int, size: int) -> bytes:
        self.calls.append((address, size))
        for base, data in self.ranges.items():
            if base <= address and address + size <= base + len(data):
                return data[address - base : address - base + size]
        raise MemoryReadError(address, size, "not in the dump")


def _no_radix() -> RadixSetup:
    raise AssertionError("the page tables must not be needed here")


def test_linear_core_reads_at_the_virtual_address() -> None:
    inf = FakeInferior({PAGE_OFFSET: bytes(range(256)) * (LINEAR_CHUNK_SIZE // 256)})
    mem = GdbMemory(inf.read, lambda: True, lambda: INFO_LINEAR, _no_radix)
    assert mem.read(PAGE_OFFSET + 0x10, 4) == bytes([0x10, 0x11, 0x12, 0x13])
    assert inf.calls == [(PAGE_OFFSET, LINEAR_CHUNK_SIZE)]  # one window, cached
    assert mem.read(PAGE_OFFSET + 0x20, 4) == bytes([0x20, 0x21, 0x22, 0x23])
    assert mem.read(PAGE_OFFSET + CHUNK_SIZE + 1, 1) == bytes([1])  # the next page too
    assert mem.reads == 1 and mem.bytes_read == LINEAR_CHUNK_SIZE


def test_linear_core_window_past_the_dump_falls_back_to_the_page() -> None:
    """A linear-map window reaching past the dump's memory: the page alone is read."""
    inf = FakeInferior({PAGE_OFFSET: b"\x07" * CHUNK_SIZE})
    mem = GdbMemory(inf.read, lambda: True, lambda: INFO_LINEAR, _no_radix)
    assert mem.read(PAGE_OFFSET + 8, 2) == b"\x07\x07"
    assert inf.calls == [(PAGE_OFFSET, LINEAR_CHUNK_SIZE), (PAGE_OFFSET, CHUNK_SIZE)]


def test_prefetch_is_one_read_and_quiet_when_unreadable() -> None:
    base = 0xC008000000000000
    inf = FakeInferior({base: b"\x05" * (4 * CHUNK_SIZE)})
    mem = GdbMemory(inf.read, lambda: False, lambda: "", _no_radix)
    mem.prefetch(base, 4 * CHUNK_SIZE)
    assert mem.read(base + 3 * CHUNK_SIZE, 4) == b"\x05" * 4
    assert inf.calls == [(base, 4 * CHUNK_SIZE)]
    mem.prefetch(base + 0x100000, CHUNK_SIZE)  # not there: left to the read that needs it
    with pytest.raises(MemoryReadError):
        mem.read(base + 0x100000, 4)


def test_physical_core_reads_at_paddr() -> None:
    """QEMU's own dump: linear-map reads go to ``vaddr - PAGE_OFFSET``."""
    inf = FakeInferior({0: b"\x01" * LINEAR_CHUNK_SIZE})
    mem = GdbMemory(inf.read, lambda: True, lambda: INFO_PHYSICAL, _no_radix)
    assert mem.core_maps_physical()
    assert mem.read(PAGE_OFFSET + 8, 2) == b"\x01\x01"
    assert inf.calls == [(0, LINEAR_CHUNK_SIZE)]
    with pytest.raises(MemoryReadError) as err:
        mem.read(PAGE_OFFSET + 0x100000, 8)
    assert err.value.address == PAGE_OFFSET + 0x100000  # the address asked for


def test_live_target_reads_directly() -> None:
    inf = FakeInferior({0xC008000000000000: b"\x02" * 4096})
    mem = GdbMemory(inf.read, lambda: False, lambda: "", _no_radix)
    assert mem.read(0xC008000000000010, 1) == b"\x02"
    mem.clear()
    assert mem.read(0xC008000000000010, 1) == b"\x02"
    assert len(inf.calls) == 2  # cleared: read again


def test_implausible_reads_refused() -> None:
    mem = GdbMemory(FakeInferior({}).read, lambda: True, lambda: INFO_LINEAR, _no_radix)
    for address, size in ((PAGE_OFFSET, 65 << 20), (-8, 8), ((1 << 64) - 4, 8)):
        with pytest.raises(MemoryReadError, match="implausible"):
            mem.read(address, size)


def test_module_memory_on_a_hash_mmu_core_is_refused_once() -> None:
    """vmalloc space on a core goes through the page tables; hash MMU: one plain error."""
    calls = []

    def setup() -> RadixSetup:
        calls.append(1)
        return RadixSetup(mmu_features=0, pgd=PAGE_OFFSET + 0x10000, page_size=65536)

    mem = GdbMemory(FakeInferior({}).read, lambda: True, lambda: INFO_LINEAR, setup)
    for _ in range(2):
        with pytest.raises(TargetError, match=HASH_MMU_MESSAGE.split(";")[0]):
            mem.read(0xC008000000000000, 8)
    assert calls == [1]  # decided once


def test_page_tables_unreadable_is_a_target_error() -> None:
    def setup() -> RadixSetup:
        raise MemoryReadError(PAGE_OFFSET, 8, "not in the dump")

    mem = GdbMemory(FakeInferior({}).read, lambda: True, lambda: INFO_LINEAR, setup)
    with pytest.raises(TargetError, match="cannot walk the kernel page tables"):
        mem.read(0xC008000000000000, 8)


def test_page_size_from_vmcoreinfo(lp61: Path) -> None:
    """Radix-only kernels have no ``mmu_virtual_psize`` variable: VMCOREINFO says it."""
    assert vmcoreinfo_page_size((lp61 / "vmcoreinfo.txt").read_bytes()) == 65536
    assert vmcoreinfo_page_size("OSRELEASE=6.12.0\nPAGESIZE=4096\n") == 4096
    for text in ("OSRELEASE=6.12.0\n", "PAGESIZE=8192\n", "PAGESIZE=\n", "", None):
        assert vmcoreinfo_page_size(text) is None


def _core_file(path: Path) -> SegmentReader:
    """gdb's ``read_memory`` on a core whose PT_LOADs map the linear map (``p_vaddr``)."""
    return SegmentReader(path, "p_vaddr")


@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_module_windows_bring_neighbouring_modules_in_one_read(version: str) -> None:
    """Core files: a window of module memory is one read of its mapped pages, and
    every module allocation inside it is then read from the cache, with the
    bytes drgn reads; the unmapped guard pages stay unreadable."""
    from conftest import lp_fixture
    from drgn.helpers.linux.module import for_each_module, module_address_regions

    from klpinspect.backends.drgn.program import open_core
    from klpinspect.backends.gdb.memory import MODULE_WINDOW

    lp = lp_fixture(version)
    prog = open_core(lp.vmcore_elf)
    prog.load_debug_info([str(lp.vmlinux_debug)])
    page_size = vmcoreinfo_page_size((lp.path / "vmcoreinfo.txt").read_bytes())
    assert page_size is not None
    setup = RadixSetup(
        int(prog["cur_cpu_spec"].mmu_features), int(prog["init_mm"].pgd.value_()), page_size
    )
    regions = [
        (int(start), int(size))
        for mod in for_each_module(prog)
        for start, size in module_address_regions(mod)
        if size
    ]
    first = regions[0][0]
    window = first // MODULE_WINDOW
    inside = [(s, n) for s, n in regions if s // MODULE_WINDOW == (s + n - 1) // MODULE_WINDOW
              == window]
    assert len(inside) > 1  # several allocations share the window
    core = _core_file(lp.vmcore_elf)
    try:
        live = GdbMemory(core.read, lambda: False, lambda: INFO_LINEAR, _no_radix)
        assert not live.prefetch_window(first) and live.reads == 0  # gdbstub: never
        mem = GdbMemory(core.read, lambda: True, lambda: INFO_LINEAR, lambda: setup)
        assert mem.prefetch_window(first)
        assert mem.reads == 1
        assert mem.prefetch_window(first + 8) and mem.reads == 1  # read once
        for start, size in inside:
            assert mem.read(start, size) == prog.read(start, size)
        assert mem.reads == 1
        # the guard page after an allocation is not mapped: still an error
        ends = {s + n for s, n in regions}
        starts = {s for s, _n in regions}
        guard = next(e for s, n in inside if (e := s + n) not in starts and e // MODULE_WINDOW
                     == window and all(not s2 <= e < s2 + n2 for s2, n2 in regions))
        assert guard in ends
        with pytest.raises(MemoryReadError):
            mem.read(guard, 8)
    finally:
        core.close()
