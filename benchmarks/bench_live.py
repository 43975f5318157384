#!/usr/bin/env python3
"""Benchmark: a full audit of a live QEMU guest over QMP vs. the audit of its dump.

Boots the fixture's 6.1 livepatch kernel with the lab (or uses a running
guest: ``--qmp SOCK``), then, in this process and each ``--repeat`` times:

* ``open``: ``open_program(qemu=SOCK)`` (``open_qmp`` + debug info), and
  ``open_qmp`` alone;
* ``audit``: the full audit (``klpinspect audit``) on that program;
* the same two on a ``dump-guest-memory`` dump of the same guest taken in the
  same run (fixed up by the lab).

It reports wall times (best of the repeats), the live/dump ratio (goal
<= 1.5, issue 13; it was 2), QMP round trips and bytes per module, the QMP read throughput
(``pmemsave``, 64 KiB and 16 MiB reads), boot and dump times.  ``--json``
prints the numbers as JSON.

    python3 benchmarks/bench_live.py [--qmp SOCK --dump VMCORE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.5  # live/dump, total (issue 13)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from labload import load_lab  # noqa: E402

from klpinspect.backends.drgn.program import open_program  # noqa: E402
from klpinspect.backends.drgn.qmp import (  # noqa: E402
    QMPClient,
    QMPPhysicalMemory,
    open_qmp,
    qmp_read_stats,
)
from klpinspect.backends.drgn.target import DrgnTarget  # noqa: E402
from klpinspect.commands import run_parsed  # noqa: E402


def _audit_args() -> argparse.Namespace:
    from klpinspect.cli import make_parser

    return make_parser().parse_args(["--format", "json", "audit"])


def time_audit(kind: str, symbols: list[str], **target: Any) -> dict[str, Any]:
    """Open the target, audit it; seconds for each and the QMP counters."""
    t0 = time.perf_counter()
    prog, k = open_program(symbols=symbols, **target)
    t1 = time.perf_counter()
    stats = qmp_read_stats(prog)
    opened = stats.copy() if stats else None
    text, _status = run_parsed(DrgnTarget(prog, k), "audit", _audit_args(), "json")
    t2 = time.perf_counter()
    report = json.loads(text)
    out: dict[str, Any] = {
        "kind": kind,
        "open_s": t1 - t0,
        "audit_s": t2 - t1,
        "total_s": t2 - t0,
        "modules": len(report["modules"]),
        "slots": sum(
            1 for m in report["modules"] for s in m["stubs"] if s["kind"] != "empty"
        ),
    }
    if stats is not None and opened is not None:
        n = max(1, out["modules"])
        out["round_trips_open"] = opened.round_trips
        out["round_trips_audit"] = stats.round_trips - opened.round_trips
        out["reads_audit"] = stats.requests - opened.requests
        out["round_trips_per_module"] = (stats.round_trips - opened.round_trips) / n
        out["reads_per_module"] = (stats.requests - opened.requests) / n
        out["kib_per_module"] = (stats.bytes_fetched - opened.bytes_fetched) / n / 1024
        out["qmp_s"] = stats.seconds
        prog.cache["klpinspect.qmp"].close()
    return out


def qmp_throughput(sock: str) -> dict[str, float]:
    """pmemsave round trip and throughput for 64 KiB and 16 MiB reads."""
    out: dict[str, float] = {}
    with QMPClient(sock) as q:
        mem = QMPPhysicalMemory(q, 512 << 20)
        for size, n in ((1 << 16, 200), (16 << 20, 8)):
            t0 = time.perf_counter()
            for i in range(n):
                mem.read_uncached((i * size) % (256 << 20), size)
            dt = (time.perf_counter() - t0) / n
            out[f"pmemsave_{size >> 10}k_ms"] = dt * 1e3
            out[f"pmemsave_{size >> 10}k_MBps"] = size / dt / 1e6
        mem.close()
    t0 = time.perf_counter()
    prog = open_qmp(sock)
    out["open_qmp_s"] = time.perf_counter() - t0
    prog.cache["klpinspect.qmp"].close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qmp", help="QMP socket of a running guest (default: boot one)")
    ap.add_argument("--dump", help="its dump (default: take one)")
    ap.add_argument("--symbols", action="append", help="-s files (default: fixture)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    lab = load_lab()
    symbols = a.symbols or [str(lab.fixture_dir() / "vmlinux.debug")]
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        guest = None
        sock, dump = a.qmp, a.dump
        if sock is None:
            guest = lab.Guest(lab.fixture_kernel(), Path(tmp) / "guest")
            guest.start()
        try:
            if guest is not None:
                res["boot_s"] = guest.wait_ready()
                sock = guest.qmp_path
            if dump is None:
                if guest is None:
                    ap.error("--qmp without --dump: give the guest's dump too")
                d = guest.dump(Path(tmp) / "vmcore.elf")
                res["dump_s"], res["fixup_s"] = d.dump_seconds, d.fixup_seconds
                dump = str(d.path)
            assert sock is not None
            res.update(qmp_throughput(sock))
            live = [time_audit("qemu", symbols, qemu=sock) for _ in range(a.repeat)]
            dumped = [time_audit("vmcore", symbols, core=dump) for _ in range(a.repeat)]
        finally:
            if guest is not None:
                guest.stop()
    best_live = min(live, key=lambda r: r["total_s"])
    best_dump = min(dumped, key=lambda r: r["total_s"])
    res["live"], res["dump"] = best_live, best_dump
    res["ratio_total"] = best_live["total_s"] / best_dump["total_s"]
    res["ratio_audit"] = best_live["audit_s"] / best_dump["audit_s"]
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    for k in ("boot_s", "dump_s", "fixup_s", "open_qmp_s"):
        if k in res:
            print(f"{k:28} {res[k]:8.2f}")
    for k, v in res.items():
        if k.startswith("pmemsave"):
            print(f"{k:28} {v:8.2f}")
    for name in ("live", "dump"):
        r = res[name]
        print(f"{name}: open {r['open_s']:.2f} s, audit {r['audit_s']:.2f} s, "
              f"total {r['total_s']:.2f} s ({r['modules']} modules, {r['slots']} slots)")
    lv = res["live"]
    print(f"QMP: {lv['round_trips_open']} round trips to open, {lv['round_trips_audit']} "
          f"for the audit = {lv['round_trips_per_module']:.1f}/module "
          f"({lv['reads_per_module']:.0f} reads/module hit the cache, "
          f"{lv['kib_per_module']:.0f} KiB/module fetched)")
    ok = "ok" if res["ratio_total"] <= GOAL else "OVER GOAL"
    print(f"live/dump: total {res['ratio_total']:.2f}, audit alone {res['ratio_audit']:.2f} "
          f"(goal <= {GOAL}: {ok})")
    return 0 if res["ratio_total"] <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
