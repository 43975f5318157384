#!/usr/bin/env python3
"""Benchmark: klpinspect on distribution kernels vs drgn's own open (issue 13).

For every kernel dump the lab has -- the fixture's 6.1 and 7.2 livepatch
kernels, and the Debian dumps ``tests/lab/matrix.py`` keeps in
``/work/cache/debian/dumps/<suite>-<flavour>/`` (vmcore + the ``-dbg`` package's full
debug vmlinux) -- each command below runs as its own process, ``--runs``
times, interleaved (run 1 of every command, then run 2, ...), and the
benchmark prints the median and min-max of wall time and peak RSS
(``wait4`` ru_maxrss), and CPU seconds (user + system: drgn indexes DWARF
on every core, so on an idle machine its wall time is well under its CPU
time), and the ratios of medians to drgn's baseline:

``drgn``
    ``drgn -q -c VMCORE -s VMLINUX -e 'for_each_module(prog)'`` (the baseline; drgn's
    own open: klpinspect's drgn plugin, if installed, is not loaded)
``audit``
    ``klpinspect -c VMCORE -s VMLINUX --format json audit``   (goal <= 1.15x wall, <= 1.2x RSS):
    types from the dump's BTF, symbols from its kallsyms, the vmlinux's build ID
    checked and its DWARF and ``.symtab`` left unread (``debuginfo=btf+kallsyms``;
    every command but ``bt`` and ``ftrace``, which show ELF symbol sizes, does this)
``audit-dwarf``
    the same with ``--dwarf``: the vmlinux's DWARF loaded as drgn loads it (no goal;
    what ``audit`` cost before it left the DWARF unread)
``btf``
    ``klpinspect -c VMCORE --format json audit``: no debug file at all, types
    from the kernel's BTF, symbols from kallsyms (issue 16: goal <= 0.5x
    drgn's wall time *with* the debug vmlinux, a small fraction of its RSS)
``btf-1cpu``
    ``btf`` in one process (``KLPINSPECT_JOBS=1``): without the forked child that
    scans the call sites and walks the tasks on the second core (no goal; its share)
``stubs``
    ``klpinspect ... stubs MODULE`` (one module)            (goal <= 1.05x)
``bt`` / ``drgn-bt``
    ``klpinspect ... bt PID`` vs ``drgn ... -e 'prog.stack_trace(PID)'``  (goal <= 1.05x)
``python``
    ``python3 -c pass``: the interpreter's own start-up, which every command above
    pays alike (with this machine's site-packages ``.pth`` hooks); each ratio is
    also printed with it taken out of both sides, for reading only (goals are
    judged on the ratios as measured)

``--split`` also prints where the audit's time goes, in one process: drgn's
own work (opening the core, ``load_debug_info``) vs klpinspect's (checking
the ``-s`` files, the audit, the JSON encoding); for ``btf``: the kallsyms
loader, reading and indexing the BTF, the audit, the JSON; and, for ``audit``,
``stubs`` and ``bt``, the seconds spent inside drgn (its C methods and Python
helpers, from one run under cProfile) against the rest: where drgn's share
alone is over a goal, drgn itself does the work.

Byte-compiled modules are used as an installed package has them (the
environment's ``PYTHONDONTWRITEBYTECODE`` is dropped, and the measured trees are
byte-compiled first: compiling klpinspect's sources costs ~75 ms a run otherwise).

    python3 benchmarks/bench_distro.py [--runs 5] [--only trixie,sid] [--split] [--json]
                                       [--commands drgn,btf]   (issue 16's figure only)
                                       [--base OTHER_CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("KLPINSPECT_FIXTURES", REPO.parent / "shared" / "fixtures"))
CACHE = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache"))
sys.path.insert(0, str(REPO / "tests" / "lab"))

GOALS: dict[str, tuple[float | None, float | None]] = {
    "audit": (1.15, 1.2), "audit-dwarf": (None, None), "btf": (0.5, None), "btf-1cpu": (None, None),
    "stubs": (1.05, None), "bt": (1.05, None)}


@dataclass
class Dump:
    label: str
    vmcore: Path
    vmlinux: Path
    module: str
    pid: int


def _unpacked(src: Path, dst: Path) -> Path:
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    tmp.replace(dst)
    return dst


def _audit_module(audit_json: Path | None, default: str) -> str:
    """The module with the most stub slots of a stored audit (else *default*).

    Read in a child: a 5 MB audit parsed here would grow this process by
    ~60 MB, and every command it then starts would inherit that as its
    peak RSS (Linux counts the forked image's high-water mark in
    ``ru_maxrss`` across the ``exec``)."""
    if not (audit_json and audit_json.exists()):
        return default
    code = ("import json, sys\n"
            "mods = json.load(open(sys.argv[1])).get('modules', [])\n"
            "print(max(mods, key=lambda m: len(m.get('stubs', [])))['name'] if mods else '')")
    p = subprocess.run([sys.executable, "-c", code, str(audit_json)], capture_output=True,
                       text=True, check=False)
    return p.stdout.strip() or default


def find_dumps() -> list[Dump]:
    """Every dump the lab has (fixtures unpacked into the cache once)."""
    out: list[Dump] = []
    for ver, cache_name in (("6.1", "fixtures"), ("7.2", "fixtures/ppc64le-7.2-lp")):
        fx = FIXTURES / f"ppc64le-{ver}-lp"
        if (fx / "vmcore.elf.xz").exists():
            core = _unpacked(fx / "vmcore.elf.xz", CACHE / cache_name / "vmcore.elf")
            out.append(Dump(f"fixture {ver}", core, fx / "vmlinux.debug", "bridge", 1))
    try:
        from debarchive import cache_dir

        root = Path(os.environ.get("KLP_MATRIX_DUMPS", str(cache_dir() / "dumps")))
    except ImportError:
        root = Path("/work/cache/debian/dumps")
    order = {"bookworm": 0, "trixie": 1, "sid": 2}
    for d in sorted(root.glob("*/vmcore"), key=lambda p: (order.get(p.parent.name.split("-")[0], 9),
                                                          p.parent.name)):
        info: dict[str, Any] = {}
        if (d.parent / "matrix.json").exists():
            info = json.loads((d.parent / "matrix.json").read_text())
        label = f"Debian {d.parent.name} {info.get('kver', '')}".strip()
        out.append(Dump(label, d, (d.parent / "vmlinux").resolve(),
                        _audit_module(d.parent / "audit.json", "xfs"), 1))
    return out


def commands(d: Dump) -> dict[str, list[str]]:
    py = sys.executable
    base = ["-c", str(d.vmcore), "-s", str(d.vmlinux)]
    each = ("from drgn.helpers.linux.module import for_each_module\n"
            "for m in for_each_module(prog): pass")
    bt = f"prog.stack_trace({d.pid})"
    return {
        "drgn": [py, "-m", "drgn", "-q", *base, "-e", each],
        "audit": [py, "-m", "klpinspect", *base, "--format", "json", "audit"],
        "audit-dwarf": [py, "-m", "klpinspect", *base, "--dwarf", "--format", "json", "audit"],
        "btf": [py, "-m", "klpinspect", "-c", str(d.vmcore), "--format", "json", "audit"],
        # the same in one process (KLPINSPECT_JOBS=1): no forked call-site scan and task walk
        "btf-1cpu": [py, "-m", "klpinspect", "-c", str(d.vmcore), "--format", "json", "audit"],
        "stubs": [py, "-m", "klpinspect", *base, "stubs", d.module],
        "drgn-bt": [py, "-m", "drgn", "-q", *base, "-e", bt],
        "bt": [py, "-m", "klpinspect", *base, "bt", str(d.pid)],
        "python": [py, "-c", "pass"],
    }


TREE = REPO  # the klpinspect measured (--tree: another checkout, e.g. before a change)


BASE: Path | None = None  # --base: a second checkout measured interleaved ("audit@base"...)


def run_once(argv: list[str], tree: Path | None = None,
             one_cpu: bool = False) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (user + system) of one run
    of *argv* (klpinspect from *tree*; ``one_cpu``: ``KLPINSPECT_JOBS=1``)."""
    env = dict(os.environ, PYTHONPATH=str(tree or TREE), DEBUGINFOD_URLS="")
    if one_cpu:
        env["KLPINSPECT_JOBS"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # .pyc files, as an installed package has
    if argv[2] == "drgn":  # drgn's own open, without klpinspect's drgn plugin
        env["DRGN_DISABLE_PLUGINS"] = "klpinspect"
    t0 = time.perf_counter()
    # cwd /: ``python -m klpinspect`` must find TREE's, not the current directory's
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         cwd="/")
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    rc = os.waitstatus_to_exitcode(status)
    if rc not in (0, 1):
        raise SystemExit(f"bench_distro: {' '.join(argv[2:4])} ... exit {rc}: {err.strip()[-200:]}")
    return wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime


