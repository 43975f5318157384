"""Every front end on every fixture dump answers as recorded in tests/data/golden.

The records were made with ``python3 tests/golden.py`` (the real CLI in a
subprocess, gdb-multiarch in batch mode) before the package was rearranged
(issue 11); here the drgn cases run in-process with one opened program per
dump, the gdb ones in one gdb session per dump.  A record that must change
is re-recorded, with the reason in the commit message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from golden import compute_all, drgn_cases, gdb_sessions, load_golden, make_dumps

pytestmark = pytest.mark.dump


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    work = tmp_path_factory.mktemp("golden")
    dumps = make_dumps(work)
    try:
        return compute_all(dumps, work, inprocess=True)
    finally:
        for path in (dumps.cut_raw, dumps.cut_1m, dumps.cut_mem, dumps.hash_mmu):
            Path(path).unlink()  # 64 MiB each: not kept in pytest's tmp history


GOLDEN = load_golden()


def test_every_case_recorded() -> None:
    names = {c.name for c in drgn_cases()}
    for session, _core, _symbols, commands in gdb_sessions():
        names.update(f"gdb-{session}-{name}" for name in commands)
    assert names == set(GOLDEN)


def _explain(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    lines = []
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            a, b = json.dumps(ours.get(key))[:3000], json.dumps(theirs.get(key))[:3000]
            lines.append(f"{key}:\n  now:    {a}\n  golden: {b}")
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_same_as_recorded(results: dict[str, dict[str, Any]], name: str) -> None:
    ours, theirs = results[name], GOLDEN[name]
    assert ours == theirs, _explain(ours, theirs)


def _without_kind(doc: dict[str, Any]) -> dict[str, Any]:
    # gdb reads the DWARF; drgn's command line leaves it unread where the BTF
    # gives the same types and kallsyms the same names (target.debuginfo "btf+kallsyms")
    return {**doc, "target": {k: v for k, v in doc["target"].items()
                              if k not in ("kind", "debuginfo")}}


@pytest.mark.parametrize(
    "name", sorted(n for n in GOLDEN if n.startswith("gdb-") and "drgn-" + n[4:] in GOLDEN)
)
def test_gdb_same_as_drgn(results: dict[str, dict[str, Any]], name: str) -> None:
    """Both back ends print the same JSON for the same dump, the damaged ones included
    (compared whole where it is stored whole; tests/test_gdb.py compares the big ones)."""
    ours, theirs = results[name], results["drgn-" + name[4:]]
    if "json" not in ours or "json" not in theirs:
        assert ("json" in ours) == ("json" in theirs), (ours, theirs)
        if ours["stderr"] and "nosuch" not in name:
            # the same message, after the front end's own prefix
            assert ours["stderr"].split(": ", 1)[1] == theirs["stderr"].split(": ", 1)[1].strip()
        return
    assert _without_kind(ours["json"]) == _without_kind(theirs["json"])
