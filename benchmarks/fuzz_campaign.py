#!/usr/bin/env python3
"""Fuzz campaign: thousands of random corruptions of a real dump, both back ends.

    nice -n 10 python3 benchmarks/fuzz_campaign.py --trials 2000 [--backend drgn,gdb]
        [--seed 1] [--timeout 60] [--json results.json]

Each trial writes 1..16 random bytes (random values or zeroes) where
klpinspect reads the fixture's 6.1 ``vmcore.elf`` (``tests/fuzz/regions.py``)
and runs audit, stubs, lpstack and bt (``tests/fuzz/harness.py``).  Prints,
per back end, a table of region x outcome x new finding codes, and per region
how many trials were ``silent``: the output changed (the tool read the
bytes) but no command reported a new finding.  Failures (crash, badjson,
hang) are listed; the exit status is 1 if there was any.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "fuzz"))
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--backend", default="drgn,gdb")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per trial")
    ap.add_argument("--mem", type=int, default=6, help="GiB of address space per worker")
    ap.add_argument("--json", help="write the per-command results here")
    ap.add_argument("--partial", metavar="OUT.jsonl",
                    help="only summarize a (running) worker's output file, for --backend")
    a = ap.parse_args()
    dump, symbols = harness.fixture_paths()
    regions = harness.regions_for(dump, symbols)
    trials = harness.make_trials(dump, regions, a.trials, a.seed)
    if a.partial:
        lines = [json.loads(x) for x in Path(a.partial).read_text().splitlines() if x.strip()]
        base = [x for x in lines if x.get("trial") == -1]
        res = [x for x in lines if x.get("trial", -1) >= 0]
        finished = {r["trial"] for r in res if r["cmd"] == harness.COMMANDS[-1][0]}
        res = [r for r in res if r["trial"] in finished]
        done = [t for t in trials if t.index in finished]
        fails = list(harness.iter_failures(res))
        print(harness.render_table(harness.summarize(done, base, res),
                                   f"{a.backend}: {len(done)} trials done, {len(fails)} failures"))
        for r in res:
            if r["outcome"] == "error":
                t = trials[r["trial"]]
                print(f"  exit-2 {t.region} {t.label} {r['cmd']}: {r.get('message', '')[:160]}")
        return 1 if fails else 0
    print(f"{len(trials)} trials over {len(regions)} regions of {dump.name} (seed {a.seed})")
    print("regions: " + ", ".join(f"{k} {len(v)} ranges/{sum(x[2] for x in v)} B"
                                  for k, v in sorted(regions.items())))
    failed = 0
    everything = {}
    with harness.WorkCopy(dump) as work:
        print(f"working copy {work.path}: {work.copy_seconds:.2f} s to make (once); "
              "a trial patches and restores it in place")
        for backend in a.backend.split(","):
            t0 = time.perf_counter()
            baseline, results = harness.run_trials(backend, trials, work, symbols,
                                                   timeout=a.timeout, mem_bytes=a.mem << 30,
                                                   log=sys.stdout)  # fmt: skip
            secs = time.perf_counter() - t0
            table = harness.summarize(trials, baseline, results)
            fails = list(harness.iter_failures(results))
            failed += len(fails)
            print()
            print(harness.render_table(table, f"{backend}: {len(trials)} trials in {secs:.0f} s "
                                       f"({secs / max(len(trials), 1):.2f} s/trial), "
                                       f"{len(fails)} failures"))  # fmt: skip
            for r in fails[:20]:
                print(f"  FAIL trial {r['trial']} {r['cmd']} {r['outcome']}: "
                      f"{r.get('message', '')[:300]}")
            everything[backend] = {"baseline": baseline, "results": results}
            sys.stdout.flush()
    if a.json:
        Path(a.json).write_text(json.dumps({"trials": [t.__dict__ for t in trials],
                                            **everything}))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
