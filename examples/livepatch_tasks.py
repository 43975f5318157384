#!/usr/bin/env python3
"""List every task with livepatch frames, and where each frame returns to.

    python3 examples/livepatch_tasks.py VMCORE VMLINUX
    drgn -c VMCORE -s VMLINUX examples/livepatch_tasks.py

A task sleeping inside a livepatched function keeps a frame on its livepatch
stack (``thread_info.livepatch_sp``) until it returns: these are the tasks a
livepatch transition waits for.  Exit status 1 if a stack is damaged.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "klpinspect" / "api.py").exists():  # run from a source checkout
    sys.path.insert(0, str(_CHECKOUT))

import klpinspect  # noqa: E402


def main(argv: list[str], prog: Any = None) -> int:
    if prog is not None:
        target = klpinspect.target_from_drgn(prog)
    elif len(argv) == 2:
        try:
            target = klpinspect.open_target(argv[0], symbols=[argv[1]])
        except klpinspect.KlpError as e:
            print(f"livepatch_tasks: {e}", file=sys.stderr)
            return 2
    else:
        print("usage: livepatch_tasks.py VMCORE VMLINUX", file=sys.stderr)
        return 2
    report = klpinspect.livepatch_stacks(target)
    for task in report.tasks or []:
        print(f"{task.pid} {task.comm}: {len(task.frames)} livepatch frame(s)")
        for i, frame in enumerate(task.frames):
            print(f"  #{i} returns to {frame.lr_symbol or hex(frame.lr)} "
                  f"with r2 {frame.r2:#x} ({frame.r2_owner or '?'})")
    for f in report.findings:
        print(f"{f.severity}: {f.code}: {f.message}", file=sys.stderr)
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], globals().get("prog")))
