#!/usr/bin/env python3
"""Summarise ``klpinspect --format json prologue --list`` output for docs/arm32.md.

    klpinspect --format json prologue --list vmlinux > v.json
    find modules -name '*.ko' | xargs klpinspect --format json prologue --list > m.json
    tools/arm32-prologue-stats.py v.json m.json

Prints, per JSON file: the class counts (percent of traced functions), the
apcs-frame register lists and local sizes, every first deviation of
apcs-frame-extra with examples, and the most common prologue shapes of the
unwind-tables functions.  Markdown tables, ready to paste.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from typing import Any

CLASSES = ["apcs-frame", "apcs-frame-extra", "unwind-tables", "thumb2", "no-mcount"]


def _pct(n: int, of: int) -> str:
    return f"{100.0 * n / of:.1f}%" if of else "-"


def _shape(entry: dict[str, Any]) -> str:
    """A prologue with its numbers abstracted: ``push {N regs + lr}; sub sp, #imm``."""
    parts = []
    for text in entry.get("prologue", []):
        if text.startswith(("str lr, [sp, #-4]!", "push {lr}")):
            continue
        m = re.match(r"push \{(.*)\}", text)
        if m:
            regs = [r.strip() for r in m.group(1).split(",")]
            tail = [r for r in regs if r in ("fp", "ip", "lr", "pc")]
            n = len(regs) - len(tail)
            parts.append(f"push {{{n} reg{'' if n == 1 else 's'} + {', '.join(tail)}}}")
        elif text.startswith("sub sp, sp, #"):
            parts.append("sub sp, sp, #imm")
        else:
            parts.append(re.sub(r"#-?(0x)?[0-9a-f]+", "#imm", text))
    return "; ".join(parts) or "(nothing before push {lr}; bl __gnu_mcount_nc)"


def report(path: str) -> None:
    with open(path) as f:
        doc = json.load(f)["prologues"]
    files = doc["files"]
    total = doc["total"]
    traced = total["traced"]
    print(f"## {path}: {len(files)} file(s), {total['functions']} functions, "
          f"{traced} call __gnu_mcount_nc\n")
    print("| class | functions | of traced |")
    print("| --- | ---: | ---: |")
    for c in CLASSES:
        n = total["counts"][c]
        of = _pct(n, total["functions"]) + " of all" if c == "no-mcount" else _pct(n, traced)
        print(f"| {c} | {n} | {of} |")
    if doc["errors"]:
        print(f"\nunreadable: {len(doc['errors'])}: {doc['errors'][:3]}")

    entries: list[tuple[str, dict[str, Any]]] = [
        (f["name"], e) for f in files for e in f.get("list", [])]
    by_class: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for owner, e in entries:
        by_class[e["class"]].append((owner, e))

    apcs = by_class["apcs-frame"]
    if apcs:
        regs = Counter(e["regs"] for _o, e in apcs)
        with_locals = sum(1 for _o, e in apcs if e.get("locals"))
        print(f"\napcs-frame: {with_locals} ({_pct(with_locals, len(apcs))}) with "
              "`sub sp, sp, #N`; register lists:\n")
        print("| push | functions |")
        print("| --- | ---: |")
        for r, n in regs.most_common(8):
            print(f"| `{r}` | {n} |")

    extra = by_class["apcs-frame-extra"]
    if extra:
        devs: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for owner, e in extra:
            devs[e["offender"]["deviation"]].append((owner, e))
        print("\napcs-frame-extra, by first offending instruction:\n")
        print("| deviation | functions | of traced | examples (function: instruction) |")
        print("| --- | ---: | ---: | --- |")
        for d, items in sorted(devs.items(), key=lambda x: -len(x[1])):
            texts = Counter(e["offender"]["text"] for _o, e in items)
            examples = []
            for text, _n in texts.most_common(3):
                owner, e = next((o, e) for o, e in items if e["offender"]["text"] == text)
                where = e["name"] if owner.startswith("vmlinux") else f"{e['name']} [{owner}]"
                examples.append(f"`{where}`: `{text}`")
            print(f"| {d} | {len(items)} | {_pct(len(items), traced)} | "
                  f"{'; '.join(examples)} |")

    unwind = by_class["unwind-tables"]
    if unwind:
        shapes = Counter(_shape(e) for _o, e in unwind)
        print("\nunwind-tables, prologue shapes (registers and sizes abstracted):\n")
        print("| prologue before `push {lr}; bl __gnu_mcount_nc` | functions | of unwind-tables |")
        print("| --- | ---: | ---: |")
        for s, n in shapes.most_common(10):
            print(f"| `{s}` | {n} | {_pct(n, len(unwind))} |")
    print()


def main() -> int:
    for path in sys.argv[1:]:
        report(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
