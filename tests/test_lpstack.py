"""Livepatch stacks, the 2016 mini frame, the back-chain unwinder and klp-bt on synthetic data.

Layouts follow facts §8.3/§8.4 (24-byte frames {r2, LR, STACK_END_MAGIC}
from ``task->stack + 8``, or above ``struct thread_info`` on old kernels) and
§9 (the 32-byte ``klp_return_helper`` mini frame).  The mini frame's
instruction words come from the real assembler (tests/asm/).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import SyntheticTarget

from klpinspect.errors import KlpError
from klpinspect.livepatch import (
    MAX_FRAME_FINDINGS,
    UNSUPPORTED_MESSAGE,
    audit_livepatch_stacks,
    back_chain_stack_trace,
    klp_backtrace,
    toc_owners,
)
from klpinspect.ppc64 import insn
from klpinspect.ppc64.lpstack import (
    LPSTACK_MISALIGNED,
    LPSTACK_NO_START_MARKER,
    LPSTACK_OK,
    LPSTACK_OUT_OF_BOUNDS,
    LivepatchFrame,
    correct_backtrace,
    find_klp_return_helper_frames,
    is_livepatch_handler_return,
    klp_return_helper_insns,
    livepatch_stack_start,
    match_klp_return_helper,
    parse_klp_return_helper_frame,
    unwind_back_chain,
    walk_livepatch_stack,
)
from klpinspect.report import Report, Severity, render_json, render_table
from klpinspect.target import KernelInfo, StackFrame, SymbolInfo, TaskInfo

ASM = Path(__file__).resolve().parent / "asm"
MAGIC = insn.STACK_END_MAGIC
THREAD_SIZE = 0x4000

KTOC = 0xC000000000BE8000
HANDLER = 0xC00000000006518C
MOD_A_TOC = 0xC008000000F68100
MOD_B_TOC = 0xC008000000FB8000


# -- a synthetic target ----------------------------------------------------------


def lp_target(
    kernel: KernelInfo,
    tasks: Sequence[TaskInfo] = (),
    memory: dict[int, bytes] | None = None,
    symbols: Iterable[SymbolInfo] = (),
    traces: dict[int, list[int]] | None = None,
) -> SyntheticTarget:
    """The shared synthetic target (tests/synthetic.py) with tasks, stacks and unwinds."""
    return SyntheticTarget(
        kernel_info=kernel,
        regions=dict(memory or {}),
        task_list=list(tasks),
        symbols=list(symbols),
        traces={pid: [StackFrame(pc) for pc in pcs] for pid, pcs in (traces or {}).items()},
    )


def lp_kernel(**kw: object) -> KernelInfo:
    args: dict[str, object] = dict(
        release="6.1.192", toc=KTOC, livepatch_handler=HANDLER, has_livepatch_sp=True
    )
    args.update(kw)
    return KernelInfo(**args)  # type: ignore[arg-type]


def build_stack(
    base: int,
    frames: Sequence[tuple[int, int, int]],
    *,
    start_off: int = 8,
    size: int = THREAD_SIZE,
    marker: int = MAGIC,
    byteorder: str = "little",
) -> tuple[bytes, int]:
    """A stack with ``frames`` (r2, lr, magic) pushed from ``base + start_off``.

    :returns: the bytes and the resulting ``livepatch_sp``
    """
    fmt = "<" if byteorder == "little" else ">"
    buf = bytearray(size)
    struct.pack_into(fmt + "Q", buf, start_off - 8, marker)
    for i, fr in enumerate(frames):
        struct.pack_into(fmt + "3Q", buf, start_off + 24 * i, *fr)
    return bytes(buf), base + start_off + 24 * len(frames)


# -- the walker ------------------------------------------------------------------


def test_one_frame_tv8() -> None:
    """Facts TV8: task->stack 0xc000000012340000, frame at +8, livepatch_sp at +32."""
    base = 0xC000000012340000
    data, sp = build_stack(base, [(KTOC, 0xC000000000123450, MAGIC)])
    assert sp == base + 32
    # The marker doubleword as stored (TV8): 9d 6e ac 57 00 00 00 00.
    assert data[:8] == bytes.fromhex("9d6eac5700000000")
    st_ = walk_livepatch_stack(data, base, sp)
    assert st_.status == LPSTACK_OK and st_.start == base + 8
    assert st_.start_marker_ok is True
    assert st_.frames == (LivepatchFrame(0, base + 8, KTOC, 0xC000000000123450, MAGIC),)
    assert st_.frames[0].magic_ok


def test_empty_stack() -> None:
    base = 0xC000000012340000
    data, sp = build_stack(base, [])
    st_ = walk_livepatch_stack(data[:8], base, sp, stack_size=THREAD_SIZE)
    assert st_.status == LPSTACK_OK and st_.frames == () and st_.depth == 0


def test_nested_frames_push_order() -> None:
    base = 0xC000000020000000
    frames = [(MOD_A_TOC + i, 0xC008000000F40100 + 0x10 * i, MAGIC) for i in range(5)]
    data, sp = build_stack(base, frames)
    st_ = walk_livepatch_stack(data, base, sp)
    assert st_.status == LPSTACK_OK and st_.depth == 5
    assert [f.index for f in st_.frames] == [0, 1, 2, 3, 4]
    assert [(f.r2, f.lr, f.magic) for f in st_.frames] == frames
    # The top frame sits just below livepatch_sp.
    assert st_.frames[-1].address == sp - 24


def test_corrupted_marker() -> None:
    base = 0xC000000020000000
    frames = [(KTOC, 0x1000, MAGIC), (KTOC, 0x2000, 0xDEADBEEF), (KTOC, 0x3000, MAGIC << 32)]
    data, sp = build_stack(base, frames)
    st_ = walk_livepatch_stack(data, base, sp)
    assert [f.magic_ok for f in st_.frames] == [True, False, False]
    assert [f.index for f in st_.bad_frames] == [1, 2]


@pytest.mark.parametrize(
    "sp_off",
    [0, 4, THREAD_SIZE + 8, -0x10000, 1 << 40],
    ids=["base", "in-marker", "above", "below", "wild"],
)
def test_out_of_bounds(sp_off: int) -> None:
    base = 0xC000000020000000
    data, _ = build_stack(base, [(KTOC, 0x1000, MAGIC)])
    st_ = walk_livepatch_stack(data, base, base + sp_off)
    assert st_.status == LPSTACK_OUT_OF_BOUNDS and st_.frames == ()
    assert st_.start_marker_ok is True


def test_at_end_of_stack_is_in_bounds() -> None:
    base = 0xC000000020000000
    count = (THREAD_SIZE - 8) // 24
    data, sp = build_stack(base, [(KTOC, i, MAGIC) for i in range(count)])
    st_ = walk_livepatch_stack(data, base, base + 8 + 24 * count)
    assert st_.status == LPSTACK_OK and st_.depth == count and sp <= base + THREAD_SIZE


def test_misaligned() -> None:
    base = 0xC000000020000000
    data, sp = build_stack(base, [(KTOC, 0x1000, MAGIC), (KTOC, 0x2000, MAGIC)])
    st_ = walk_livepatch_stack(data, base, sp - 8)
    assert st_.status == LPSTACK_MISALIGNED
    assert [f.lr for f in st_.frames] == [0x1000]


def test_start_marker_missing() -> None:
    base = 0xC000000020000000
    data, sp = build_stack(base, [(KTOC, 0x1000, MAGIC)], marker=0)
    st_ = walk_livepatch_stack(data, base, sp)
    assert st_.status == LPSTACK_NO_START_MARKER and st_.start_marker_ok is False
    assert st_.depth == 1


def test_old_thread_info_layout() -> None:
    """4.6 .. 4.x: livepatch_sp starts at (ti + 1) + 1 word, ti at the stack base."""
    base = 0xC00000003FFF0000
    ti_size = 0x60
    assert livepatch_stack_start(base, thread_info_in_task=False, thread_info_size=ti_size) == (
        base + ti_size + 8
    )
    frames = [(KTOC, 0x1000, MAGIC), (MOD_A_TOC, 0x2000, MAGIC)]
    data, sp = build_stack(base, frames, start_off=ti_size + 8)
    st_ = walk_livepatch_stack(data, base, sp, thread_info_in_task=False, thread_info_size=ti_size)
    assert st_.status == LPSTACK_OK and st_.start == base + ti_size + 8
    assert [(f.address, f.lr) for f in st_.frames] == [(base + 0x68, 0x1000), (base + 0x80, 0x2000)]
    # Read as a THREAD_INFO_IN_TASK stack: no STACK_END_MAGIC at the base.
    assert walk_livepatch_stack(data, base, sp).status == LPSTACK_NO_START_MARKER


def test_big_endian() -> None:
    base = 0xC000000020000000
    data, sp = build_stack(base, [(KTOC, 0x1234, MAGIC)], byteorder="big")
    st_ = walk_livepatch_stack(data, base, sp, byteorder="big")
    assert st_.status == LPSTACK_OK and st_.frames[0].lr == 0x1234 and st_.frames[0].magic_ok
    assert not walk_livepatch_stack(data, base, sp).frames[0].magic_ok


def test_short_bytes_rejected() -> None:
    base = 0xC000000020000000
    data, sp = build_stack(base, [(KTOC, 0x1000, MAGIC)])
    with pytest.raises(ValueError, match="below livepatch_sp"):
        walk_livepatch_stack(data[:16], base, sp, stack_size=THREAD_SIZE)


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
        max_size=40,
    ),
    old=st.booleans(),
)
def test_walk_roundtrip(frames: list[tuple[int, int, int]], old: bool) -> None:
    base = 0xC000000030000000
    ti = 0x48 if old else 0
    data, sp = build_stack(base, frames, start_off=ti + 8)
    st_ = walk_livepatch_stack(data, base, sp, thread_info_in_task=not old, thread_info_size=ti)
    assert [(f.r2, f.lr, f.magic) for f in st_.frames] == frames
    assert [f.magic_ok for f in st_.frames] == [m == MAGIC for _, _, m in frames]


# -- backtrace correction --------------------------------------------------------

A_THREAD = 0xC008000000F401E4  # caller of the first patched call
C0_RET = 0xC008000000F900B8  # return into the first replacement function
H30 = HANDLER + 0x30


def two_frames() -> list[LivepatchFrame]:
    return [
        LivepatchFrame(0, 0xC0000000037E8008, MOD_A_TOC, A_THREAD, MAGIC),
        LivepatchFrame(1, 0xC0000000037E8020, MOD_A_TOC, C0_RET, MAGIC),
    ]


def test_correct_backtrace_lifo() -> None:
    pcs = [0xC000000000010000, 0xC008000000F90044, H30, H30, 0xC000000000020000]
    out = correct_backtrace(pcs, two_frames(), HANDLER, 0x64)
    assert [c.pc for c in out] == [pcs[0], pcs[1], C0_RET, A_THREAD, pcs[4]]
    assert [c.corrected for c in out] == [False, False, True, True, False]
    # Innermost handler return <-> top frame.
    assert [None if c.from_frame is None else c.from_frame.index for c in out] == [
        None, None, 1, 0, None
    ]
    assert out[2].original_pc == H30 and out[0].original_pc == pcs[0]


def test_correct_backtrace_more_handler_returns_than_frames() -> None:
    pcs = [0x10, H30, H30, H30, 0x20]
    out = correct_backtrace(pcs, two_frames(), HANDLER, 0x64)
    assert [c.corrected for c in out] == [False, True, True, False, False]
    assert out[3].pc == H30 and out[3].note is not None and "no livepatch frame left" in out[3].note


def test_correct_backtrace_fewer_handler_returns() -> None:
    """No handler return at all: nothing corrected, nothing invented."""
    pcs = [0x10, 0x20, 0x30]
    out = correct_backtrace(pcs, two_frames(), HANDLER, 0x64)
    assert [c.pc for c in out] == pcs and not any(c.corrected for c in out)


def test_correct_backtrace_leaf_patched_function() -> None:
    """A leaf replacement never stores LR: its caller's slot still has the real return."""
    pcs = [0xC008000000F90010, C0_RET, H30, 0x40]
    out = correct_backtrace(pcs, two_frames(), HANDLER, 0x64)
    assert [c.pc for c in out] == [pcs[0], C0_RET, A_THREAD, 0x40]
    assert out[1].from_frame is not None and out[1].from_frame.index == 1 and not out[1].corrected
    assert out[2].corrected and out[2].from_frame is not None and out[2].from_frame.index == 0


