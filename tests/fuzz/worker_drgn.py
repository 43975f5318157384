"""Fuzz worker, drgn back end: ``worker_drgn.py DUMP SYMBOLS TRIALS.json OUT.jsonl``.

Opens the (working copy of the) dump once; per trial: patch, a fresh
:class:`~klpinspect.backends.drgn.target.DrgnTarget` (nothing cached from the last
trial; drgn itself reads the core with ``pread``), the commands, restore.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runone import apply, restore, run_command_classified  # noqa: E402


def main() -> None:
    dump, symbols, trials_file, out_file = sys.argv[1:5]
    logging.getLogger("drgn").setLevel(logging.CRITICAL)
    from klpinspect.backends.drgn.program import open_program
    from klpinspect.backends.drgn.target import DrgnTarget

    spec = json.loads(Path(trials_file).read_text())
    prog, kind = open_program(core=dump, symbols=[symbols])
    with open(out_file, "a", buffering=1) as out:
        def run(index: int) -> None:
            for name, argv in spec["commands"]:
                r = run_command_classified(DrgnTarget(prog, kind), name, list(argv))
                out.write(json.dumps({"trial": index, "cmd": name, **r}) + "\n")

        if spec["baseline"]:
            out.write(json.dumps({"start": -1}) + "\n")
            run(-1)
        for t in spec["trials"]:
            out.write(json.dumps({"start": t["index"]}) + "\n")
            apply(dump, t)
            try:
                run(t["index"])
            finally:
                restore(dump, t)


if __name__ == "__main__":
    main()
