#!/usr/bin/env python3
"""Benchmark: the gdb commands (``klp-audit``, ``klp-stubs``) in ``gdb-multiarch``.

Over the fixture's ``vmcore.elf`` (``core-file``: module memory through the
radix page-table walker) and, with ``--lab`` (boots the fixture kernel) or
``--gdbstub HOST:PORT`` (a running guest), over QEMU's gdbstub; then the
drgn QMP audit of the same guest (``--qmp SOCK``; the lab guest has one) for
comparison.

For each command, on a fresh target, best of ``--repeat``: wall time inside
gdb, ``read_memory`` calls and bytes, the same per module after the kernel
facts (``kernel()``: paca, TOC, symbols) are subtracted.  Goal: at most 2
reads per module for ``klp-stubs``, everything included: on a core file
the ``struct module`` comes with its whole allocation in one read (before
6.4 ``core_layout``: text with ``.stubs`` and the module kallsyms; since
then ``mem[MOD_DATA]`` with the kallsyms, and the text is the second read),
the section table (``mod->sect_attrs``, slab memory) in 64 KiB windows that
several modules share, the page-table setup once.  Over a gdbstub the bytes
are the cost: ``struct module`` and ``.stubs`` alone, kallsyms in one read
where a name is needed.

Then the cost of ``klp-audit`` next to gdb's own: ``gdb-multiarch -batch``
with just ``file`` + ``core-file`` against the same plus ``source`` of the
loader and ``klp-audit``, interleaved, ``--ratio-runs`` times, medians and
their ratio (goal: at most 1.2x).  With ``PYTHONDONTWRITEBYTECODE`` set gdb's
Python compiles the package on every run (~0.05 s); an installed package has
its ``.pyc`` files, so unset it for the figure users see.

    python3 benchmarks/bench_gdb.py [--fixture 6.1|7.2] [--lab | --gdbstub HOST:PORT --qmp SOCK]
        [--repeat 3] [--ratio-runs 5] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from labload import load_lab  # noqa: E402

SCRIPT = REPO / "gdb" / "klpinspect.py"

# Runs inside gdb, after ``source gdb/klpinspect.py`` (the commands' _STATE, _target).
_MEASURE = r"""
import gdb, json, time
from klpinspect.backends.gdb.commands import _STATE, _target
_out = {}
for _cmd in %(commands)r:
    _best = None
    for _ in range(%(repeat)d):
        _STATE["target"] = None
        _t = _target()
        _t.kernel()
        _setup = (_t.reads, _t.bytes_read)
        _STATE["target"] = None
        _t0 = time.perf_counter()
        _text = gdb.execute(_cmd, to_string=True)
        _secs = time.perf_counter() - _t0
        _t = _STATE["target"]
        _mods = sum(1 for _m in _t.modules()) if "stubs" in _cmd or "audit" in _cmd else 0
        _run = {"seconds": _secs, "reads": _t.reads, "bytes": _t.bytes_read,
                "setup_reads": _setup[0], "setup_bytes": _setup[1], "modules": _mods,
                "output_lines": _text.count("\n")}
        if _best is None or _secs < _best["seconds"]:
            _best = _run
    _out[_cmd] = _best
with open(%(result)r, "w") as _f:
    json.dump(_out, _f)
"""

COMMANDS = ("klp-stubs", "klp-audit")


def run_gdb_measure(target_args: list[str], symbols: Path, repeat: int) -> dict[str, Any]:
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        raise SystemExit("gdb-multiarch not installed (apt-get install gdb-multiarch)")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        measure = Path(tmp) / "measure.py"
        measure.write_text(
            _MEASURE % {"commands": COMMANDS, "repeat": repeat, "result": str(result)}
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [gdb, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
             "-ex", f"file {symbols}", *target_args,
             "-ex", f"source {SCRIPT}", "-ex", f"source {measure}", "-ex", "detach"],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        total = time.perf_counter() - t0
        if not result.exists():
            raise SystemExit(f"gdb failed:\n{proc.stderr}")
        data: dict[str, Any] = json.loads(result.read_text())
    data["gdb_session_seconds"] = total
    for run in data.values():
        if isinstance(run, dict) and run.get("modules"):
            n = run["modules"]
            run["reads_per_module"] = (run["reads"] - run["setup_reads"]) / n
            run["bytes_per_module"] = (run["bytes"] - run["setup_bytes"]) / n
    return data


def load_ratio(symbols: Path, core: Path, runs: int) -> dict[str, Any]:
    """Median wall time of gdb loading vmlinux + core, without and with ``klp-audit``."""
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        raise SystemExit("gdb-multiarch not installed (apt-get install gdb-multiarch)")
    base = [gdb, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
            "-ex", f"file {symbols}", "-ex", f"core-file {core}"]  # fmt: skip
    audit = [*base, "-ex", f"source {SCRIPT}", "-ex", "klp-audit"]
    times: dict[str, list[float]] = {"gdb": [], "audit": []}
    for _ in range(runs):
        for key, argv in (("gdb", base), ("audit", audit)):
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
            times[key].append(time.perf_counter() - t0)
            if key == "audit" and "klp-" not in proc.stdout + proc.stderr and proc.returncode:
                raise SystemExit(f"gdb failed:\n{proc.stderr}")
    gdb_s, audit_s = statistics.median(times["gdb"]), statistics.median(times["audit"])
    return {"gdb_seconds": gdb_s, "audit_seconds": audit_s, "ratio": audit_s / gdb_s,
            "runs": runs, "all": times}


def qmp_audit(qmp: str, symbols: Path, repeat: int) -> dict[str, Any]:
    """The drgn back end's audit over QMP, as ``klpinspect --qemu`` runs it."""
    from klpinspect.backends.drgn.program import open_program
    from klpinspect.backends.drgn.target import DrgnTarget
    from klpinspect.cli import make_parser
    from klpinspect.commands import run_parsed

    best: dict[str, Any] | None = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        prog, kind = open_program(qemu=qmp, symbols=[str(symbols)])
        t1 = time.perf_counter()
        args = make_parser().parse_args(["--format", "json", "audit"])
        run_parsed(DrgnTarget(prog, kind), "audit", args)
        t2 = time.perf_counter()
        # QEMU serves one QMP client per socket: let go of this one first.
        del prog
        gc.collect()
        run = {"open_seconds": t1 - t0, "audit_seconds": t2 - t1, "total_seconds": t2 - t0}
        if best is None or run["total_seconds"] < best["total_seconds"]:
            best = run
    assert best is not None
    return best