def test_handler_offsets_without_size() -> None:
    assert is_livepatch_handler_return(HANDLER + 0x30, HANDLER, None)
    assert is_livepatch_handler_return(HANDLER + 0x38, HANDLER, None)  # 4.6 .. ~4.12
    assert not is_livepatch_handler_return(HANDLER + 0x34, HANDLER, None)
    assert is_livepatch_handler_return(HANDLER + 0x34, HANDLER, 0x64)
    assert not is_livepatch_handler_return(HANDLER + 0x64, HANDLER, 0x64)
    out = correct_backtrace([HANDLER + 0x38], two_frames(), HANDLER, None)
    assert out[0].pc == C0_RET


@settings(max_examples=80, deadline=None)
@given(
    callers=st.lists(
        st.tuples(st.integers(0x1000, 0xFFFFFF), st.booleans()), min_size=1, max_size=30
    )
)
def test_correction_restores_true_trace(callers: list[tuple[int, bool]]) -> None:
    """Hide the callers of patched calls behind handler returns; correction brings them back."""
    true_pcs = [pc << 4 for pc, _ in callers]
    patched = [p for p in callers if p[1]]
    # Outermost patched call pushed first.
    frames = [
        LivepatchFrame(k, 0x100 + 24 * k, KTOC, pc << 4, MAGIC)
        for k, (pc, _) in enumerate(reversed(patched))
    ]
    seen = [H30 if hidden else pc << 4 for pc, hidden in callers]
    out = correct_backtrace(seen, frames, HANDLER, 0x64)
    assert [c.pc for c in out] == true_pcs
    assert sum(c.corrected for c in out) == len(patched)


