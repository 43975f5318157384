"""Two hot spots of ``klpinspect --format json audit``, timed on their own.

(a) rendering the audit report (``render(report, "json")`` and ``"table"``);
(b) the call-site scan (``find_stub_calls`` over every module's text, with the
    audit's own arguments, recorded while the audit runs).

Each checkout given is measured in its own child process on the same dump
(opened without debug files: BTF + kallsyms), interleaved, the best CPU time
of several repetitions each, and the outputs are compared (hash of the JSON
and table text, and of the call sites found in both scan modes), so a
before/after pair shows the speed-up and that nothing changed.

Run: python3 benchmarks/bench_report_scan.py [--core VMCORE] [--base CHECKOUT] [--reps N]
(default core: Debian sid's dump from the lab cache, else the 7.2 fixture)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORES = (
    Path("/work/cache/debian/dumps/sid-powerpc64le/vmcore"),
    REPO.parent / "shared" / "fixtures" / "ppc64le-7.2-lp" / "vmcore.elf",
)

CHILD = r"""
import hashlib, json, sys, time
sys.path.insert(0, TREE)
import klpinspect.callsite_audit as ca
from klpinspect.api import open_target
from klpinspect.audit import audit
from klpinspect.report import render

recorded = []
scan = ca.find_stub_calls
def record(*a, **k):
    recorded.append((a, k))
    return scan(*a, **k)
ca.find_stub_calls = record
report = audit(open_target(CORE))
ca.find_stub_calls = scan

def best(fn):
    times = []
    for _ in range(REPS):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return min(times), hashlib.sha1(repr(out).encode()).hexdigest()[:12]

res = {
    "slots": sum(len(m.stubs) + len(m.ool_stubs) for m in report.modules),
    "text MB": round(sum(len(a[0]) for a, _ in recorded) / 2**20, 1),
}
res["json"] = best(lambda: render(report, "json"))
res["table"] = best(lambda: render(report, "table"))
res["scan (audit)"] = best(lambda: [scan(*a, **k) for a, k in recorded])
res["scan (every site)"] = best(
    lambda: [scan(*a, **dict(k, suspect_only=False)) for a, k in recorded])
print(json.dumps(res))
"""


def measure(tree: Path, core: Path, reps: int) -> dict[str, object]:
    code = CHILD.replace("TREE", repr(str(tree))).replace("CORE", repr(str(core)))
    code = code.replace("REPS", str(reps))
    env = dict(os.environ, DRGN_DISABLE_PLUGINS="*")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, cwd="/", env=env)
    if p.returncode:
        raise SystemExit(f"bench_report_scan: {tree}: {p.stderr.strip()[-300:]}")
    result: dict[str, object] = json.loads(p.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", type=Path, default=next((c for c in CORES if c.exists()), None))
    ap.add_argument("--base", type=Path, help="another checkout to measure (before a change)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="interleaved child runs per checkout")
    args = ap.parse_args()
    if args.core is None:
        raise SystemExit("bench_report_scan: no dump found; pass --core VMCORE")
    trees = [("this", REPO)] + ([("base", args.base)] if args.base else [])
    results: dict[str, list[dict[str, object]]] = {name: [] for name, _ in trees}
    for _ in range(args.runs):
        for name, tree in trees:
            results[name].append(measure(tree, args.core, args.reps))
    print(f"{args.core}: best CPU time of {args.reps} repetitions, {args.runs} run(s)")
    for name, runs in results.items():
        first = runs[0]
        print(f"  {name}: {first['slots']} slots, {first['text MB']} MB of module text")
        for key in ("json", "table", "scan (audit)", "scan (every site)"):
            secs = min(r[key][0] for r in runs)  # type: ignore[index]
            digest = first[key][1]  # type: ignore[index]
            print(f"    {key:<18} {secs * 1000:7.1f} ms  (output {digest})")
    if args.base:
        this, base = results["this"], results["base"]
        for key in ("json", "table", "scan (audit)", "scan (every site)"):
            a = min(r[key][0] for r in this)  # type: ignore[index]
            b = min(r[key][0] for r in base)  # type: ignore[index]
            same = this[0][key][1] == base[0][key][1]  # type: ignore[index]
            print(f"  {key:<18} {b / a:5.1f}x faster, output {'identical' if same else 'DIFFERS'}")


if __name__ == "__main__":
    main()
