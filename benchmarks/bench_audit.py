"""Audit speed and scale.

(a) wall time of ``klpinspect audit`` on the fixture dump divided by drgn's own
    open + ``for_each_module`` on the same dump (goal <= 1.3);
(b) a synthetic Target with N modules x 1,000 slots: audit time for growing N
    (goal <= 10 s for 5,000 modules, linear);
(c) memory reads per module (goal <= 2 for stubs).

Run: python3 benchmarks/bench_audit.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from klpinspect.audit import audit  # noqa: E402
from klpinspect.errors import MemoryReadError  # noqa: E402
from klpinspect.ppc64 import insn  # noqa: E402
from klpinspect.target import KernelInfo, ModuleInfo, StackFrame, SymbolInfo, TaskInfo  # noqa: E402

KTOC = 0xC000000001C0B100
FC = 0xC000000000089B00
FRC = 0xC000000000089960
KTEXT = (0xC000000000000000, 0xC000000001000000)


def _normal(stub: int, toc: int, target: int) -> bytes:
    rel = stub - toc
    words = (
        insn.addis(11, 2, insn.ha(rel)), insn.addi(11, 11, insn.lo(rel)), insn.STD_R2_24_R1,
        insn.ld(12, 32, 11), insn.MTCTR_R12, insn.BCTR, 0, insn.STUB_MAGIC,
    )
    return insn.to_bytes(words) + target.to_bytes(8, "little")


def _ftrace(target: int) -> bytes:
    rel = target - KTOC
    words = (
        insn.ld(12, 16, 13), insn.addis(12, 12, insn.ha(rel)), insn.addi(12, 12, insn.lo(rel)),
        insn.MTCTR_R12, insn.BCTR, 0, 0, insn.STUB_MAGIC,
    )
    return insn.to_bytes(words) + target.to_bytes(8, "little")


class ScaleTarget:
    """N modules x S slots (3 ftrace + the rest normal), one region per module."""

    kind = "synthetic"
    damage: tuple[tuple[int | None, str], ...] = ()

    def __init__(self, nmods: int, slots: int) -> None:
        self.reads = 0
        self._kernel = KernelInfo(release="bench", toc=KTOC, toc_source="paca",
                                  ftrace_caller=FC, ftrace_regs_caller=FRC,
                                  text_ranges=(KTEXT,), paca_toc_offset=16)
        self._mods: list[ModuleInfo] = []
        self._mem: dict[int, bytes] = {}
        for m in range(nmods):
            base = 0xC008000000000000 + m * 0x100000
            stubs = base + 0x10000
            toc_sec = base + 0x80000
            toc = toc_sec + 0x8000
            parts = [
                _normal(stubs + i * 40, toc, KTEXT[0] + 0x1000 + (i % 500) * 0x100)
                for i in range(slots - 3)
            ]
            parts += [_ftrace(0xC000000000089A00), _ftrace(FC), _ftrace(FRC), bytes(40)]
            self._mem[stubs] = b"".join(parts)
            self._mods.append(ModuleInfo(
                name=f"mod{m}", text_ranges=((base, stubs + len(self._mem[stubs])),),
                sections={".text": base, ".toc": toc_sec, ".stubs": stubs},
                stubs=stubs, toc_section=toc_sec,
                tramp=stubs + (slots - 2) * 40, tramp_regs=stubs + (slots - 1) * 40,
            ))

    def kernel(self) -> KernelInfo:
        return self._kernel

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        base = address - (address - 0xC008000000000000) % 0x100000 + 0x10000
        data = self._mem.get(base)
        if data is None or address < base or address + size > base + len(data):
            raise MemoryReadError(address, size, "not mapped")
        return data[address - base : address - base + size]

    def symbolize(self, address: int) -> SymbolInfo | None:
        if KTEXT[0] <= address < KTEXT[1]:
            return SymbolInfo(f"kfunc_{address:x}", address, 0x100, "vmlinux")
        return None

    def modules(self) -> Iterable[ModuleInfo]:
        return self._mods

    def tasks(self) -> Iterable[TaskInfo]:
        return []

    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        return []


def bench_scale(sizes: Sequence[int], slots: int) -> None:
    print(f"(b) synthetic audit, {slots} slots per module")
    base = None
    for n in sizes:
        target = ScaleTarget(n, slots)
        t0 = time.perf_counter()
        report = audit(target, callsites=False, tasks=False)
        dt = time.perf_counter() - t0
        assert len(report.modules) == n and not report.findings
        per = dt / (n * slots) * 1e6
        base = base or per
        print(f"    {n:6d} modules x {slots} = {n * slots:9,d} slots: {dt:7.2f} s "
              f"({per:.2f} us/slot, x{per / base:.2f} of the smallest)")
        print(f"    (c) reads per module: {target.reads / n:.2f}")
        # each size starts from the same clean heap, not beside the last report
        del report, target
        gc.collect()


def bench_dump() -> None:
    fx = REPO.parent / "shared" / "fixtures" / "ppc64le-6.1-lp"
    core = REPO / ".cache" / "fixtures" / "vmcore.elf"
    if not core.exists():
        print("(a) skipped: run the tests once to unpack .cache/fixtures/vmcore.elf")
        return
    debug = fx / "vmlinux.debug"
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def timed(cmd: list[str]) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - t0)
        return best

    drgn_code = ("from drgn.helpers.linux.module import for_each_module\n"
                 "print(sum(1 for _ in for_each_module(prog)))")
    t_drgn = timed([sys.executable, "-m", "drgn", "-q", "-c", str(core), "-s", str(debug),
                    "-e", drgn_code])
    t_stubs = timed([sys.executable, "-m", "klpinspect", "-c", str(core), "-s", str(debug),
                     "stubs"])
    t_audit = timed([sys.executable, "-m", "klpinspect", "-c", str(core), "-s", str(debug),
                     "audit"])
    print("(a) fixture dump (best of 3, wall time)")
    print(f"    drgn open + for_each_module: {t_drgn:.2f} s")
    print(f"    klpinspect stubs:            {t_stubs:.2f} s  ratio {t_stubs / t_drgn:.2f}")
    print(f"    klpinspect audit:            {t_audit:.2f} s  ratio {t_audit / t_drgn:.2f}"
          "  (goal <= 1.3)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    args = ap.parse_args()
    bench_dump()
    sizes = [100, 500, 1000] if args.quick else [500, 1000, 2500, 5000]
    bench_scale(sizes, 1000)


if __name__ == "__main__":
    main()
