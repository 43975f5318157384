"""Livepatch stacks and klp-bt on the real ppc64le 6.1 dump (README: "Facts read with drgn").

Pid 130 (``rk_target``) is parked in ``livepatch_rk_target_inner`` with two
livepatch frames.  Expected values are the README's: its kallsyms table,
its module table (``.toc`` addresses) and its livepatch frame table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.errors import KlpError
from klpinspect.livepatch import audit_livepatch_stacks, back_chain_stack_trace, klp_backtrace
from klpinspect.ppc64 import insn
from klpinspect.ppc64.lpstack import correct_backtrace, unwind_back_chain, walk_livepatch_stack
from klpinspect.ppc64.toc import module_toc
from klpinspect.report import render_json, render_table

pytestmark = pytest.mark.dump

# README: /proc/kallsyms and the drgn facts.
LIVEPATCH_HANDLER = 0xC00000000006518C
RK_TARGET_THREAD = 0xC008000000F401B8
LIVEPATCH_RK_TARGET_WORK = 0xC008000000F90088
KERNEL_TOC = 0xC000000000BE8000
RK_TARGET_TOC_SECTION = 0xC008000000F60100  # /sys/module/rk_target/sections/.toc
STACK = 0xC0000000037E8000
LIVEPATCH_SP = 0xC0000000037E8038
FRAMES = [0xC0000000037E8008, 0xC0000000037E8020]


@pytest.fixture(scope="module", params=["vmcore_elf", "vmcore_kdump", "vmcore_qemu_elf"])
def target(request: pytest.FixtureRequest, vmlinux_debug: Path) -> Iterator[DrgnTarget]:
    """The same memory as a fixed-up ELF, a kdump-compressed file and QEMU's raw dump."""
    core: Path = request.getfixturevalue(request.param)
    prog, kind = open_program(core=str(core), symbols=[str(vmlinux_debug)])
    yield DrgnTarget(prog, kind)


@pytest.fixture(scope="module")
def tocs(target: DrgnTarget) -> dict[int, str]:
    """Module TOC map from each module's ``.toc`` section (``my_r2()``, 5.x+ rule)."""
    return {
        module_toc(m.toc_section): m.name for m in target.modules() if m.toc_section is not None
    }


def _name(symbol: str | None) -> str | None:
    return None if symbol is None else re.sub(r"\+.*", "", symbol)


def test_fixture_facts_hold(target: DrgnTarget, tocs: dict[int, str]) -> None:
    kernel = target.kernel()
    assert kernel.has_livepatch_sp and kernel.toc == KERNEL_TOC
    assert kernel.livepatch_handler == LIVEPATCH_HANDLER
    # The handler returns at +0x30: the word before it is its bctrl (facts §8.5).
    assert insn.words(target.read(LIVEPATCH_HANDLER + 0x2C, 4)) == (insn.BCTRL,)
    assert tocs[(RK_TARGET_TOC_SECTION & ~0xFF) + 0x8000] == "rk_target"
    assert len(tocs) == 40


def test_pid_130_frames(target: DrgnTarget, tocs: dict[int, str]) -> None:
    records, findings = audit_livepatch_stacks(target, tocs, pids=[130])
    assert findings == []
    (rec,) = records
    assert (rec.pid, rec.comm, rec.livepatch_sp) == (130, "rk_target", LIVEPATCH_SP)
    assert [f.address for f in rec.frames] == FRAMES
    assert all(f.magic_ok for f in rec.frames)
    assert [(f.r2, f.r2_owner) for f in rec.frames] == [(0xC008000000F68100, "rk_target")] * 2
    assert [f.lr for f in rec.frames] == [RK_TARGET_THREAD + 0x2C, LIVEPATCH_RK_TARGET_WORK + 0x30]
    sym0, sym1 = (f.lr_symbol or "" for f in rec.frames)
    assert sym0.startswith("rk_target_thread+0x2c/") and sym0.endswith(" [rk_target]")
    assert sym1.startswith("livepatch_rk_target_work+0x30/") and sym1.endswith(" [rk_lp]")
    # The STACK_END_MAGIC word at task->stack, read independently.
    assert int.from_bytes(target.read(STACK, 8), "little") == insn.STACK_END_MAGIC