def split(d: Dump) -> dict[str, float]:
    """Where ``klpinspect audit``'s time goes, in this process (run in a child)."""
    code = f"""
import importlib, json, time, sys
sys.path.insert(0, {str(TREE)!r})
t = [time.perf_counter()]
import drgn
try:
    from klpinspect.backends.drgn import program
    from klpinspect.backends.drgn.debuginfo import prepare_debug_files
    from klpinspect.backends.drgn.target import DrgnTarget
except ImportError:  # a checkout from before the drgn back end moved to backends/drgn
    from klpinspect.drgn import program
    from klpinspect.drgn.debuginfo import prepare_debug_files
    from klpinspect.drgn.target import DrgnTarget
# the submodule, not klpinspect.audit (the api function klpinspect/__init__ re-exports)
from klpinspect.audit import audit as run_audit
from klpinspect.report import render
t.append(time.perf_counter())
prog = program.open_core({str(d.vmcore)!r})
t.append(time.perf_counter())
files = prepare_debug_files([{str(d.vmlinux)!r}])
t.append(time.perf_counter())
from klpinspect.backends.drgn.btf_finder import debuginfo_source
try:  # as the command line: the dump's BTF and kallsyms, no DWARF, no .symtab
    program.load_kernel_debug_info(prog, [{str(d.vmlinux)!r}], dwarf=False, elf_sizes=False)
except TypeError:  # a checkout from before -s took kallsyms (or left the DWARF unread)
    try:
        program.load_kernel_debug_info(prog, [{str(d.vmlinux)!r}], dwarf=False)
    except TypeError:
        try:
            prog.load_debug_info([str(f[1]) for f in files], main=True)
        except drgn.MissingDebugInfoError:
            pass
what = {{"dwarf": "drgn: load_debug_info", "btf+symtab": "ours: BTF + .symtab"}}.get(
    debuginfo_source(prog), "ours: BTF + kallsyms")
t.append(time.perf_counter())
target = DrgnTarget(prog, "vmcore")
# as api.open_target: the call-site scan in a forked child where it may
target.forkable = getattr(target, "debuginfo", None) in ("btf+kallsyms", "btf+symtab")
rep = run_audit(target)
t.append(time.perf_counter())
text = render(rep, "json")
t.append(time.perf_counter())
names = ["import", "drgn: open core", "ours: check -s files", what,
         "ours: audit", "ours: JSON"]
print(json.dumps(dict(zip(names, [b - a for a, b in zip(t, t[1:])]))))
"""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if "DRGN_PLUGINS" not in env:
        env.setdefault("DRGN_DISABLE_PLUGINS", "*")  # as the CLI: -s names one file
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, cwd="/", env=env)
    if p.returncode:
        return {"error": p.stderr.strip().splitlines()[-1:] or ["?"]}  # type: ignore[dict-item]
    return dict(json.loads(p.stdout))