# -- back chain and the 2016 mini frame ----------------------------------------


def assemble(source: Path, tmp_path: Path) -> tuple[bytes, dict[str, int]]:
    """``.text`` bytes and symbol offsets of ``source``, from the real assembler."""
    obj = tmp_path / (source.stem + ".o")
    raw = tmp_path / (source.stem + ".bin")
    subprocess.run(["powerpc64le-linux-gnu-as", "-o", str(obj), str(source)], check=True)
    subprocess.run(
        ["powerpc64le-linux-gnu-objcopy", "-O", "binary", "-j", ".text", str(obj), str(raw)],
        check=True,
    )
    nm = subprocess.run(
        ["powerpc64le-linux-gnu-nm", str(obj)], check=True, capture_output=True, text=True
    ).stdout
    syms = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "Tt":
            syms[parts[2]] = int(parts[0], 16)
    return raw.read_bytes(), syms


def test_klp_return_helper_code(tmp_path: Path) -> None:
    code, syms = assemble(ASM / "lpstack_klp_return_helper.s", tmp_path)
    helper = code[syms["klp_return_helper"] :]
    assert insn.words(helper[:20]) == klp_return_helper_insns()
    assert match_klp_return_helper(helper)
    assert not match_klp_return_helper(code[syms["ftrace_caller_mini_frame"] :])