def _print(label: str, data: dict[str, Any]) -> None:
    print(f"== {label} (gdb session {data['gdb_session_seconds']:.1f} s incl. debug info load)")
    for cmd in COMMANDS:
        r = data[cmd]
        print(
            f"  {cmd:10} {r['seconds'] * 1000:8.0f} ms  {r['reads']:5d} reads "
            f"{r['bytes'] / 1024:8.0f} KiB  | kernel facts {r['setup_reads']} reads | "
            f"per module ({r['modules']}): {r.get('reads_per_module', 0):.2f} reads "
            f"{r.get('bytes_per_module', 0) / 1024:.1f} KiB"
        )


def main() -> int:
    from conftest import lp_fixture

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--core", type=Path, help="ELF vmcore (default: the fixture's vmcore.elf)")
    ap.add_argument("--symbols", type=Path, help="vmlinux with debug info (fixture's)")
    ap.add_argument("--gdbstub", help="HOST:PORT of a running guest's gdbstub")
    ap.add_argument("--qmp", help="QMP socket of that guest (drgn audit for comparison)")
    ap.add_argument("--lab", action="store_true", help="boot the fixture kernel with the lab")
    ap.add_argument("--fixture", choices=("6.1", "7.2"), default="6.1")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ratio-runs", type=int, default=5,
                    help="interleaved gdb runs for the load ratio (0: skip)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    fixture = lp_fixture(a.fixture)
    symbols = a.symbols or fixture.file("vmlinux.debug")
    core = a.core or fixture.vmcore_elf
    results: dict[str, Any] = {
        "core": run_gdb_measure(["-ex", f"core-file {core}"], symbols, a.repeat)
    }
    if not a.json:
        _print(f"core-file {core}", results["core"])
    if a.ratio_runs > 0:
        r = results["load_ratio"] = load_ratio(symbols, core, a.ratio_runs)
        if not a.json:
            print(
                f"== gdb file+core-file {r['gdb_seconds']:.2f} s, + klp-audit "
                f"{r['audit_seconds']:.2f} s (medians of {r['runs']}): "
                f"{r['ratio']:.2f}x (goal 1.2x)"
            )
    guest = None
    gdbstub, qmp = a.gdbstub, a.qmp
    if a.lab:
        lab = load_lab()
        guest = lab.Guest(lab.fixture_kernel(), Path(tempfile.mkdtemp(prefix="bench-gdb-")))
        guest.start()
        results["boot_seconds"] = guest.wait_ready(timeout=300)
        gdbstub, qmp = guest.gdb_address, guest.qmp_path
    try:
        if gdbstub:
            results["gdbstub"] = run_gdb_measure(
                ["-ex", f"target remote {gdbstub}"], symbols, a.repeat
            )
            if not a.json:
                _print(f"gdbstub {gdbstub}", results["gdbstub"])
        if qmp:
            results["qmp_audit"] = qmp_audit(qmp, symbols, a.repeat)
            if not a.json:
                q = results["qmp_audit"]
                print(
                    f"== drgn over QMP: open {q['open_seconds']:.2f} s, "
                    f"audit {q['audit_seconds']:.2f} s"
                )
                if gdbstub:
                    g = results["gdbstub"]["klp-audit"]["seconds"]
                    print(f"   gdbstub klp-audit / QMP audit: {g / q['audit_seconds']:.2f}x")
    finally:
        if guest is not None:
            guest.stop()
    if a.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
