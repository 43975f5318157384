"""Damage never crashes: a fixed-seed fuzz sample and targeted corruptions of a real dump.

The fixture's 6.1 ``vmcore.elf`` is copied once (``tests/fuzz/harness.py``);
each trial writes 1..16 random bytes where klpinspect reads
(``tests/fuzz/regions.py``), runs audit/stubs/lpstack/bt through the drgn
and the gdb back ends and restores the bytes.  Every command must end with
valid JSON (exit 0/1) or one line (exit 2): no crash, no hang (60 s per
trial), bounded memory (RLIMIT_AS).  The targeted corruptions write the
kernel's own failure modes (an overwritten ``STACK_END_MAGIC``, a livepatch
stack grown into the kernel stack, looping lists) and check that both back
ends report the same finding.  ``benchmarks/fuzz_campaign.py`` runs thousands.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import harness  # noqa: E402
import regions as regions_mod  # noqa: E402

pytestmark = pytest.mark.dump

SAMPLE = 50  # trials per back end: about a minute each
SEED = 14
BACKENDS = ("drgn", "gdb")


@pytest.fixture(scope="module")
def dump_and_symbols(vmcore_elf: Path, vmlinux_debug: Path) -> tuple[Path, Path]:
    return vmcore_elf, vmlinux_debug


@pytest.fixture(scope="module")
def work(dump_and_symbols: tuple[Path, Path]) -> Iterator[harness.WorkCopy]:
    with harness.WorkCopy(dump_and_symbols[0]) as w:
        yield w


@pytest.fixture(scope="module")
def region_map(dump_and_symbols: tuple[Path, Path]) -> dict[str, list[tuple[str, int, int]]]:
    return regions_mod.region_map(*dump_and_symbols)


def test_regions_cover_what_klpinspect_reads(region_map: dict[str, Any]) -> None:
    for region in ("module.list", "module.name", "module.arch", "module.sect_attrs",
                   "module.layout", "stubs", "tramp", "modules_head", "task.fields",
                   "task.stack_end", "task.lpframes"):  # fmt: skip
        assert region_map.get(region), region
    assert len(region_map["module.list"]) == 40  # every module of the fixture
    assert len(region_map["tramp"]) == 80  # tramp and tramp_regs of each


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_sample(backend: str, work: harness.WorkCopy, region_map: dict[str, Any],
                     dump_and_symbols: tuple[Path, Path]) -> None:
    dump, symbols = dump_and_symbols
    trials = harness.make_trials(dump, region_map, SAMPLE, SEED)
    baseline, results = harness.run_trials(backend, trials, work, symbols, timeout=60)
    assert [b["outcome"] for b in baseline] == ["ok"] * len(harness.COMMANDS), baseline
    failures = list(harness.iter_failures(results))
    assert failures == [], failures[:3]
    assert len(results) == SAMPLE * len(harness.COMMANDS)
    # the working copy is clean again
    with open(dump, "rb") as a, open(work.path, "rb") as b:
        for t in trials:
            n = len(t.data) // 2
            a.seek(t.offset)
            b.seek(t.offset)
            assert a.read(n) == b.read(n)
    table = harness.summarize(trials, baseline, results)
    # an overwritten end_of_stack word always gives a finding; damage elsewhere
    # mostly does (the campaign measures how often: benchmarks/fuzz_campaign.py)
    row = table["task.stack_end"]
    assert row["detected"] == row["trials"] > 0, row
    assert sum(r["detected"] for r in table.values()) > SAMPLE // 2


# ---- targeted corruptions: the kernel's own checks on a real dump


def _clean_facts(dump: Path, symbols: Path) -> dict[str, Any]:
    import drgn
    from drgn.helpers.linux.module import for_each_module
    from drgn.helpers.linux.pid import find_task, for_each_task

    prog = drgn.program_from_core_dump(str(dump))
    try:
        prog.load_debug_info([str(symbols)])
    except drgn.MissingDebugInfoError:
        pass
    tr = regions_mod._Translator(prog, dump)
    mods = [(m.name.string_().decode(), m) for m in for_each_module(prog)]
    task = find_task(prog, 130)
    tasks = list(for_each_task(prog))

    def off(vaddr: int) -> int:
        ((o, _),) = tr.ranges(vaddr, 8)
        return o

    # list.next of the 5th module -> the 2nd module's list: a loop
    m5, m2 = mods[4][1], mods[1][1]
    # tasks.next of the 3rd process -> its own tasks: a loop
    t3 = tasks[2]
    return {
        "stack_end": off(int(task.stack.value_())),
        "ksp": off(int(task.thread.ksp.address_of_().value_())),
        "lp_sp": int(task.thread_info.livepatch_sp.value_()),
        "module_next": off(int(m5.list.next.address_of_().value_())),
        "module_loop_to": int(m2.list.address_of_().value_()),
        "module_names": [n for n, _ in mods],
        "task_next": off(int(t3.tasks.next.address_of_().value_())),
        "task_loop_to": int(t3.tasks.address_of_().value_()),
    }


def _trial(dump: Path, index: int, label: str, offset: int, value: int) -> harness.Trial:
    with open(dump, "rb") as f:
        f.seek(offset)
        original = f.read(8)
    return harness.Trial(index, label, label, offset, struct.pack("<Q", value).hex(),
                         original.hex())


@pytest.fixture(scope="module")
def targeted(dump_and_symbols: tuple[Path, Path], work: harness.WorkCopy
             ) -> dict[str, dict[int, dict[str, dict[str, Any]]]]:
    dump, symbols = dump_and_symbols
    facts = _clean_facts(dump, symbols)
    trials = [
        _trial(dump, 0, "stack_end", facts["stack_end"], 0),
        _trial(dump, 1, "ksp", facts["ksp"], facts["lp_sp"] + 16),
        _trial(dump, 2, "module_loop", facts["module_next"], facts["module_loop_to"]),
        _trial(dump, 3, "module_leaves", facts["module_next"], 0x1000),
        _trial(dump, 4, "task_loop", facts["task_next"], facts["task_loop_to"]),
    ]
    out: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for backend in BACKENDS:
        _, results = harness.run_trials(backend, trials, work, symbols, timeout=120)
        per: dict[int, dict[str, dict[str, Any]]] = {}
        for r in results:
            per.setdefault(r["trial"], {})[r["cmd"]] = r
        out[backend] = per
    out["facts"] = facts  # type: ignore[assignment]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_stack_end_magic_overwritten(targeted: Any, backend: str) -> None:
    r = targeted[backend][0]
    for cmd in ("audit", "lpstack", "bt"):
        assert r[cmd]["outcome"] == "finding", r[cmd]
        assert "TASK_STACK_CORRUPT" in r[cmd]["codes"], (cmd, r[cmd])


@pytest.mark.parametrize("backend", BACKENDS)
def test_livepatch_stack_into_kernel_stack(targeted: Any, backend: str) -> None:
    r = targeted[backend][1]
    for cmd in ("audit", "lpstack"):
        assert r[cmd]["outcome"] == "finding" and "LPSTACK_OVERFLOW" in r[cmd]["codes"], r[cmd]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", [2, 3, 4], ids=["module-loop", "module-leaves", "task-loop"])
def test_list_corruption_is_one_finding(targeted: Any, backend: str, index: int) -> None:
    r = targeted[backend][index]
    cmds = ("audit", "stubs") if index < 4 else ("audit", "lpstack")
    for cmd in cmds:
        assert r[cmd]["outcome"] == "finding", r[cmd]
        assert r[cmd]["codes"].count("LIST_CORRUPT") == 1, r[cmd]


def test_same_findings_both_back_ends(targeted: Any) -> None:
    for index in range(5):  # both walk init_task.tasks through the layout layer
        for cmd in ("audit", "lpstack"):
            d, g = targeted["drgn"][index][cmd], targeted["gdb"][index][cmd]
            assert d["codes"] == g["codes"], (index, cmd, d, g)