def test_mini_frame_layout_from_assembled_ftrace_caller(tmp_path: Path) -> None:
    """The proposal's ftrace_caller opens 32 bytes, saves r2 at 24 and &klp_return_helper at 16."""
    code, syms = assemble(ASM / "lpstack_klp_return_helper.s", tmp_path)
    off = syms["ftrace_caller_mini_frame"]
    w = insn.words(code[off : off + 32])
    stdu, std_r2, bl, mflr, addi, std_r12 = w[:6]
    assert insn.opcode(stdu) == 62 and stdu & 3 == 1 and insn.ds_field(stdu) == -32
    assert insn.rt_field(std_r2) == 2 and insn.ds_field(std_r2) == 24
    assert insn.is_bl(bl) and insn.branch_target(bl, off + 8) == off + 12
    assert mflr == 0x7D8802A6  # mflr r12
    # r12 = address of the mflr (bl's return) + addi immediate = &klp_return_helper
    assert off + 12 + insn.d_field(addi) == syms["klp_return_helper"]
    assert insn.rt_field(std_r12) == 12 and insn.ds_field(std_r12) == 16


def build_chain(base: int, frames: Sequence[tuple[int, int, int]]) -> bytes:
    """A stack of back-chained frames: (offset, back chain, lr save)."""
    buf = bytearray(THREAD_SIZE)
    for off, back, lr in frames:
        struct.pack_into("<Q", buf, off, back)
        struct.pack_into("<Q", buf, off + 16, lr)
    return bytes(buf)


def test_unwind_back_chain() -> None:
    base = 0xC000000040000000
    data = build_chain(
        base,
        [(0x3E00, base + 0x3E80, 0x111), (0x3E80, base + 0x3F00, 0x222), (0x3F00, 0, 0x333)],
    )
    assert unwind_back_chain(data, base, base + 0x3E00) == [
        (base + 0x3E00, 0x111),
        (base + 0x3E80, 0x222),
        (base + 0x3F00, 0x333),
    ]
    assert unwind_back_chain(data, base, base + 0x3E08) == []  # misaligned sp
    assert unwind_back_chain(data, base, base + THREAD_SIZE) == []  # outside
    assert len(unwind_back_chain(data, base, base + 0x3E00, max_frames=2)) == 2


def test_unwind_back_chain_stops_on_loops_and_escapes() -> None:
    base = 0xC000000040000000
    looped = build_chain(base, [(0x3E00, base + 0x3E80, 1), (0x3E80, base + 0x3E00, 2)])
    assert [lr for _, lr in unwind_back_chain(looped, base, base + 0x3E00)] == [1, 2]
    escaped = build_chain(base, [(0x3E00, base + 0x10000, 1)])
    assert [lr for _, lr in unwind_back_chain(escaped, base, base + 0x3E00)] == [1]


