"""Auditing with no debug files (BTF + kallsyms from the dump) vs drgn with DWARF.

For each dump: whether the JSON answers with and without debug files agree
(tests/btfcompare.py: audit and lpstack identical, bt 1 the same but for
DWARF's inlined frames), then wall time, CPU time and peak RSS of

  (a) ``klpinspect -c CORE audit``             no debug file: the kernel's BTF and kallsyms
  (b) ``drgn -c CORE -s VMLINUX.debug`` + ``for_each_module``   drgn's own open with DWARF
  (c) ``klpinspect -c CORE -s VMLINUX.debug audit``              for reference
  (d) klpinspect's open with no debug files + ``for_each_module``  (b)'s work, BTF instead

Goal: (a) <= 0.5x the time of (b) and a small fraction of its memory.
drgn indexes DWARF on every core, so on an idle machine (b)'s wall time is
well under its CPU time; (a) is one thread: both ratios are printed.  The
commands run interleaved (run 1 of each, then run 2, ...) after a warm-up.

Dumps: the fixtures (6.1 ELF and kdump, 7.2 ELF), and any Debian stock-kernel
dump the lab left under ``$KLPINSPECT_DEBIAN_DUMPS`` (default /work/cache/debian):
``**/vmcore`` with the ``-dbg`` package's vmlinux beside it as ``vmlinux``.

Run: python3 benchmarks/bench_btf.py [--runs N] [--only SUBSTRING,...]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# The environment the commands run in: the user's, not the one tests/conftest.py
# makes on import (DRGN_DISABLE_PLUGINS=klpinspect, which would keep klpinspect's
# CLI from leaving drgn's plugins out on the no-debug path: ~50 ms).
_USER_ENV = dict(os.environ)

from conftest import CACHE, FIXTURES  # noqa: E402

# (d): klpinspect's open with no debug files (kallsyms, BTF), then drgn's
# own for_each_module: the same work as (b) without DWARF.
BTF_OPEN_CODE = (
    "import sys\n"
    "from drgn.helpers.linux.module import for_each_module\n"
    "from klpinspect.backends.drgn.program import open_program\n"
    "prog, _ = open_program(core=sys.argv[1])\n"
    "print(len([m.name.string_() for m in for_each_module(prog)]))\n"
)

# Where the lab leaves Debian stock kernels (image, -dbg) and their dumps.
DEBIAN_DUMPS = "/work/cache/debian"

DRGN_CODE = (
    "from drgn.helpers.linux.module import for_each_module\n"
    "print(len([m.name.string_() for m in for_each_module(prog)]))\n"
)


def _run(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (KiB) of one run of ``cmd``."""
    env = dict(_USER_ENV, PYTHONPATH=str(REPO), DEBUGINFOD_URLS="")
    # Byte-compiled modules, as an installed package has them (drgn's are).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    if proc.stderr:
        proc.stderr.close()
    return dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def _interleaved(cmds: list[list[str]], runs: int) -> list[list[tuple[float, float, int]]]:
    """``runs`` rounds of every command in turn (run 1 of each, then run 2, ...:
    a shared machine's load falls on all of them alike), after one warm-up
    round (page cache, ``__pycache__``); each command's results."""
    for cmd in cmds:
        _run(cmd)
    out: list[list[tuple[float, float, int]]] = [[] for _ in cmds]
    for _ in range(runs):
        for i, cmd in enumerate(cmds):
            out[i].append(_run(cmd))
    return out


def _summary(results: list[tuple[float, float, int]]) -> tuple[float, float, float, int]:
    """Median wall, min wall, median CPU seconds and the largest peak RSS (KiB)."""
    return (
        statistics.median(r[0] for r in results),
        min(r[0] for r in results),
        statistics.median(r[1] for r in results),
        max(r[2] for r in results),
    )


def _json(cmd: list[str]) -> dict[str, Any]:
    env = dict(_USER_ENV, PYTHONPATH=str(REPO), DEBUGINFOD_URLS="")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode not in (0, 1):
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _same_answers(kl: list[str], debug: str) -> str:
    """Whether the JSON reports with and without ``-s`` agree (tests/btfcompare.py)."""
    from btfcompare import bt_inlined_difference, without_debuginfo

    for cmd in (["audit"], ["lpstack"]):
        btf = _json([*kl, "--format", "json", *cmd])
        dwarf = _json([*kl, "-s", debug, "--format", "json", *cmd])
        if btf["target"].get("debuginfo") != "btf+kallsyms":
            return f"NO: {cmd[0]} without -s used {btf['target'].get('debuginfo')}"
        if without_debuginfo(btf) != without_debuginfo(dwarf):
            return f"NO: {cmd[0]} differs"
    try:
        inlined = bt_inlined_difference(
            _json([*kl, "--format", "json", "bt", "1"]),
            _json([*kl, "-s", debug, "--format", "json", "bt", "1"]),
        )
    except AssertionError as e:
        return f"NO: bt 1 differs ({e})"
    return f"audit, lpstack identical; bt 1 the same but for {inlined} inlined frames"


