"""What the klpinspect drgn plugin costs a drgn session that never uses it.

Times ``python3 -m drgn -q -c VMCORE -s VMLINUX -e pass`` on the fixture dump
with the plugin loaded (``DRGN_PLUGINS``) and without (goal: no measurable
difference), the import of the plugin module alone (``-X importtime``), and
the first ``%klp-stubs`` of a session (where the checks are imported), and
what the kdump program hook adds to a session on a kdump-compressed dump.

Run: python3 benchmarks/bench_drgn_plugin.py [--runs N] [--module MOD]
(the default is ``klpinspect.backends.drgn.commands``; ``--module
klpinspect.drgn.commands`` on a checkout from before the drgn back end moved
to ``klpinspect/backends/drgn`` measures "before").
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("KLPINSPECT_FIXTURES", REPO.parent / "shared" / "fixtures"))
LP61 = FIXTURES / "ppc64le-6.1-lp"
CACHE = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache"))


def session(core: Path, code: str, plugin: str | None, hook: bool = True) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO), DRGN_DISABLE_PLUGINS="klpinspect")
    if not hook:
        env["KLPINSPECT_NO_PROGRAM_HOOK"] = "1"
    if plugin:
        env["DRGN_PLUGINS"] = f"klpinspect={plugin}"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "drgn", "-q", "-c", str(core), "-s", str(LP61 / "vmlinux.debug"),
         "-e", code],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def import_us(module: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import drgn.commands._crash; import {module}"],
        capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    for line in proc.stderr.splitlines()[::-1]:
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)", line)
        if m and m.group(2) == module:
            return int(m.group(1))
    raise SystemExit(f"no import time for {module}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--module", default="klpinspect.backends.drgn.commands")
    args = ap.parse_args()
    core = CACHE / "fixtures" / "vmcore.elf"
    if not core.exists():
        raise SystemExit(f"{core}: run the dump tests once to unpack it")
    print(f"plugin module: {args.module}")
    print(f"import of the plugin after drgn's own commands: {import_us(args.module) / 1000:.1f} ms")
    rows = []
    for label, plugin in (("without plugin", None), ("with plugin", args.module)):
        times = [session(core, "pass", plugin) for _ in range(args.runs)]
        rows.append((label, statistics.median(times)))
        print(f"drgn session start {label:15s}: median {statistics.median(times) * 1000:.0f} ms "
              f"(min {min(times) * 1000:.0f}, {args.runs} runs)")
    print(f"plugin start cost: {(rows[1][1] - rows[0][1]) * 1000:+.0f} ms")
    first = [session(core, "from drgn.commands import run_command; "
                     "run_command(prog, 'klp-stubs rk_lib > /dev/null')", args.module)
             for _ in range(max(1, args.runs // 2))]
    print(f"session with one %klp-stubs: median {statistics.median(first) * 1000:.0f} ms")
    # kdump-compressed: the program hook lets drgn read modules (it then walks
    # the module list while loading debug info, through a second program)
    kdump = LP61 / "vmcore.kdump"
    for label, hook in (("without the hook", False), ("with the hook", True)):
        times = [session(kdump, "pass", args.module, hook) for _ in range(args.runs)]
        print(f"kdump session start {label:16s}: median {statistics.median(times) * 1000:.0f} ms "
              f"(min {min(times) * 1000:.0f})")


if __name__ == "__main__":
    main()