def test_klp_return_helper_frame_in_chain() -> None:
    """C's frame -> mini frame (LR save = klp_return_helper) -> A's frame (real LR)."""
    base = 0xC000000040000000
    helper = 0xC000000000009000
    mini = 0x3E80
    buf = bytearray(build_chain(
        base,
        [(0x3E00, base + mini, 0xC008000000F90040), (mini, base + mini + 32, helper),
         (mini + 32, base + 0x3F00, 0xC008000000F401E4), (0x3F00, 0, 0xC000000000001000)],
    ))
    struct.pack_into("<Q", buf, mini + 24, MOD_A_TOC)
    data = bytes(buf)
    chain = unwind_back_chain(data, base, base + 0x3E00)
    assert [lr for _, lr in chain] == [
        0xC008000000F90040, helper, 0xC008000000F401E4, 0xC000000000001000
    ]
    found = find_klp_return_helper_frames(data, base, chain, helper)
    assert [pos for pos, _ in found] == [1]
    fr = found[0][1]
    assert fr.address == base + mini and fr.chain_ok and fr.lr_save == helper
    assert fr.toc_save == MOD_A_TOC and fr.cr_save == 0
    assert fr.real_lr == 0xC008000000F401E4  # 16(A's frame)


def test_parse_klp_return_helper_frame_short() -> None:
    frame = parse_klp_return_helper_frame(struct.pack("<4Q", 0x2000, 0, 0x9000, KTOC), 0x1000)
    assert not frame.chain_ok and frame.real_lr is None and frame.toc_save == KTOC
    with pytest.raises(ValueError, match="32 bytes"):
        parse_klp_return_helper_frame(b"\0" * 24, 0x1000)


# -- the glue over a Target ------------------------------------------------------

SYMS = [
    SymbolInfo("livepatch_handler", HANDLER, 0x64, "vmlinux"),
    SymbolInfo("kthread", 0xC000000000180000, 0x120, "vmlinux"),
    SymbolInfo("rk_target_thread", 0xC008000000F401B8, 0x80, "rk_target"),
    SymbolInfo("livepatch_rk_target_work", 0xC008000000F90088, 0x60, "rk_lp"),
    SymbolInfo("livepatch_rk_target_inner", 0xC008000000F90008, 0x80, "rk_lp"),
]
MODULE_TOCS = {MOD_A_TOC: "rk_target", MOD_B_TOC: "rk_lp"}


def task_world(
    specs: Sequence[tuple[int, Sequence[tuple[int, int, int]]]], **task_kw: object
) -> tuple[list[TaskInfo], dict[int, bytes]]:
    tasks, memory = [], {}
    for n, (pid, frames) in enumerate(specs):
        base = 0xC000000050000000 + n * THREAD_SIZE
        data, sp = build_stack(base, frames)
        memory[base] = data
        kw: dict[str, object] = dict(livepatch_sp=sp)
        kw.update(task_kw)
        tasks.append(TaskInfo(pid, f"t{pid}", base, THREAD_SIZE, **kw))  # type: ignore[arg-type]
    return tasks, memory


def test_audit_records_and_findings() -> None:
    tasks, memory = task_world(
        [
            (1, []),
            (130, [(MOD_A_TOC, A_THREAD, MAGIC), (MOD_A_TOC, C0_RET, MAGIC)]),
            (7, [(KTOC, A_THREAD, MAGIC), (0x1234, C0_RET, 0)]),
        ]
    )
    t = lp_target(lp_kernel(), tasks, memory, SYMS)
    records, findings = audit_livepatch_stacks(t, MODULE_TOCS)
    assert [r.pid for r in records] == [130, 7]  # the empty stack is left out
    r130 = records[0]
    assert r130.livepatch_sp == tasks[1].stack + 8 + 48
    assert [(f.address, f.r2_owner, f.lr_symbol, f.magic_ok) for f in r130.frames] == [
        (tasks[1].stack + 8, "rk_target", "rk_target_thread+0x2c/0x80 [rk_target]", True),
        (tasks[1].stack + 32, "rk_target", "livepatch_rk_target_work+0x30/0x60 [rk_lp]", True),
    ]
    assert [f.r2_owner for f in records[1].frames] == ["vmlinux", None]
    codes = [(f.code, f.pid, f.address) for f in findings]
    assert codes == [
        ("LPSTACK_BAD_MAGIC", 7, tasks[2].stack + 32),
        ("LPSTACK_R2_UNKNOWN", 7, tasks[2].stack + 32),
    ]
    # One read per task, from the stack base up to livepatch_sp.
    assert t.reads == [
        (task.stack, task.livepatch_sp - task.stack) for task in tasks  # type: ignore[operator]
    ]
    js = json.loads(render_json_tasks(records))
    assert js[0]["frames"][0] == {
        "address": hex(tasks[1].stack + 8),
        "r2": hex(MOD_A_TOC),
        "r2_owner": "rk_target",
        "lr": hex(A_THREAD),
        "lr_symbol": "rk_target_thread+0x2c/0x80 [rk_target]",
        "magic_ok": True,
    }


