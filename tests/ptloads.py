"""An ELF vmcore read through its PT_LOAD segments, for tests that stand in
for a back end's memory: by ``p_vaddr`` (gdb's ``read_memory`` on a core that
maps the linear map) or by ``p_paddr`` (a physical reader)."""

from __future__ import annotations

import mmap
from pathlib import Path

from elftools.elf.elffile import ELFFile

from klpinspect.errors import MemoryReadError

__all__ = ("SegmentReader",)


class SegmentReader:
    """``read(address, size)`` (also the object's call) over the PT_LOADs of
    ``path``, addressed by their ``address`` field; ``reads`` counts the calls."""

    def __init__(self, path: Path, address: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.loads = [(seg[address], seg["p_filesz"], seg["p_offset"])
                      for seg in ELFFile(self._file).iter_segments()
                      if seg["p_type"] == "PT_LOAD"]
        self.reads = 0

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        for start, length, offset in self.loads:
            if start <= address and address + size <= start + length:
                pos = offset + address - start
                return self._map[pos : pos + size]
        raise MemoryReadError(address, size, "not in any PT_LOAD")

    __call__ = read

    def close(self) -> None:
        self._map.close()
        self._file.close()
