"""``klpinspect prologue``: lint many files, render the summary, the list, or JSON.

JSON is the ``klpinspect/1`` schema (:mod:`klpinspect.report`) with a
``prologues`` section::

    {"schema": "klpinspect/1", "target": {"kind": "prologue", "files": N},
     "kernel": {}, "findings": [],
     "prologues": {"classes": [...], "total": {...},
                   "files": [{"path", "name", "kind", "functions", "traced",
                              "counts": {class: n}, "deviations": {kind: n},
                              "notes"?, "list"?: [function, ...]}],
                   "errors": [{"path", "message"}]}}

``list`` (with ``--list``) holds every function that calls ``__gnu_mcount_nc``;
``no-mcount`` functions are counted, not listed.  Percentages in the table are
of the traced functions (those that call ``__gnu_mcount_nc``), except the
``no-mcount`` column, which is of all functions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import KlpError
from ..report import EXIT_OK, EXIT_UNUSABLE, SCHEMA, tabulate
from .prologue import CLASSES, Deviation, FilePrologues, PrologueClass, lint_prologues

__all__ = ("PrologueReport", "lint_prologue_files", "render_prologues")


@dataclass
class PrologueReport:
    """The results of several files, and the files that could not be read."""

    files: list[FilePrologues] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)

    @property
    def exit_status(self) -> int:
        """2 when any file could not be used, else 0 (the lint is informational)."""
        return EXIT_UNUSABLE if self.errors else EXIT_OK

    def totals(self) -> tuple[dict[PrologueClass, int], dict[Deviation, int], int, int]:
        """Counts per class and per first deviation, functions, traced functions."""
        counts = dict.fromkeys(CLASSES, 0)
        devs: dict[Deviation, int] = {}
        functions = traced = 0
        for f in self.files:
            for c, n in f.counts.items():
                counts[c] += n
            for d, n in _deviations(f).items():
                devs[d] = devs.get(d, 0) + n
            functions += len(f.functions)
            traced += f.traced
        return counts, devs, functions, traced

    def to_json(self, *, listing: bool = False) -> dict[str, Any]:
        counts, devs, functions, traced = self.totals()
        files = []
        for f in self.files:
            entry = f.to_json(listing=listing)
            entry["deviations"] = {d.value: n for d, n in _deviations(f).items()}
            files.append(entry)
        return {
            "schema": SCHEMA,
            "target": {"kind": "prologue", "files": len(self.files) + len(self.errors)},
            "kernel": {},
            "prologues": {
                "classes": [c.value for c in CLASSES],
                "total": {
                    "functions": functions,
                    "traced": traced,
                    "counts": {c.value: n for c, n in counts.items()},
                    "deviations": {d.value: n for d, n in sorted(devs.items())},
                },
                "files": files,
                "errors": [{"path": p, "message": m} for p, m in self.errors],
            },
            "findings": [],
        }


def _deviations(f: FilePrologues) -> dict[Deviation, int]:
    out: dict[Deviation, int] = {}
    for fn in f.functions:
        if fn.deviation is not None:
            out[fn.deviation] = out.get(fn.deviation, 0) + 1
    return out


def lint_prologue_files(paths: Sequence[str]) -> PrologueReport:
    """Lint every file; a file that cannot be used is recorded and the others go on."""
    report = PrologueReport()
    for path in paths:
        try:
            report.files.append(lint_prologues(path))
        except KlpError as e:
            report.errors.append((path, str(e)))
    return report


def _pct(n: int, of: int) -> str:
    return f"{n} ({100.0 * n / of:.1f}%)" if of else str(n)


def _summary_row(name: str, counts: dict[PrologueClass, int], functions: int,
                 traced: int) -> list[Any]:
    row: list[Any] = [name, functions, traced]
    for c in CLASSES:
        row.append(_pct(counts[c], functions if c is PrologueClass.NO_MCOUNT else traced))
    return row


def _where(f: FilePrologues, section: str, address: int) -> str:
    return f"{address:#x}" if f.linked else f"{section}+{address:#x}"


def render_prologues(report: PrologueReport, fmt: str = "table", *, listing: bool = False
                     ) -> str:
    """The report as ``table`` text or ``json``."""
    if fmt == "json":
        return json.dumps(report.to_json(listing=listing), indent=2) + "\n"
    if not report.files:
        return ""
    parts: list[str] = []
    rows = [_summary_row(f.name, f.counts, len(f.functions), f.traced) for f in report.files]
    counts, devs, functions, traced = report.totals()
    if len(report.files) > 1:
        rows.append(_summary_row(f"total ({len(report.files)} files)", counts, functions,
                                 traced))
    parts.append(tabulate(rows, headers=["file", "functions", "traced",
                                         *(c.value for c in CLASSES)]))
    if devs:
        extra = counts[PrologueClass.APCS_FRAME_EXTRA]
        parts.append(tabulate(
            [(d.value, _pct(n, extra)) for d, n in sorted(devs.items(), key=lambda x: -x[1])],
            headers=["apcs-frame-extra: first deviation", "functions"]))
    notes = [f"note: {f.name}: {n}" for f in report.files for n in f.notes]
    if notes:
        parts.append("\n".join(notes))
    if listing:
        lrows = []
        for f in report.files:
            for fn in f.functions:
                if fn.cls is PrologueClass.NO_MCOUNT:
                    continue
                lrows.append((f.name, fn.name, _where(f, fn.section, fn.address), fn.cls.value,
                              fn.reason))
        parts.append(tabulate(lrows, headers=["file", "function", "address", "class", "reason"])
                     if lrows else "no function calls __gnu_mcount_nc")
    return "\n\n".join(parts) + "\n"