def split_btf(d: Dump) -> dict[str, float]:
    """Where ``klpinspect audit`` without debug files spends its time (in a child)."""
    code = f"""
import importlib, json, time, sys
sys.path.insert(0, {str(TREE)!r})
t = [time.perf_counter()]
import drgn
from klpinspect.backends.drgn import program, btf_finder
from klpinspect.backends.drgn.target import DrgnTarget
A = importlib.import_module("klpinspect.audit")
from klpinspect.report import render
t.append(time.perf_counter())
prog = program.open_core({str(d.vmcore)!r})
t.append(time.perf_counter())
btf_finder._enable_vmlinux_kallsyms(prog)
t.append(time.perf_counter())
btf_finder.enable_btf(prog)
t.append(time.perf_counter())
target = DrgnTarget(prog, "vmcore")
target.forkable = True  # as api.open_target for a vmcore read without DWARF
rep = A.audit(target)
t.append(time.perf_counter())
render(rep, "json")
t.append(time.perf_counter())
names = ["import", "drgn: open core", "kallsyms", "ours: BTF", "ours: audit", "ours: JSON"]
print(json.dumps(dict(zip(names, [b - a for a, b in zip(t, t[1:])]))))
"""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if "DRGN_PLUGINS" not in env:
        env.setdefault("DRGN_DISABLE_PLUGINS", "*")  # as the CLI's no-debug path
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, cwd="/", env=env)
    if p.returncode:
        return {"error": p.stderr.strip().splitlines()[-1:] or ["?"]}  # type: ignore[dict-item]
    return dict(json.loads(p.stdout))


