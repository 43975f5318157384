#!/usr/bin/env python3
"""Audit vmcores into one JSON-lines file: one ``klpinspect/1`` report per line.

    python3 examples/audit_jsonl.py -o audits.jsonl VMCORE VMLINUX [VMCORE VMLINUX]...
    drgn -c VMCORE -s VMLINUX examples/audit_jsonl.py -o audits.jsonl

Each line is ``{"core": PATH, "exit_status": N, "report": {...}}`` (or
``"error"`` instead of ``"report"`` for a dump that cannot be opened); the
file is appended to, so a loop over many dumps with drgn fills one file.
Exit status: the worst of the dumps (0 clean, 1 error findings, 2 unusable).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "klpinspect" / "api.py").exists():  # run from a source checkout
    sys.path.insert(0, str(_CHECKOUT))

import klpinspect  # noqa: E402


def audit_line(core: str, target_or_error: klpinspect.Target | str) -> dict[str, Any]:
    if isinstance(target_or_error, str):
        return {"core": core, "exit_status": 2, "error": target_or_error}
    report = klpinspect.audit(target_or_error)
    return {"core": core, "exit_status": report.exit_status, "report": report.to_json()}


def main(argv: list[str], prog: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="-", help="JSON-lines file to append to (- stdout)")
    ap.add_argument("pairs", nargs="*", metavar="VMCORE VMLINUX")
    args = ap.parse_args(argv)
    lines = []
    if prog is not None:  # inside drgn: the session's own program
        lines.append(audit_line(str(prog.core_dump_path), klpinspect.target_from_drgn(prog)))
    if len(args.pairs) % 2:
        ap.error("give VMCORE VMLINUX pairs")
    for core, vmlinux in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        try:
            target: klpinspect.Target | str = klpinspect.open_target(core, symbols=[vmlinux])
        except klpinspect.KlpError as e:
            target = str(e)
        lines.append(audit_line(core, target))
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "a") as out:
            out.write(text)
    return max((line["exit_status"] for line in lines), default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], globals().get("prog")))
