"""Livepatch stacks and klp-bt on the real ppc64le 6.1 and 7.2 dumps.

The parked ``rk_target`` kthread (6.1: pid 130, 7.2: pid 134) sits in
``livepatch_rk_target_inner`` with two livepatch frames.  Expected values are
each fixture's own (tests/fixturefacts.py): its kallsyms lines, its module
table (``.toc`` addresses), its livepatch frame table and ``/proc/PID/stack``.
6.1 is read as a fixed-up ELF, a kdump-compressed file and QEMU's raw dump;
7.2 (no kdump, no raw dump in the fixture) as its ELF.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import lp_fixture
from fixturefacts import Facts

from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.errors import KlpError
from klpinspect.livepatch import audit_livepatch_stacks, back_chain_stack_trace, klp_backtrace
from klpinspect.ppc64 import insn
from klpinspect.ppc64.lpstack import correct_backtrace, unwind_back_chain, walk_livepatch_stack
from klpinspect.ppc64.toc import module_toc
from klpinspect.report import render_json, render_table

pytestmark = pytest.mark.dump

DUMPS = [("6.1", "vmcore.elf.xz"), ("6.1", "vmcore.kdump"), ("6.1", "vmcore.qemu.elf.xz"),
         ("7.2", "vmcore.elf.xz")]


@pytest.fixture(scope="module", params=DUMPS, ids=lambda d: f"{d[0]}-{d[1].split('.')[1]}")
def dump(request: pytest.FixtureRequest) -> Iterator[tuple[Facts, DrgnTarget]]:
    """6.1's memory as a fixed-up ELF, a kdump-compressed file and QEMU's raw dump; 7.2's ELF."""
    version, name = request.param
    lp = lp_fixture(version)
    core: Path = lp.unpacked(name) if name.endswith(".xz") else lp.file(name)
    prog, kind = open_program(core=str(core), symbols=[str(lp.vmlinux_debug)])
    yield lp.facts, DrgnTarget(prog, kind)


@pytest.fixture(scope="module")
def target(dump: tuple[Facts, DrgnTarget]) -> DrgnTarget:
    return dump[1]


@pytest.fixture(scope="module")
def facts(dump: tuple[Facts, DrgnTarget]) -> Facts:
    return dump[0]


@pytest.fixture(scope="module")
def tocs(target: DrgnTarget) -> dict[int, str]:
    """Module TOC map from each module's ``.toc`` section (``my_r2()``, 5.x+ rule)."""
    return {
        module_toc(m.toc_section): m.name for m in target.modules() if m.toc_section is not None
    }


def _name(symbol: str | None) -> str | None:
    return None if symbol is None else re.sub(r"\+.*", "", symbol)


def test_fixture_facts_hold(target: DrgnTarget, tocs: dict[int, str], facts: Facts) -> None:
    kernel = target.kernel()
    assert kernel.has_livepatch_sp and kernel.toc == facts.kernel_toc
    handler = facts.sym("livepatch_handler")
    assert kernel.livepatch_handler == handler
    # The handler returns at +0x30: the word before it is its bctrl (facts §8.5).
    assert insn.words(target.read(handler + 0x2C, 4)) == (insn.BCTRL,)
    assert tocs[(facts.module("rk_target").toc_section & ~0xFF) + 0x8000] == "rk_target"
    assert tocs == {row.toc: row.name for row in facts.modules}


def test_parked_task_frames(target: DrgnTarget, tocs: dict[int, str], facts: Facts) -> None:
    records, findings = audit_livepatch_stacks(target, tocs, pids=[facts.pid])
    assert findings == []
    (rec,) = records
    assert (rec.pid, rec.comm, rec.livepatch_sp) == (facts.pid, facts.comm, facts.livepatch_sp)
    assert [f.address for f in rec.frames] == [f.at for f in facts.frames]
    assert all(f.magic_ok for f in rec.frames)
    rk_target_toc = facts.module("rk_target").toc
    assert [(f.r2, f.r2_owner) for f in rec.frames] == [(rk_target_toc, "rk_target")] * 2
    assert [f.r2 for f in facts.frames] == [rk_target_toc] * 2
    assert [f.lr for f in rec.frames] == [f.lr for f in facts.frames]
    # the LRs are where kallsyms puts the frame table's symbol+offset
    thread, work = facts.sym("rk_target_thread", "rk_target"), facts.sym(
        "livepatch_rk_target_work", "rk_lp")
    assert facts.frames[0].lr_symbol == f"rk_target_thread+{facts.frames[0].lr - thread:#x}"
    assert facts.frames[1].lr_symbol == f"livepatch_rk_target_work+{facts.frames[1].lr - work:#x}"
    sym0, sym1 = (f.lr_symbol or "" for f in rec.frames)
    assert sym0.startswith(facts.frames[0].lr_symbol + "/") and sym0.endswith(" [rk_target]")
    assert sym1.startswith(facts.frames[1].lr_symbol + "/") and sym1.endswith(" [rk_lp]")
    # The STACK_END_MAGIC word at task->stack, read independently.
    assert int.from_bytes(target.read(facts.task_stack, 8), "little") == insn.STACK_END_MAGIC