def test_no_other_task_has_frames(target: DrgnTarget, tocs: dict[int, str]) -> None:
    records, findings = audit_livepatch_stacks(target, tocs)
    assert [r.pid for r in records] == [130]
    assert findings == []
    # Every task was looked at (its STACK_END_MAGIC word too), not just pid 130.
    assert {1, 130} <= {t.pid for t in target.tasks()}


def test_lpstack_empty_task_on_request(target: DrgnTarget, tocs: dict[int, str]) -> None:
    records, findings = audit_livepatch_stacks(target, tocs, pids=[1])
    assert [(r.pid, r.frames) for r in records] == [(1, [])] and findings == []
    with pytest.raises(KlpError, match="no task with pid 99999"):
        audit_livepatch_stacks(target, tocs, pids=[99999])


def test_klp_bt_130(target: DrgnTarget, tocs: dict[int, str]) -> None:
    plain = [_name(s.format(f.pc)) if (s := target.symbolize(f.pc)) else None
             for f in target.stack_trace(130)]
    # README: the plain unwind shows the handler twice and misses both callers.
    assert plain.count("livepatch_handler") == 2
    assert "livepatch_rk_target_work" not in plain and "rk_target_thread" not in plain

    report = klp_backtrace(target, 130, tocs)
    assert report.findings == [] and report.notes == []
    (rec,) = report.tasks or []
    assert rec.backtrace is not None and len(rec.backtrace) == len(plain)
    names = [_name(e.symbol) for e in rec.backtrace]
    assert "livepatch_handler" not in names
    # The callers take the handler's places, innermost handler <-> top frame.
    h1, h2 = (i for i, n in enumerate(plain) if n == "livepatch_handler")
    assert names[h1] == "livepatch_rk_target_work" and names[h2] == "rk_target_thread"
    assert rec.backtrace[h1].from_frame == FRAMES[1]
    assert rec.backtrace[h2].from_frame == FRAMES[0]
    assert rec.backtrace[h1].original_pc == LIVEPATCH_HANDLER + 0x30
    assert sum(e.corrected for e in rec.backtrace) == 2
    # README: ... msleep <- rk_lib_sleep <- livepatch_rk_target_inner <- (handler x2) <-
    # kthread <- ret_from_kernel_thread, with the callers restored.
    tail = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]][-7:]
    assert tail == [
        "msleep",
        "rk_lib_sleep",
        "livepatch_rk_target_inner",
        "livepatch_rk_target_work",
        "rk_target_thread",
        "kthread",
        "ret_from_kernel_thread",
    ]
    assert names[0] == "__switch_to"

    text = render_table(report)
    assert re.search(
        r"^#\d+ +livepatch_rk_target_work\+0x30/0x[0-9a-f]+ \[rk_lp\] \(0xc008000000f900b8\)"
        r"  <- livepatch frame 1 \(was livepatch_handler\+0x30/",
        text,
        re.M,
    )
    assert re.search(r"^#0  __switch_to\+0x[0-9a-f]+/0x[0-9a-f]+ \(0xc0", text, re.M)
    assert '"from_frame": "0xc0000000037e8008"' in render_json(report)


def test_back_chain_unwinder_on_dump(target: DrgnTarget) -> None:
    """The pure back-chain unwinder (for gdb) agrees with drgn's unwind of pid 130."""
    task = next(t for t in target.tasks() if t.pid == 130)
    assert task.ksp is not None and task.livepatch_sp == LIVEPATCH_SP
    data = target.read(task.stack, task.stack_size)
    chain = unwind_back_chain(data, task.stack, task.ksp)
    assert chain[0][0] == task.ksp
    # chain[0] is _switch's frame at ksp; drgn lists inline frames with repeated pcs.
    trace = target.stack_trace(130)
    keys = [(f.pc, f.sp) for f in trace]
    drgn_pcs = [pc for i, (pc, sp) in enumerate(keys) if i == 0 or (pc, sp) != keys[i - 1]]
    pcs = [lr for _, lr in chain[1:]]
    assert pcs == drgn_pcs
    assert [f.pc for f in back_chain_stack_trace(target, task)] == pcs
    stack = walk_livepatch_stack(data, task.stack, task.livepatch_sp)
    fixed = correct_backtrace(pcs, stack.frames, LIVEPATCH_HANDLER, None)
    assert [c.pc for c in fixed if c.corrected] == [
        LIVEPATCH_RK_TARGET_WORK + 0x30,
        RK_TARGET_THREAD + 0x2C,
    ]
