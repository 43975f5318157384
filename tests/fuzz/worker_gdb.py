"""Fuzz worker, gdb back end: sourced inside ``gdb-multiarch -batch`` after
``gdb/klpinspect.py``; ``sys.argv`` = [TRIALS.json, OUT.jsonl, DUMP].

Per trial: patch the dump, ``core-file`` again (gdb re-reads the file; the
klp-* commands' target and its memory cache are dropped), run each klp-*
command with its output captured, restore.  A klp-* command reports errors
as ``gdb.GdbError`` (one line); anything else reaching here is a crash.
"""

from __future__ import annotations

import json
import sys

import gdb  # type: ignore[import-not-found]


def _main() -> None:
    from klpinspect.backends.gdb import commands

    trials_file, out_file, dump = sys.argv[:3]
    from runone import apply, classify_text, one_line_error, restore

    spec = json.loads(open(trials_file).read())
    state = commands._STATE  # the klp-* commands' one-target-per-session cache

    def run(index: int, out: object) -> None:
        gdb.execute(f"core-file {dump}", to_string=True)
        for name, argv in spec["commands"]:
            # a fresh target per command, as the drgn worker: the damage one
            # command's walks record is not carried into the next one's report
            state["target"] = None
            line = " ".join([f"klp-{name}", *argv, "--format", "json"])
            try:
                text = gdb.execute(line, to_string=True)
            except gdb.error as e:  # GdbError from the command arrives as gdb.error
                msg = str(e)
                r = one_line_error(msg)
                if "Error occurred in Python" in msg:
                    r = {"outcome": "crash", "message": msg[-1500:], "codes": []}
            except Exception as e:  # noqa: BLE001
                r = {"outcome": "crash", "message": f"{type(e).__name__}: {e}", "codes": []}
            else:
                r = classify_text(text)
            out.write(json.dumps({"trial": index, "cmd": name, **r}) + "\n")  # type: ignore[attr-defined]

    with open(out_file, "a", buffering=1) as out:
        if spec["baseline"]:
            out.write(json.dumps({"start": -1}) + "\n")
            run(-1, out)
        for t in spec["trials"]:
            out.write(json.dumps({"start": t["index"]}) + "\n")
            apply(dump, t)
            try:
                run(t["index"], out)
            finally:
                restore(dump, t)


_main()
