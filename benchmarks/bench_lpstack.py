"""Benchmark: walk the livepatch stacks of 100,000 synthetic tasks.

Every task has 1-3 livepatch frames (the worst case: each one becomes a
record with symbolized frames); the target is a plain memory map that counts
reads, so the time is klpinspect's own.  Goal: <= 5 s for 100,000 tasks,
linear in the number of tasks, one ``target.read`` per task.

    python3 benchmarks/bench_lpstack.py [--tasks 10000,50000,100000] [--empty]
"""

from __future__ import annotations

import argparse
import bisect
import struct
import sys
import time
from collections.abc import Iterable, Sequence

from klpinspect.errors import KlpError, MemoryReadError
from klpinspect.livepatch import audit_livepatch_stacks
from klpinspect.ppc64.insn import STACK_END_MAGIC
from klpinspect.target import KernelInfo, ModuleInfo, StackFrame, SymbolInfo, TaskInfo

THREAD_SIZE = 0x4000
KTOC = 0xC000000000BE8000
MODULES = [(f"mod{i}", 0xC008000000000000 + i * 0x40000) for i in range(40)]


class BenchTarget:
    """Stacks stored sparsely: each task's bytes up to its ``livepatch_sp``."""

    kind = "synthetic"
    damage: tuple[tuple[int | None, str], ...] = ()

    def __init__(self, tasks: list[TaskInfo], stacks: dict[int, bytes], syms: list[SymbolInfo]):
        self._tasks = tasks
        self._stacks = stacks
        self._syms = syms
        self._starts = [s.address for s in syms]
        self.reads = 0

    def kernel(self) -> KernelInfo:
        return KernelInfo(
            release="6.1.192", toc=KTOC, livepatch_handler=0xC00000000006518C, has_livepatch_sp=True
        )

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        data = self._stacks.get(address)
        if data is None or size > len(data):
            raise MemoryReadError(address, size, "not mapped")
        return data[:size]

    def symbolize(self, address: int) -> SymbolInfo | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and address < self._syms[i].address + self._syms[i].size:
            return self._syms[i]
        return None

    def modules(self) -> Iterable[ModuleInfo]:
        return ()

    def tasks(self) -> Iterable[TaskInfo]:
        return iter(self._tasks)

    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        raise KlpError("no unwinder in the benchmark target")


def build(count: int, empty: bool) -> tuple[BenchTarget, dict[int, str]]:
    syms = [SymbolInfo(f"f{i}", b + 0x100, 0x200, name) for i, (name, b) in enumerate(MODULES)]
    tocs = {base + 0x28000: name for name, base in MODULES}
    toc_list = [KTOC, *tocs]
    tasks, stacks = [], {}
    for n in range(count):
        base = 0xC000000100000000 + n * THREAD_SIZE
        depth = 0 if empty else 1 + n % 3
        buf = bytearray(8 + 24 * depth)
        struct.pack_into("<Q", buf, 0, STACK_END_MAGIC)
        for k in range(depth):
            m = (n + k) % len(MODULES)
            lr = MODULES[m][1] + 0x100 + 4 * (n % 64)
            r2 = toc_list[m % len(toc_list)]
            struct.pack_into("<3Q", buf, 8 + 24 * k, r2, lr, STACK_END_MAGIC)
        stacks[base] = bytes(buf)
        tasks.append(TaskInfo(n + 1, f"task{n % 1000}", base, THREAD_SIZE, base + len(buf)))
    return BenchTarget(tasks, stacks, syms), tocs


def run(count: int, empty: bool) -> float:
    target, tocs = build(count, empty)
    t0 = time.perf_counter()
    records, findings = audit_livepatch_stacks(target, tocs)
    elapsed = time.perf_counter() - t0
    assert target.reads == count, (target.reads, count)
    assert findings == [], findings[:3]
    assert len(records) == (0 if empty else count)
    frames = sum(len(r.frames) for r in records)
    print(
        f"{count:>7} tasks  {frames:>7} frames  {elapsed:6.3f} s  "
        f"{elapsed / count * 1e6:5.1f} us/task  reads={target.reads}"
    )
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="10000,50000,100000")
    ap.add_argument("--empty", action="store_true", help="empty livepatch stacks only")
    ap.add_argument("--goal", type=float, default=5.0, help="seconds allowed for the largest run")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.tasks.split(",")]
    times = [run(c, args.empty) for c in counts]
    ok = times[-1] <= args.goal
    print(f"largest run {times[-1]:.3f} s: {'within' if ok else 'OVER'} the {args.goal} s goal")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