def render_json_tasks(records: Sequence[object]) -> str:
    return json.dumps(Report(tasks=list(records)).to_json()["tasks"])  # type: ignore[arg-type]


def test_audit_pids_and_missing_pid() -> None:
    tasks, memory = task_world([(1, []), (2, [(KTOC, 0x10, MAGIC)]), (3, [])])
    t = lp_target(lp_kernel(), tasks, memory, SYMS)
    records, findings = audit_livepatch_stacks(t, MODULE_TOCS, pids=[1, 2])
    assert [(r.pid, len(r.frames)) for r in records] == [(1, 0), (2, 1)] and findings == []
    with pytest.raises(KlpError, match="no task with pid 99"):
        audit_livepatch_stacks(t, MODULE_TOCS, pids=[1, 99])


def test_audit_out_of_bounds_and_misaligned() -> None:
    tasks, memory = task_world([(1, [(KTOC, 0x10, MAGIC)]), (2, [(KTOC, 0x10, MAGIC)])])
    bad = [
        TaskInfo(1, "t1", tasks[0].stack, THREAD_SIZE, tasks[0].stack + THREAD_SIZE + 24),
        TaskInfo(2, "t2", tasks[1].stack, THREAD_SIZE, tasks[1].stack + 8 + 24 + 16),
    ]
    t = lp_target(lp_kernel(), bad, memory, SYMS)
    records, findings = audit_livepatch_stacks(t, MODULE_TOCS)
    assert [(f.code, f.pid, f.address) for f in findings] == [
        ("LPSTACK_OUT_OF_BOUNDS", 1, bad[0].livepatch_sp),
        ("LPSTACK_OUT_OF_BOUNDS", 2, bad[1].livepatch_sp),
    ]
    assert "outside" in findings[0].message and "24-byte" in findings[1].message
    assert [(r.pid, len(r.frames)) for r in records] == [(1, 0), (2, 1)]
    text = render_table(Report(tasks=records, sections=("tasks",)))
    assert re.search(rf"^ +1 +t1 +{bad[0].livepatch_sp:#x} +- +\(empty\)$", text, re.M)
    # Out of bounds: only the word below the first slot is read, not the wild range.
    assert t.reads[0] == (bad[0].stack, 8)


def test_audit_deep_wild_livepatch_sp_summarized() -> None:
    """livepatch_sp far up the stack: 100 garbage frames give 8 findings and one summary."""
    base = 0xC000000050000000
    data, _ = build_stack(base, [])
    task = TaskInfo(6, "t6", base, THREAD_SIZE, livepatch_sp=base + 8 + 24 * 100)
    records, findings = audit_livepatch_stacks(
        lp_target(lp_kernel(), [task], {base: data}), MODULE_TOCS
    )
    assert len(records[0].frames) == 100
    assert len(findings) == MAX_FRAME_FINDINGS + 1
    assert findings[-1].code == "LPSTACK_BAD_MAGIC" and "192 more" in findings[-1].message
    assert findings[-1].address == base + 8 + 24 * 4


def test_audit_stack_overrun_marker() -> None:
    base = 0xC000000050000000
    data, sp = build_stack(base, [], marker=0x4141414141414141)
    task = TaskInfo(5, "t5", base, THREAD_SIZE, livepatch_sp=sp)
    t = lp_target(lp_kernel(), [task], {base: data})
    records, findings = audit_livepatch_stacks(t, MODULE_TOCS)
    # the word below the first slot is end_of_stack(): the kernel's own check
    assert [(f.code, f.pid, f.address) for f in findings] == [("TASK_STACK_CORRUPT", 5, base)]
    assert "0x4141414141414141" in findings[0].message and "t5" in findings[0].message
    assert [r.pid for r in records] == [5]


def test_audit_old_layout() -> None:
    base = 0xC000000050000000
    data, sp = build_stack(base, [(KTOC, 0x10, MAGIC)], start_off=0x68)
    task = TaskInfo(
        9, "t9", base, THREAD_SIZE, sp, thread_info_in_task=False, thread_info_size=0x60
    )
    target = lp_target(lp_kernel(), [task], {base: data})
    records, findings = audit_livepatch_stacks(target, {})
    assert findings == [] and [f.address for f in records[0].frames] == [base + 0x68]


def test_audit_unreadable_stack() -> None:
    tasks, _ = task_world([(4, [(KTOC, 0x10, MAGIC)])])
    records, findings = audit_livepatch_stacks(lp_target(lp_kernel(), tasks, {}), MODULE_TOCS)
    assert records == [] and [(f.code, f.pid) for f in findings] == [("MEMORY_UNREADABLE", 4)]


