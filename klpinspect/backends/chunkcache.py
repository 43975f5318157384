"""A read-through cache of fixed-size chunks for slow transports (QMP, gdbstub).

drgn and the core make many small reads; over a remote protocol each would be
a round trip.  Reads are served from ``chunk``-sized pieces, and every run of
adjacent missing chunks is fetched with one call, so reading N uncached chunks
costs one round trip, not N.  Pure: the fetch function does the I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

__all__ = ("ChunkCache",)


class ChunkCache:
    """Chunked read-through cache.

    :param fetch: ``fetch(address, size)`` returns exactly ``size`` bytes (or raises)
    :param chunk: chunk size in bytes
    :param max_chunks: how many chunks to keep (least recently used go first);
        ``None`` keeps everything
    """

    def __init__(
        self, fetch: Callable[[int, int], bytes], chunk: int, max_chunks: int | None = None
    ) -> None:
        self._fetch = fetch
        self.chunk = chunk
        self.max_chunks = max_chunks
        self._chunks: OrderedDict[int, bytes] = OrderedDict()

    def clear(self) -> None:
        self._chunks.clear()

    def prefetch(self, address: int, size: int) -> None:
        """Bring ``[address, address + size)`` in with one fetch, if any chunk is missing.

        Unlike :meth:`read`, chunks already cached inside the span do not split
        it: the whole chunk-aligned span is fetched once (a few cached chunks
        read again rather than one fetch per run of missing ones).
        """
        if size <= 0:
            return
        ch = self.chunk
        first, last = address // ch, (address + size - 1) // ch
        chunks = self._chunks
        if all(i in chunks for i in range(first, last + 1)):
            return
        data = self._fetch(first * ch, (last - first + 1) * ch)
        for k in range(first, last + 1):
            off = (k - first) * ch
            chunks[k] = data[off : off + ch]
            if self.max_chunks is not None:
                chunks.move_to_end(k)
        if self.max_chunks is not None:
            while len(chunks) > self.max_chunks:
                chunks.popitem(last=False)

    def insert(self, address: int, data: bytes) -> None:
        """Keep ``data``, fetched by the caller, as the chunks from ``address`` on
        (chunk-aligned; whole chunks only, a partial tail is dropped)."""
        ch = self.chunk
        if address % ch:
            raise ValueError(f"insert at {address:#x}: not aligned to {ch:#x}")
        chunks = self._chunks
        first = address // ch
        for k in range(len(data) // ch):
            chunks[first + k] = data[k * ch : (k + 1) * ch]
            if self.max_chunks is not None:
                chunks.move_to_end(first + k)
        if self.max_chunks is not None:
            while len(chunks) > self.max_chunks:
                chunks.popitem(last=False)

    def read(self, address: int, size: int) -> bytes:
        """``size`` bytes at ``address``, fetching missing chunks in runs."""
        if size <= 0:
            return b""
        ch = self.chunk
        first, last = address // ch, (address + size - 1) // ch
        chunks = self._chunks
        lru = self.max_chunks is not None
        i = first
        while i <= last:
            if i in chunks:
                if lru:
                    chunks.move_to_end(i)
                i += 1
                continue
            j = i
            while j + 1 <= last and j + 1 not in chunks:
                j += 1
            data = self._fetch(i * ch, (j - i + 1) * ch)
            for k in range(i, j + 1):
                off = (k - i) * ch
                chunks[k] = data[off : off + ch]
            i = j + 1
        off = address - first * ch
        if first == last:
            out = chunks[first][off : off + size]
        else:
            out = b"".join(chunks[k] for k in range(first, last + 1))[off : off + size]
        if lru:
            assert self.max_chunks is not None
            while len(chunks) > self.max_chunks:
                chunks.popitem(last=False)
        return out
