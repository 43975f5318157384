"""``klpinspect.report.tabulate``: the text of tabulate's own table, without its
number parsing of every cell (the alignments are decided from tabulate's cell
typing, stopping at a column's first text cell)."""

from __future__ import annotations

from typing import Any

import pytest
from tabulate import tabulate as plain_tabulate

from klpinspect.report import tabulate

HEADERS = ("module", "#", "stub", "kind", "target", "symbol", "implied TOC", "magic", "role")
ROWS: list[tuple[Any, ...]] = [
    ("mod_a", 0, "0xc008000000001000", "r2", "0xc000000000012340", "printk", None, "ok", ""),
    ("mod_b", 12, "0xc008000000001040", "ftrace", "-", "-", "0x1", "BAD", "tramp"),
    ("m", "-", "0xc0", "x", "12", "007", 3, True, "ool <- a (ok)"),
]


@pytest.mark.parametrize("rows", [
    ROWS,
    ROWS[:2],  # "#" all ints: right-aligned
    [(*r[:2], "1.5", *r[3:]) for r in ROWS],  # a float-looking cell: tabulate's own path
    [("x", "1"), ("y", "22")],  # numeric text: a number column
    [("x", None), ("y", None)],
    [("a", 1, 2.5), ("bb", 22, 3.25)],  # floats
], ids=["mixed", "ints", "float-text", "numeric-text", "none", "floats"])
def test_same_text_as_tabulate(rows: list[tuple[Any, ...]]) -> None:
    headers = HEADERS[: len(rows[0])]
    want = plain_tabulate(rows, headers=headers, numalign="right", stralign="left")
    assert tabulate(rows, headers) == want
    assert tabulate(iter(rows), headers) == want
