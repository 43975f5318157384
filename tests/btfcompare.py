"""Comparing klpinspect's JSON reports made with BTF + kallsyms and with DWARF.

Shared by tests/test_btf_dump.py (the fixture dumps) and
benchmarks/bench_btf.py (which also checks the lab's Debian dumps).
"""

from __future__ import annotations

from typing import Any

__all__ = ("bt_inlined_difference", "symbol_size_difference", "without_debuginfo")


def without_debuginfo(report: dict[str, Any]) -> dict[str, Any]:
    """The report without ``target.debuginfo`` (the one field that must differ)."""
    out = dict(report)
    out["target"] = {k: v for k, v in report["target"].items() if k != "debuginfo"}
    return out


def _name(symbol: str | None) -> str | None:
    """``name+off/size [mod]`` without ``/size``."""
    if symbol is None:
        return None
    head, _, rest = symbol.partition("/")
    mod = rest.partition(" ")[2]
    return f"{head} {mod}".strip()


def _size(symbol: str | None) -> int:
    """The ``/size`` of ``name+off/size [mod]`` (0 if none)."""
    if not symbol or "/" not in symbol:
        return 0
    return int(symbol.partition("/")[2].partition(" ")[0], 16)


def bt_inlined_difference(btf: dict[str, Any], dwarf: dict[str, Any]) -> int:
    """Check two ``bt`` reports differ only where DWARF knows more; returns the
    number of inlined frames DWARF adds.

    With BTF + kallsyms, ``bt`` has the same real frames (pc, sp, livepatch
    corrections, symbol names and offsets) but no ``(inlined in ...)``
    frames, and each symbol's size runs to the next kallsyms symbol (the
    kernel's ``%pS``), not the ELF ``st_size`` (so it is never smaller).

    :raises AssertionError: for any other difference
    """
    assert without_debuginfo(btf)["kernel"] == without_debuginfo(dwarf)["kernel"]
    (bt_task,) = btf["tasks"]
    (dw_task,) = dwarf["tasks"]
    real = [f for f in dw_task["backtrace"] if "(inlined in " not in (f["symbol"] or "")]
    frames = bt_task["backtrace"]
    assert len(frames) == len(real), "frames"
    for ours, theirs in zip(frames, real, strict=True):
        for key in set(ours) | set(theirs):
            if key in ("index", "symbol", "original_symbol", "frame_index"):
                continue
            assert ours.get(key) == theirs.get(key), key
        for key in ("symbol", "original_symbol"):
            assert _name(ours.get(key)) == _name(theirs.get(key)), key
            assert _size(ours.get(key)) >= _size(theirs.get(key)), key
    for key in set(bt_task) | set(dw_task):
        if key != "backtrace":
            assert bt_task.get(key) == dw_task.get(key), key
    return len(dw_task["backtrace"]) - len(real)


def symbol_size_difference(btf: dict[str, Any], dwarf: dict[str, Any]) -> int:
    """Check two reports (``ftrace``: the functions ftrace redirects) differ
    only in symbol sizes; returns how many ``name+off/size`` differ.

    kallsyms keeps no sizes: with BTF + kallsyms a vmlinux symbol's size runs
    to the next kallsyms symbol (the kernel's ``%pS``), the ELF ``st_size``
    plus any alignment padding, so it is never smaller.

    :raises AssertionError: for any other difference
    """
    return _sizes(without_debuginfo(btf), without_debuginfo(dwarf), "report")


def _sizes(ours: Any, theirs: Any, where: str) -> int:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        return sum(_sizes(ours[k], theirs[k], f"{where}.{k}") for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        pairs = enumerate(zip(ours, theirs, strict=True))
        return sum(_sizes(a, b, f"{where}[{i}]") for i, (a, b) in pairs)
    if ours == theirs:
        return 0
    assert isinstance(ours, str) and isinstance(theirs, str), where
    assert "/" in ours and "/" in theirs, f"{where}: {ours!r} != {theirs!r}"
    assert _name(ours) == _name(theirs), f"{where}: {ours!r} != {theirs!r}"
    assert _size(ours) > _size(theirs), f"{where}: {ours!r} vs {theirs!r}"
    return 1