def test_audit_without_livepatch() -> None:
    tasks, memory = task_world([(1, [])], livepatch_sp=None)
    t = lp_target(lp_kernel(has_livepatch_sp=False), tasks, memory)
    records, findings = audit_livepatch_stacks(t, MODULE_TOCS)
    assert records == [] and len(findings) == 1
    f = findings[0]
    assert f.code == "LIVEPATCH_UNSUPPORTED" and f.level is Severity.INFO
    # only the end_of_stack word of each task is read (STACK_END_MAGIC)
    assert f.message == UNSUPPORTED_MESSAGE and t.reads == [(tasks[0].stack, 8)]


def test_stack_end_magic_without_livepatch() -> None:
    """STACK_END_MAGIC is checked for every task, livepatch built in or not, on
    both layouts (end_of_stack is above struct thread_info on old kernels)."""
    base = 0xC000000050000000
    good, _ = build_stack(base, [])
    bad, _ = build_stack(base + THREAD_SIZE, [], marker=0)
    old, _ = build_stack(base + 2 * THREAD_SIZE, [], start_off=0x68, marker=0xDEAD)
    tasks = [
        TaskInfo(1, "ok", base, THREAD_SIZE),
        TaskInfo(2, "bad", base + THREAD_SIZE, THREAD_SIZE),
        TaskInfo(3, "old", base + 2 * THREAD_SIZE, THREAD_SIZE, thread_info_in_task=False,
                 thread_info_size=0x60),
        TaskInfo(4, "exited", 0, THREAD_SIZE),
    ]  # fmt: skip
    memory = {base: good, base + THREAD_SIZE: bad, base + 2 * THREAD_SIZE: old}
    t = lp_target(lp_kernel(has_livepatch_sp=False), tasks, memory)
    _, findings = audit_livepatch_stacks(t, MODULE_TOCS)
    assert [(f.code, f.pid, f.address) for f in findings] == [
        ("LIVEPATCH_UNSUPPORTED", None, None),
        ("TASK_STACK_CORRUPT", 2, base + THREAD_SIZE),
        ("TASK_STACK_CORRUPT", 3, base + 2 * THREAD_SIZE + 0x60),
    ]
    assert all(f.level is Severity.ERROR for f in findings[1:])
    # unreadable end of stack: a MEMORY_UNREADABLE warning, not a crash
    t = lp_target(lp_kernel(has_livepatch_sp=False), tasks[:1], {})
    _, findings = audit_livepatch_stacks(t, MODULE_TOCS)
    assert [(f.code, f.pid) for f in findings][1:] == [("MEMORY_UNREADABLE", 1)]


def test_livepatch_stack_grows_into_kernel_stack() -> None:
    """livepatch_sp past (or within a minimum frame of) the saved ksp: LPSTACK_OVERFLOW,
    naming both addresses; a ksp outside the stack is no evidence."""
    frames = [(KTOC, A_THREAD, MAGIC)] * 3
    tasks, memory = task_world([(1, frames), (2, frames), (3, frames), (4, frames)])
    sp = [t.livepatch_sp for t in tasks]
    assert all(s is not None for s in sp)
    with_ksp = [
        TaskInfo(1, "past", tasks[0].stack, THREAD_SIZE, sp[0], ksp=sp[0] - 16),  # type: ignore[operator]
        TaskInfo(2, "near", tasks[1].stack, THREAD_SIZE, sp[1], ksp=sp[1] + 64),  # type: ignore[operator]
        TaskInfo(3, "far", tasks[2].stack, THREAD_SIZE, sp[2], ksp=sp[2] + 112),  # type: ignore[operator]
        TaskInfo(4, "wild", tasks[3].stack, THREAD_SIZE, sp[3], ksp=0x1000),
    ]  # fmt: skip
    records, findings = audit_livepatch_stacks(
        lp_target(lp_kernel(), with_ksp, memory, SYMS), MODULE_TOCS
    )
    assert [(f.code, f.pid, f.address) for f in findings] == [
        ("LPSTACK_OVERFLOW", 1, sp[0]),
        ("LPSTACK_OVERFLOW", 2, sp[1]),
    ]
    assert "past" in findings[0].message and "within 64 bytes" in findings[1].message
    for f, task in zip(findings, with_ksp, strict=False):
        assert f"{task.livepatch_sp:#x}" in f.message and f"{task.ksp:#x}" in f.message
        assert f.level is Severity.ERROR


def test_toc_owners() -> None:
    assert toc_owners(lp_kernel(), {MOD_A_TOC: "rk_target"}) == {
        MOD_A_TOC: "rk_target",
        KTOC: "vmlinux",
    }


# -- klp-bt over a Target --------------------------------------------------------


def bt_world(trace: list[int]) -> SyntheticTarget:
    tasks, memory = task_world([(130, [(MOD_A_TOC, A_THREAD, MAGIC), (MOD_A_TOC, C0_RET, MAGIC)])])
    return lp_target(lp_kernel(), tasks, memory, SYMS, {130: trace})


