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
module memory comes in 2 MiB windows of mapped pages that neighbouring
modules share (each module's ``struct module`` and kallsyms, before 6.4 in
``core_layout``, since then in ``mem[MOD_DATA]``, and its text with
``.stubs``, since 6.4 ``mem[MOD_TEXT]``), the section table
(``mod->sect_attrs``, slab memory) in 64 KiB windows that several modules
share, the page-table setup once.  Over a gdbstub the bytes are the cost:
``struct module`` and ``.stubs`` alone, kallsyms in one read where a name is
needed.  ``--sites`` prints where ``klp-stubs``' reads go, by call site.

Then the cost of ``klp-audit`` next to gdb's own: ``gdb-multiarch -batch``
with just ``file`` + ``core-file`` against the same plus ``source`` of the
loader and ``klp-audit``, interleaved, ``--ratio-runs`` times, medians and
their ratio (goal: at most 1.2x), in wall and in CPU time (gdb indexes the
DWARF on several threads: its CPU time exceeds its wall time); ``--base
CHECKOUT`` runs that checkout's ``klp-audit`` interleaved too (before/after).
With ``PYTHONDONTWRITEBYTECODE`` set gdb's Python compiles the package on every
run (~0.05 s); an installed package has its ``.pyc`` files, so unset it for the
figure users see.

    python3 benchmarks/bench_gdb.py [--fixture 6.1|7.2] [--lab | --gdbstub HOST:PORT --qmp SOCK]
        [--repeat 3] [--ratio-runs 5] [--base CHECKOUT] [--sites] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
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
if %(sites)r:
    # klp-stubs once more, each raw read (and module window) charged to the
    # nearest klpinspect frames outside the memory plumbing
    import os, traceback
    _STATE["target"] = None
    _t = _target()
    _t.kernel()
    _mem, _sites = _t.memory, {}
    _plumbing = ("chunkcache.py", "memory.py", "gdb/types.py", "gdb/target.py", "layout.py:_u64")
    def _charge(size):
        _frames = [f for f in traceback.extract_stack()[:-2] if "klpinspect" in f.filename
                   and not any(p in f"{f.filename}:{f.name}" for p in _plumbing)]
        _key = " < ".join(f"{os.path.basename(f.filename)}:{f.name}" for f in _frames[-1:-4:-1])
        _n, _b = _sites.get(_key, (0, 0))
        _sites[_key] = (_n + 1, _b + size)
    def _wrap(fetch):
        def _fetch(address, size):
            _charge(size)
            return fetch(address, size)
        return _fetch
    _mem._cache._fetch = _wrap(_mem._cache._fetch)
    _mem._linear._fetch = _wrap(_mem._linear._fetch)
    _read_window = _mem._read_window
    def _window(radix, base):
        _charge(0)
        return _read_window(radix, base)
    _mem._read_window = _window
    gdb.execute("klp-stubs", to_string=True)
    _out["sites"] = sorted(([k, n, b] for k, (n, b) in _sites.items()), key=lambda x: -x[1])
with open(%(result)r, "w") as _f:
    json.dump(_out, _f)