def test_no_other_task_has_frames(target: DrgnTarget, tocs: dict[int, str], facts: Facts) -> None:
    records, findings = audit_livepatch_stacks(target, tocs)
    assert [r.pid for r in records] == [facts.pid]
    assert findings == []
    # Every task was looked at (its STACK_END_MAGIC word too), not just the parked one.
    assert {1, facts.pid} <= {t.pid for t in target.tasks()}


def test_lpstack_empty_task_on_request(target: DrgnTarget, tocs: dict[int, str]) -> None:
    records, findings = audit_livepatch_stacks(target, tocs, pids=[1])
    assert [(r.pid, r.frames) for r in records] == [(1, [])] and findings == []
    with pytest.raises(KlpError, match="no task with pid 99999"):
        audit_livepatch_stacks(target, tocs, pids=[99999])


def test_klp_bt(target: DrgnTarget, tocs: dict[int, str], facts: Facts) -> None:
    frames = [f.at for f in facts.frames]
    handler = facts.sym("livepatch_handler")
    plain = [_name(s.format(f.pc)) if (s := target.symbolize(f.pc)) else None
             for f in target.stack_trace(facts.pid)]
    # README: the plain unwind shows the handler twice and misses both callers.
    assert plain.count("livepatch_handler") == 2
    assert "livepatch_rk_target_work" not in plain and "rk_target_thread" not in plain

    report = klp_backtrace(target, facts.pid, tocs)
    assert report.findings == [] and report.notes == []
    (rec,) = report.tasks or []
    assert rec.backtrace is not None and len(rec.backtrace) == len(plain)
    names = [_name(e.symbol) for e in rec.backtrace]
    assert "livepatch_handler" not in names
    # The callers take the handler's places, innermost handler <-> top frame.
    h1, h2 = (i for i, n in enumerate(plain) if n == "livepatch_handler")
    assert names[h1] == "livepatch_rk_target_work" and names[h2] == "rk_target_thread"
    assert rec.backtrace[h1].from_frame == frames[1]
    assert rec.backtrace[h2].from_frame == frames[0]
    assert rec.backtrace[h1].original_pc == handler + 0x30
    assert sum(e.corrected for e in rec.backtrace) == 2
    # README: drgn's stack_trace ... msleep <- rk_lib_sleep <- livepatch_rk_target_inner <-
    # (handler x2) <- kthread <- ret_from_kernel_thread (7.2: start_kernel_thread), with the
    # callers of the frame table restored: innermost handler <-> last frame pushed.
    callers = iter(f.lr_symbol.split("+")[0] for f in reversed(facts.frames))
    expect = [next(callers) if n == "livepatch_handler" else n for n in facts.drgn_stack_trace]
    tail = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]][-7:]
    assert tail == expect[-7:]
    assert tail[3:5] == ["livepatch_rk_target_work", "rk_target_thread"]
    assert names[0] == "__switch_to" == expect[0]

    text = render_table(report)
    assert re.search(
        r"^#\d+ +livepatch_rk_target_work\+0x30/0x[0-9a-f]+ \[rk_lp\] "
        rf"\({facts.frames[1].lr:#x}\)"
        r"  <- livepatch frame 1 \(was livepatch_handler\+0x30/",
        text,
        re.M,
    )
    assert re.search(r"^#0  __switch_to\+0x[0-9a-f]+/0x[0-9a-f]+ \(0xc0", text, re.M)
    assert f'"from_frame": "{frames[0]:#x}"' in render_json(report)


def test_back_chain_unwinder_on_dump(target: DrgnTarget, facts: Facts) -> None:
    """The pure back-chain unwinder (for gdb) agrees with drgn's unwind of the parked task."""
    task = next(t for t in target.tasks() if t.pid == facts.pid)
    assert task.ksp is not None and task.livepatch_sp == facts.livepatch_sp
    data = target.read(task.stack, task.stack_size)
    chain = unwind_back_chain(data, task.stack, task.ksp)
    assert chain[0][0] == task.ksp
    # chain[0] is _switch's frame at ksp; drgn lists inline frames with repeated pcs.
    trace = target.stack_trace(facts.pid)
    keys = [(f.pc, f.sp) for f in trace]
    drgn_pcs = [pc for i, (pc, sp) in enumerate(keys) if i == 0 or (pc, sp) != keys[i - 1]]
    pcs = [lr for _, lr in chain[1:]]
    assert pcs == drgn_pcs
    assert [f.pc for f in back_chain_stack_trace(target, task)] == pcs
    stack = walk_livepatch_stack(data, task.stack, task.livepatch_sp)
    fixed = correct_backtrace(pcs, stack.frames, facts.sym("livepatch_handler"), None)
    assert [c.pc for c in fixed if c.corrected] == [f.lr for f in reversed(facts.frames)]