INNER = 0xC008000000F9004C  # livepatch_rk_target_inner+0x44
KTHREAD = 0xC000000000180118


def test_klp_backtrace() -> None:
    t = bt_world([INNER, H30, H30, KTHREAD])
    report = klp_backtrace(t, 130, MODULE_TOCS)
    assert report.sections == ("backtrace",) and report.findings == [] and report.notes == []
    (rec,) = report.tasks or []
    assert len(rec.frames) == 2 and rec.backtrace is not None
    assert [(e.symbol, e.corrected, e.from_frame) for e in rec.backtrace] == [
        ("livepatch_rk_target_inner+0x44/0x80 [rk_lp]", False, None),
        ("livepatch_rk_target_work+0x30/0x60 [rk_lp]", True, rec.frames[1].address),
        ("rk_target_thread+0x2c/0x80 [rk_target]", True, rec.frames[0].address),
        ("kthread+0x118/0x120", False, None),
    ]
    assert rec.backtrace[1].original_pc == H30
    text = render_table(report)
    assert f"#0  livepatch_rk_target_inner+0x44/0x80 [rk_lp] ({INNER:#x})\n" in text
    assert (
        f"#1  livepatch_rk_target_work+0x30/0x60 [rk_lp] ({C0_RET:#x})  "
        "<- livepatch frame 1 (was livepatch_handler+0x30/0x64)"
    ) in text
    assert "<- livepatch frame 0 (was livepatch_handler+0x30/0x64)" in text
    assert f"#3  kthread+0x118/0x120 ({KTHREAD:#x})" in text
    js = json.loads(render_json(report))
    assert js["tasks"][0]["backtrace"][2]["pc"] == hex(A_THREAD)


def test_klp_backtrace_unmatched_frames_noted() -> None:
    report = klp_backtrace(bt_world([INNER, H30, KTHREAD]), 130, MODULE_TOCS)
    assert report.notes == [
        "livepatch frame 0 (rk_target_thread+0x2c/0x80 [rk_target]) matches no "
        "livepatch_handler return in the unwind"
    ]


def test_klp_backtrace_no_such_task() -> None:
    with pytest.raises(KlpError, match="no task with pid 4242"):
        klp_backtrace(bt_world([]), 4242, MODULE_TOCS)


def test_klp_backtrace_without_livepatch() -> None:
    tasks, memory = task_world([(3, [])], livepatch_sp=None)
    t = lp_target(lp_kernel(has_livepatch_sp=False), tasks, memory, SYMS, {3: [KTHREAD]})
    report = klp_backtrace(t, 3, {})
    assert [f.code for f in report.findings] == ["LIVEPATCH_UNSUPPORTED"]
    assert report.tasks is not None and report.tasks[0].backtrace is not None
    assert report.tasks[0].backtrace[0].symbol == "kthread+0x118/0x120"
    assert "LIVEPATCH_UNSUPPORTED" in render_table(report)


def test_back_chain_stack_trace() -> None:
    base = 0xC000000040000000
    data = build_chain(
        base, [(0x3E00, base + 0x3E80, 0x999), (0x3E80, base + 0x3F00, 0x222), (0x3F00, 0, 0x333)]
    )
    task = TaskInfo(8, "t8", base, THREAD_SIZE, ksp=base + 0x3E00)
    t = lp_target(lp_kernel(), [task], {base: data})
    # The frame at ksp (_switch's) is dropped; one read of the whole stack.
    assert [(f.pc, f.sp) for f in back_chain_stack_trace(t, task)] == [
        (0x222, base + 0x3E80),
        (0x333, base + 0x3F00),
    ]
    assert t.reads == [(base, THREAD_SIZE)]
    with pytest.raises(KlpError, match="pid 8: no kernel stack or saved stack pointer"):
        back_chain_stack_trace(t, TaskInfo(8, "t8", base, THREAD_SIZE))


def test_guard_list_stops_at_loop_and_at_non_kernel_link() -> None:
    from klpinspect.stackcheck import ListCorruption, guard_list

    base = 0xC000000001000000
    ok = [base, base + 0x100, base + 0x200]
    assert list(guard_list(ok, lambda a: a, "modules")) == ok
    got: list[int] = []
    with pytest.raises(ListCorruption, match="modules list loops") as e:
        got.extend(guard_list([*ok, base + 0x100, base], lambda a: a, "modules"))
    assert got == ok and e.value.address == base + 0x100
    with pytest.raises(ListCorruption, match="leaves kernel memory") as e:
        list(guard_list([base, 0x1000], lambda a: a, "task"))
    assert e.value.address == 0x1000