def drgn_share(argv: list[str], runs: int = 3) -> float:
    """Seconds a command spends in drgn (its C methods and its Python helpers): the
    median of *runs* runs of *argv* under cProfile, each in a child; the part
    klpinspect cannot cut by itself (its own time is the wall time less this)."""
    return statistics.median(_drgn_share_once(argv) for _ in range(runs))


def _drgn_share_once(argv: list[str]) -> float:
    code = f"""
import cProfile, io, json, pstats, runpy, sys
sys.path.insert(0, {str(TREE)!r})
sys.argv = [{argv[2]!r}, *{argv[3:]!r}]
sys.stdout = io.StringIO()
prof = cProfile.Profile()
prof.enable()
try:
    if {argv[2]!r} == "klpinspect":  # its __main__ leaves with os._exit (cli.run)
        from klpinspect.cli import main
        main(sys.argv[1:])
    else:
        runpy.run_module({argv[2]!r}, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
prof.disable()
sys.stdout = sys.__stdout__
spent = 0.0
for (path, _line, name), (_cc, _nc, tt, _ct, _callers) in pstats.Stats(prof).stats.items():
    if ("_drgn" in name or "/drgn/" in path) and "/klpinspect/" not in path:
        spent += tt
print(json.dumps(spent))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, cwd="/")
    if p.returncode:
        return float("nan")
    return float(json.loads(p.stdout.strip().splitlines()[-1]))


def _fmt(vals: list[float], unit: str, scale: float = 1.0) -> str:
    v = [x * scale for x in vals]
    prec = 2 if unit == "s" else 0
    return (f"{statistics.median(v):.{prec}f} {unit} "
            f"({min(v):.{prec}f}-{max(v):.{prec}f})")


def byte_compile(tree: Path) -> None:
    """Byte-compile *tree*'s klpinspect, as ``pip install`` does: drgn's own
    modules are byte-compiled in site-packages, and a checkout run with
    ``PYTHONDONTWRITEBYTECODE`` (this project's sessions) would otherwise compile
    ~40 modules from source in every run (~0.1 s) that an installed klpinspect
    never does."""
    import compileall

    compileall.compile_dir(str(tree / "klpinspect"), quiet=1)


def bench(d: Dump, runs: int, names: list[str]) -> dict[str, dict[str, list[float]]]:
    cmds = commands(d)
    res: dict[str, dict[str, list[float]]] = {
        n: {"wall": [], "rss": [], "cpu": []} for n in names}
    for _ in range(runs):
        for n in [n for n in names if n in res]:
            cmd, _, at = n.partition("@")
            try:
                wall, rss, cpu = run_once(cmds[cmd], BASE if at else None,
                                          one_cpu=cmd.endswith("-1cpu"))
            except SystemExit as e:
                if not cmd.startswith("btf"):
                    raise
                # a kernel without BTF (Debian's 6.1): the one-line answer, no figure
                print(f"  {n:11s} {str(e).rpartition(': ')[2][:160]}")
                del res[n]
                continue
            res[n]["wall"].append(wall)
            res[n]["cpu"].append(cpu)
            res[n]["rss"].append(rss / 1024)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", help="comma-separated substrings of dump labels")
    ap.add_argument("--commands", default="drgn,audit,btf,stubs,drgn-bt,bt,python")
    ap.add_argument("--split", action="store_true", help="also the audit's time split")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tree", help="measure the klpinspect of this checkout instead")
    ap.add_argument("--base", help="also measure this checkout's klpinspect, interleaved "
                    "(audit@base, ...: before/after a change)")
    a = ap.parse_args()
    global TREE, BASE
    if a.tree:
        TREE = Path(a.tree).resolve()
    names = a.commands.split(",")
    if a.base:
        BASE = Path(a.base).resolve()
        names += [f"{n}@base" for n in names if n in GOALS]
    byte_compile(TREE)
    if BASE is not None:
        byte_compile(BASE)
    dumps = find_dumps()
    if a.only:
        dumps = [d for d in dumps if any(s in d.label for s in a.only.split(","))]
    if not dumps:
        print("bench_distro: no dumps (fixtures missing, no tests/lab/matrix.py runs)",
              file=sys.stderr)
        return 2
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.platform()}), Python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}; "
          f"{a.runs} interleaved runs, median (min-max); klpinspect byte-compiled "
          "as installed")
    everything: dict[str, Any] = {}
    for d in dumps:
        mb = d.vmlinux.stat().st_size / 1e6
        print(f"\n== {d.label}: {d.vmcore.name} {d.vmcore.stat().st_size / 1e6:.0f} MB, "
              f"debug vmlinux {mb:.0f} MB; stubs {d.module}, bt {d.pid}")
        r = bench(d, a.runs, names)
        everything[d.label] = {"results": r}
        for n in [n for n in names if n in r]:
            line = (f"  {n:11s} wall {_fmt(r[n]['wall'], 's')}  CPU {_fmt(r[n]['cpu'], 's')}"
                    f"  RSS {_fmt(r[n]['rss'], 'MB')}")
            base = "drgn-bt" if n.partition("@")[0] == "bt" else "drgn"
            if n.partition("@")[0] in GOALS and base in r:
                w = statistics.median(r[n]["wall"]) / statistics.median(r[base]["wall"])
                m = statistics.median(r[n]["rss"]) / statistics.median(r[base]["rss"])
                gw, gm = GOALS[n.partition("@")[0]]
                wmin = min(r[n]["wall"]) / min(r[base]["wall"])
                c = statistics.median(r[n]["cpu"]) / statistics.median(r[base]["cpu"])
                goal = f"; goal {gw}" if gw else ""
                line += (f"\n{'':14s}vs {base}: wall {w:.2f}x (min {wmin:.2f}x{goal}), "
                         f"CPU {c:.2f}x, RSS {m:.2f}x")
                line += f" (goal {gm})" if gm else ""
                everything[d.label].setdefault("ratios", {})[n] = {
                    "wall": w, "wall_min": wmin, "cpu": c, "rss": m}
                if "python" in r:
                    py = statistics.median(r["python"]["wall"])
                    bare = (statistics.median(r[n]["wall"]) - py) / (
                        statistics.median(r[base]["wall"]) - py)
                    line += f"; without Python's own start-up ({py:.3f} s): {bare:.2f}x"
                    everything[d.label]["ratios"][n]["wall_without_python"] = bare
            print(line, flush=True)
        if a.split:
            s = split(d)
            everything[d.label]["split"] = s
            print("  split: " + ", ".join(f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in s.items()))
            if "btf" in r:
                s = split_btf(d)
                everything[d.label]["split_btf"] = s
                print("  split (btf): " + ", ".join(f"{k} {v:.3f} s" for k, v in s.items()
                                                    if isinstance(v, float)))
            cmds = commands(d)
            shares = {n: drgn_share(cmds[n]) for n in ("drgn", "drgn-bt", *GOALS)
                      if n in r and not n.endswith("-1cpu")}
            everything[d.label]["drgn_share"] = shares
            for n in GOALS:
                base = "drgn-bt" if n == "bt" else "drgn"
                if n not in shares or base not in r:
                    continue
                wall, bwall = statistics.median(r[n]["wall"]), statistics.median(r[base]["wall"])
                rest, brest = wall - shares[n], bwall - shares[base]
                print(f"  {n}: in drgn {shares[n]:.2f} s (in {base}: {shares[base]:.2f} s), "
                      f"the rest {rest:.2f} s ({base}: {brest:.2f} s: Python start-up, "
                      f"imports); klpinspect's own extra {rest - brest:.2f} s; drgn's work "
                      f"alone is {shares[n] / bwall:.2f}x {base}", flush=True)
    if a.json:
        print(json.dumps(everything, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