def _unpacked(fixture: Path, name: str) -> Path:
    """The fixture dump, decompressed as tests/test_btf_dump.py does."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_btf_dump import _unpacked as unpack

    return unpack(fixture, name)


def _dumps() -> list[tuple[str, Path, Path]]:
    lp61, lp72 = FIXTURES / "ppc64le-6.1-lp", FIXTURES / "ppc64le-7.2-lp"
    dumps = [
        ("fixture 6.1 ELF", _unpacked(lp61, "vmcore.elf.xz"), lp61 / "vmlinux.debug"),
        ("fixture 6.1 kdump", lp61 / "vmcore.kdump", lp61 / "vmlinux.debug"),
        ("fixture 7.2 ELF", _unpacked(lp72, "vmcore.elf.xz"), lp72 / "vmlinux.debug"),
    ]
    # The lab's Debian dumps: DIR/vmcore with DIR/vmlinux -> the -dbg vmlinux.
    root = Path(os.environ.get("KLPINSPECT_DEBIAN_DUMPS", DEBIAN_DUMPS))
    for core in sorted(glob.glob(str(root / "**" / "vmcore"), recursive=True)):
        debug = Path(core).parent / "vmlinux"
        if debug.exists() and os.path.getsize(core) > 16 << 20:
            dumps.append(
                (f"Debian {debug.resolve().name} ({Path(core).parent.name})", Path(core), debug)
            )
    return dumps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs per measurement")
    ap.add_argument("--only", help="comma-separated substrings of the dump names")
    args = ap.parse_args()
    print(f"cache: {CACHE}")
    print(f"{args.runs} interleaved runs: wall time median (min), CPU (user + system) "
          f"median, peak RSS the largest; load {os.getloadavg()[0]:.1f}")
    for name, core, debug in _dumps():
        if args.only and not any(o in name for o in args.only.split(",")):
            continue
        kl = [sys.executable, "-m", "klpinspect", "-c", str(core)]
        try:
            same = _same_answers(kl, str(debug))
        except SystemExit as e:
            print(
                f"\n{name}: {core}\n  not auditable without debug files: {str(e).splitlines()[-1]}"
            )
            continue
        drgn_cmd = [sys.executable, "-m", "drgn", "-q", "-c", str(core), "-s", str(debug),
                    "-e", DRGN_CODE]
        a, b, c, d = map(_summary, _interleaved([
            [*kl, "--format", "json", "audit"],
            drgn_cmd,
            [*kl, "-s", str(debug), "--format", "json", "audit"],
            [sys.executable, "-c", BTF_OPEN_CODE, str(core)],
        ], args.runs))
        print(f"\n{name}: {core}")
        print("                                          wall median (min)    CPU   peak RSS")
        for label, (wall, wmin, cpu, rss) in (
            ("(a) klpinspect audit, no debug files", a),
            ("(b) drgn -s + for_each_module       ", b),
            ("(c) klpinspect -s audit             ", c),
            ("(d) BTF open + for_each_module      ", d),
        ):
            print(f"  {label} {wall:6.2f} s ({wmin:4.2f} s) {cpu:6.2f} s {rss / 1024:7.1f} MiB")
        print(f"  with and without debug files: {same}")
        print(
            f"  (a)/(b): wall {a[0] / b[0]:.2f}x (min {a[1] / b[1]:.2f}x; goal <= 0.5), "
            f"CPU {a[2] / b[2]:.2f}x, memory {a[3] / b[3]:.2f}x"
        )
        print(
            f"  (d)/(b): wall {d[0] / b[0]:.2f}x, CPU {d[2] / b[2]:.2f}x, "
            f"memory {d[3] / b[3]:.2f}x"
        )
    if not any(n.startswith("Debian") for n, _, _ in _dumps()):
        print(
            "\n(no Debian stock-kernel dump found under "
            f"{os.environ.get('KLPINSPECT_DEBIAN_DUMPS', DEBIAN_DUMPS)})"
        )


if __name__ == "__main__":
    main()