"""

COMMANDS = ("klp-stubs", "klp-audit")


def run_gdb_measure(
    target_args: list[str], symbols: Path, repeat: int, sites: bool = False
) -> dict[str, Any]:
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        raise SystemExit("gdb-multiarch not installed (apt-get install gdb-multiarch)")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        measure = Path(tmp) / "measure.py"
        measure.write_text(
            _MEASURE % {"commands": COMMANDS, "repeat": repeat, "result": str(result),
                        "sites": sites}
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
        if isinstance(run, dict) and run.get("modules"):  # not "sites"
            n = run["modules"]
            run["reads_per_module"] = (run["reads"] - run["setup_reads"]) / n
            run["bytes_per_module"] = (run["bytes"] - run["setup_bytes"]) / n
    return data


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_ratio(
    symbols: Path, core: Path, runs: int, base: Path | None = None
) -> dict[str, Any]:
    """Median wall and CPU time of gdb loading vmlinux + core, without and with
    ``klp-audit`` (and with ``base``'s ``klp-audit``, interleaved)."""
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        raise SystemExit("gdb-multiarch not installed (apt-get install gdb-multiarch)")
    cmd = [gdb, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
           "-ex", f"file {symbols}", "-ex", f"core-file {core}"]  # fmt: skip
    argvs = {"gdb": cmd, "audit": [*cmd, "-ex", f"source {SCRIPT}", "-ex", "klp-audit"]}
    if base is not None:
        argvs["base"] = [*cmd, "-ex", f"source {base / 'gdb' / 'klpinspect.py'}",
                         "-ex", "klp-audit"]  # fmt: skip
    times: dict[str, list[float]] = {key: [] for key in argvs}
    cpu: dict[str, list[float]] = {key: [] for key in argvs}
    for _ in range(runs):
        for key, argv in argvs.items():
            c0, t0 = _child_cpu(), time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
            times[key].append(time.perf_counter() - t0)
            cpu[key].append(_child_cpu() - c0)
            if key != "gdb" and "klp-" not in proc.stdout + proc.stderr and proc.returncode:
                raise SystemExit(f"gdb failed:\n{proc.stderr}")
    med = {key: statistics.median(v) for key, v in times.items()}
    med_cpu = {key: statistics.median(v) for key, v in cpu.items()}
    out: dict[str, Any] = {
        "gdb_seconds": med["gdb"], "audit_seconds": med["audit"],
        "ratio": med["audit"] / med["gdb"], "gdb_cpu": med_cpu["gdb"],
        "audit_cpu": med_cpu["audit"], "cpu_ratio": med_cpu["audit"] / med_cpu["gdb"],
        "runs": runs, "all": times, "all_cpu": cpu,
    }  # fmt: skip
    if base is not None:
        out.update(base_seconds=med["base"], base_ratio=med["base"] / med["gdb"],
                   base_cpu=med_cpu["base"], base_cpu_ratio=med_cpu["base"] / med_cpu["gdb"])
    return out


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


def _print_sites(data: dict[str, Any]) -> None:
    """``--sites``: klp-stubs' reads by call site (a module window: 0 bytes here,
    its pages are counted in the totals above)."""
    for key, n, size in data.get("sites", []):
        print(f"    {n:5d} reads {size / 1024:8.0f} KiB  {key or '(module window)'}")


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
    ap.add_argument("--base", type=Path,
                    help="another checkout whose klp-audit runs interleaved (before/after)")
    ap.add_argument("--sites", action="store_true",
                    help="where klp-stubs' reads go: reads and bytes by call site")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    fixture = lp_fixture(a.fixture)
    symbols = a.symbols or fixture.file("vmlinux.debug")
    core = a.core or fixture.vmcore_elf
    results: dict[str, Any] = {
        "core": run_gdb_measure(["-ex", f"core-file {core}"], symbols, a.repeat, a.sites)
    }
    if not a.json:
        _print(f"core-file {core}", results["core"])
        _print_sites(results["core"])
    if a.ratio_runs > 0:
        r = results["load_ratio"] = load_ratio(symbols, core, a.ratio_runs, a.base)
        if not a.json:
            print(
                f"== gdb file+core-file {r['gdb_seconds']:.2f} s, + klp-audit "
                f"{r['audit_seconds']:.2f} s (medians of {r['runs']}): "
                f"{r['ratio']:.2f}x (goal 1.2x); CPU {r['gdb_cpu']:.2f} s, "
                f"{r['audit_cpu']:.2f} s: {r['cpu_ratio']:.2f}x"
            )
            if a.base is not None:
                print(
                    f"   base {a.base}: + klp-audit {r['base_seconds']:.2f} s: "
                    f"{r['base_ratio']:.2f}x; CPU {r['base_cpu']:.2f} s: "
                    f"{r['base_cpu_ratio']:.2f}x"
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
                ["-ex", f"target remote {gdbstub}"], symbols, a.repeat, a.sites
            )
            if not a.json:
                _print(f"gdbstub {gdbstub}", results["gdbstub"])
                _print_sites(results["gdbstub"])
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
