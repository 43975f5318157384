#!/usr/bin/env python3
"""Benchmark: klpinspect's fixed start-up cost, per command (issues 13 and 16).

Every command pays Python's start-up, drgn's import and then klpinspect's own
imports before the first drgn call; only the last is ours.  For each command
below this runs ``python3 -X importtime -m klpinspect ...`` ``--runs`` times
(interleaved with ``--base``'s, when given) and prints the median over runs
of the import time that is klpinspect's: every module imported after
``site``, self time, except drgn's own import (``drgn``, ``_drgn`` and what
``import drgn`` imports itself, e.g. ``logging``) and drgn's plugin loader;
then the median CPU seconds (user + system) of the whole run, and the
slowest modules of the last run.  What drgn imports on its own counts for
drgn even when klpinspect imported it first.

Commands: ``help`` (``--help``), ``ko`` (a ``.ko`` lint, no kernel), and,
on the Debian trixie dump the lab keeps (or ``--core``/``--vmlinux``):
``btf`` (``--format json audit``, no debug file), ``audit`` (``-s VMLINUX
--format json audit``), ``stubs`` (``-s VMLINUX stubs MODULE``), ``bt``
(``-s VMLINUX bt 1``: table output, which imports tabulate).

    python3 benchmarks/bench_startup.py [--runs 7] [--base OTHER_CHECKOUT]
                                        [--commands help,btf,bt] [--top 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DUMPS = Path(os.environ.get("KLP_MATRIX_DUMPS", "/work/cache/debian/dumps"))

# drgn's plugin loader and what it finds: drgn's, not klpinspect's
_DRGN_OWN = {"_drgn_util", "_drgn_util.plugins"}


def _tree(text: str) -> list[tuple[int, str, int, int]]:
    """``-X importtime`` lines as (indent, module, self us, cumulative us)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        out.append((len(name) - len(name.lstrip()), name.strip(), int(self_us), int(cum_us)))
    return out


def drgn_imports() -> set[str]:
    """What ``import drgn`` imports after site (those count for drgn)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import drgn"],
                       capture_output=True, text=True, check=True, cwd="/")
    names = [n for _i, n, _s, _c in _tree(p.stderr)]
    return set(names[names.index("site") + 1:]) if "site" in names else set(names)


def ours(text: str, drgn_own: set[str]) -> tuple[float, list[tuple[float, str]]]:
    """klpinspect's import milliseconds in one run, and its modules (ms, name)."""
    ents = _tree(text)
    names = [n for _i, n, _s, _c in ents]
    start = names.index("site") + 1 if "site" in names else 0
    mods = [(s / 1000, n) for _i, n, s, _c in ents[start:]
            if n not in drgn_own and n not in _DRGN_OWN]
    return sum(m for m, _n in mods), sorted(mods, reverse=True)


def commands(core: Path | None, vmlinux: Path | None, ko: Path) -> dict[str, list[str]]:
    cmds: dict[str, list[str]] = {"help": ["--help"], "ko": ["ko", "--format", "json", str(ko)]}
    if core is not None:
        cmds["btf"] = ["-c", str(core), "--format", "json", "audit"]
        if vmlinux is not None:
            s = ["-c", str(core), "-s", str(vmlinux)]
            cmds["audit"] = [*s, "--format", "json", "audit"]
            cmds["stubs"] = [*s, "stubs", "ext4"]
            cmds["bt"] = [*s, "bt", "1"]
    return cmds


def run(tree: Path, argv: list[str], drgn_own: set[str]) -> tuple[float, list[tuple[float, str]]]:
    """(klpinspect's import ms, its modules) of one run of klpinspect from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), DEBUGINFOD_URLS="")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # .pyc files, as installed
    env.setdefault("DRGN_DISABLE_PLUGINS", "*")
    p = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "klpinspect", *argv],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=env, cwd="/")
    _out, err = p.communicate()
    if p.returncode not in (0, 1):
        raise SystemExit(f"bench_startup: {' '.join(argv[:4])}: exit {p.returncode}: "
                         f"{err.strip().splitlines()[-1] if err.strip() else ''}")
    return ours(err, drgn_own)


def run_cpu(tree: Path, argv: list[str]) -> float:
    """CPU seconds (user + system) of one plain run (no -X importtime)."""
    env = dict(os.environ, PYTHONPATH=str(tree), DEBUGINFOD_URLS="")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("DRGN_DISABLE_PLUGINS", "*")
    p = subprocess.Popen([sys.executable, "-m", "klpinspect", *argv],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/")
    _pid, _status, ru = os.wait4(p.pid, 0)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--base", help="also measure this checkout, interleaved")
    ap.add_argument("--commands", help="comma-separated (default: all)")
    ap.add_argument("--core", type=Path, default=DUMPS / "trixie-powerpc64le" / "vmcore")
    ap.add_argument("--vmlinux", type=Path, default=DUMPS / "trixie-powerpc64le" / "vmlinux")
    ap.add_argument("--top", type=int, default=8, help="slowest modules shown per command")
    a = ap.parse_args()
    import compileall

    trees = {"": REPO}
    if a.base:
        trees["@base"] = Path(a.base).resolve()
    for t in trees.values():
        compileall.compile_dir(str(t / "klpinspect"), quiet=1)
    sys.path.insert(0, str(REPO / "tests"))
    from asmutil import assemble

    ko = assemble(REPO / "tests" / "ko" / "calls_elfv2.s").obj
    core = a.core if a.core.exists() else None
    vmlinux = a.vmlinux if a.vmlinux.exists() else None
    cmds = commands(core, vmlinux, ko)
    if a.commands:
        cmds = {k: v for k, v in cmds.items() if k in a.commands.split(",")}
    drgn_own = drgn_imports()
    print(f"Python {sys.version.split()[0]}, {a.runs} interleaved runs, median; "
          f"klpinspect's imports: self time after site, without drgn's own import "
          f"({len(drgn_own)} modules)")
    res: dict[str, dict[str, list[float]]] = {}
    last: dict[str, list[tuple[float, str]]] = {}
    for _ in range(a.runs):
        for name, argv in cmds.items():
            for suffix, tree in trees.items():
                ms, mods = run(tree, argv, drgn_own)
                cpu = run_cpu(tree, argv)
                r = res.setdefault(name + suffix, {"ms": [], "cpu": []})
                r["ms"].append(ms)
                r["cpu"].append(cpu)
                last[name + suffix] = mods
    for name in cmds:
        for suffix in trees:
            r = res[name + suffix]
            line = (f"  {name + suffix:12s} imports {statistics.median(r['ms']):6.1f} ms "
                    f"(min {min(r['ms']):.1f})   CPU {statistics.median(r['cpu']):.3f} s")
            if suffix and name in res:
                d = statistics.median(res[name]["ms"]) - statistics.median(r["ms"])
                c = statistics.median(res[name]["cpu"]) - statistics.median(r["cpu"])
                line += f"   this checkout: {d:+.1f} ms imports, {1000 * c:+.0f} ms CPU"
            print(line)
        top = ", ".join(f"{n} {m:.1f}" for m, n in last[name][:a.top])
        print(f"  {'':12s} slowest (ms): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
