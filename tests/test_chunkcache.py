"""The chunked read-through cache the QMP and gdb back ends share."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from klpinspect.backends.chunkcache import ChunkCache

MEM = bytes(range(256)) * 64  # 16 KiB of known bytes


def _recorded(calls: list[tuple[int, int]]) -> Callable[[int, int], bytes]:
    """A fetch from MEM that appends each ``(address, size)`` to ``calls``."""

    def fetch(address: int, size: int) -> bytes:
        calls.append((address, size))
        return MEM[address : address + size]

    return fetch


def test_runs_of_missing_chunks_are_one_fetch() -> None:
    calls: list[tuple[int, int]] = []
    fetch = _recorded(calls)
    cache = ChunkCache(fetch, 1024)
    assert cache.read(100, 2900) == MEM[100:3000]
    assert calls == [(0, 3072)]  # chunks 0..2 in one fetch
    assert cache.read(1500, 500) == MEM[1500:2000]
    assert len(calls) == 1  # served from the cache
    assert cache.read(2000, 3000) == MEM[2000:5000]
    assert calls[1:] == [(3072, 2048)]  # only chunks 3..4 were missing
    assert cache.read(0, 0) == b""


def test_lru_bound() -> None:
    calls: list[int] = []

    def fetch(address: int, size: int) -> bytes:
        calls.append(address)
        return MEM[address : address + size]

    cache = ChunkCache(fetch, 1024, max_chunks=2)
    for addr in (0, 1024, 2048):
        cache.read(addr, 10)
    cache.read(0, 10)  # evicted: fetched again
    assert calls == [0, 1024, 2048, 0]


def test_prefetch_is_one_fetch_across_cached_chunks() -> None:
    """``read`` splits around cached chunks; ``prefetch`` fetches the whole span once."""
    calls: list[tuple[int, int]] = []
    fetch = _recorded(calls)
    cache = ChunkCache(fetch, 1024)
    cache.read(2100, 10)  # chunk 2 cached (a struct module inside the span)
    cache.prefetch(500, 4000)  # chunks 0..4
    assert calls[1:] == [(0, 5120)]
    assert cache.read(0, 5120) == MEM[:5120]
    cache.prefetch(1024, 3000)  # all cached: nothing fetched
    cache.prefetch(0, 0)
    assert len(calls) == 2


def test_insert_keeps_whole_aligned_chunks() -> None:
    calls: list[tuple[int, int]] = []
    fetch = _recorded(calls)
    cache = ChunkCache(fetch, 1024, max_chunks=3)
    cache.insert(1024, MEM[1024 : 1024 + 2048 + 100])  # two chunks; the partial tail dropped
    assert cache.read(1500, 1500) == MEM[1500:3000]
    assert calls == []
    assert cache.read(3000, 200) == MEM[3000:3200]
    assert calls == [(3072, 1024)]  # not inserted: fetched
    cache.insert(5120, MEM[5120:6144])  # over the bound: the least recently used go
    assert cache.read(1024, 10) == MEM[1024:1034]
    assert calls[-1] == (1024, 1024)
    with pytest.raises(ValueError, match="not aligned"):
        cache.insert(100, MEM[100:1124])
