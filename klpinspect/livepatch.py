"""Livepatch stacks of tasks and backtraces corrected through ``livepatch_handler``.

Glue between a :class:`~klpinspect.target.Target` and the pure decoders of
:mod:`klpinspect.ppc64.lpstack`: reads each task's livepatch stack (one read
per task), attributes saved r2 values to the kernel or a module TOC,
symbolizes saved return addresses, turns damage into findings, and builds the
``klp-bt`` report.  Core code: imports neither drgn nor gdb.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from klpinspect.checks.symbols import Symbolizer
from klpinspect.errors import KlpError, MemoryReadError
from klpinspect.gcpause import without_cyclic_gc
from klpinspect.ppc64 import insn
from klpinspect.ppc64.lpstack import (
    LPSTACK_MISALIGNED,
    LPSTACK_OUT_OF_BOUNDS,
    CorrectedFrame,
    LivepatchStack,
    correct_backtrace,
    livepatch_stack_start,
    unwind_back_chain,
    walk_livepatch_stack,
)
from klpinspect.ppc64.toc import KernelTocSource
from klpinspect.report import (
    BacktraceEntry,
    Finding,
    FindingCode,
    FrameRecord,
    Report,
    TaskRecord,
    hexaddr,
    new_report,
)
from klpinspect.stackcheck import end_of_stack, lpstack_overflow_finding, stack_end_finding
from klpinspect.target import KernelInfo, StackFrame, Target, TaskInfo

__all__ = (
    "MAX_FRAME_FINDINGS",
    "PCREL_NO_TOC",
    "UNSUPPORTED_MESSAGE",
    "audit_livepatch_stacks",
    "back_chain_stack_trace",
    "check_livepatch_stack",
    "klp_backtrace",
    "read_task_livepatch_stack",
    "toc_owners",
)

# Per task; beyond this, one summary finding.
MAX_FRAME_FINDINGS = 8

UNSUPPORTED_MESSAGE = "kernel has no thread_info.livepatch_sp: not built with CONFIG_LIVEPATCH"


def _unsupported() -> Finding:
    return Finding(FindingCode.LIVEPATCH_UNSUPPORTED, UNSUPPORTED_MESSAGE)


def toc_owners(kernel: KernelInfo, module_tocs: Mapping[int, str]) -> dict[int, str]:
    """TOC value -> owner: the modules' TOCs plus the kernel TOC as ``"vmlinux"``."""
    owners = dict(module_tocs)
    if kernel.toc is not None:
        owners[kernel.toc] = "vmlinux"
    return owners


def read_task_livepatch_stack(
    target: Target, task: TaskInfo, byteorder: str = "little"
) -> LivepatchStack | None:
    """Read and parse one task's livepatch stack in a single ``target.read``.

    Reads ``[task->stack, livepatch_sp)`` (the ``STACK_END_MAGIC`` word and,
    on old kernels, ``struct thread_info`` included); when ``livepatch_sp``
    is out of bounds only up to the first frame slot.

    :param task: the ``struct task_struct`` as plain data
    :returns: ``None`` when the task has no ``livepatch_sp`` or no stack (exited)
    :raises MemoryReadError: if the stack cannot be read
    """
    sp = task.livepatch_sp
    if sp is None or not task.stack:
        return None
    start = livepatch_stack_start(
        task.stack,
        thread_info_in_task=task.thread_info_in_task,
        thread_info_size=task.thread_info_size,
    )
    in_bounds = start <= sp <= task.stack + task.stack_size
    # Performance: one read per task, whatever the depth.
    data = target.read(task.stack, (sp if in_bounds else start) - task.stack)
    return walk_livepatch_stack(
        data,
        task.stack,
        sp,
        thread_info_in_task=task.thread_info_in_task,
        thread_info_size=task.thread_info_size,
        stack_size=task.stack_size,
        byteorder=byteorder,
    )


def check_livepatch_stack(
    task: TaskInfo, stack: LivepatchStack, owners: Mapping[int, str]
) -> list[Finding]:
    """Findings for one parsed livepatch stack.

    :param owners: TOC value -> owner name (:func:`toc_owners`)
    """
    pid = task.pid
    where = f"pid {pid} ({task.comm})"
    out: list[Finding] = []
    if stack.status == LPSTACK_OUT_OF_BOUNDS:
        out.append(
            Finding(
                FindingCode.LPSTACK_OUT_OF_BOUNDS,
                f"{where}: livepatch_sp {stack.livepatch_sp:#x} is outside "
                f"[{stack.start:#x}, {stack.limit:#x}] (first frame slot .. end of stack)",
                pid=pid,
                address=stack.livepatch_sp,
            )
        )
    elif stack.status == LPSTACK_MISALIGNED:
        out.append(
            Finding(
                FindingCode.LPSTACK_OUT_OF_BOUNDS,
                f"{where}: livepatch_sp {stack.livepatch_sp:#x} is not on a 24-byte frame "
                f"boundary above {stack.start:#x}; {stack.depth} whole frame(s) read",
                pid=pid,
                address=stack.livepatch_sp,
            )
        )
    if stack.start_marker is not None:
        # The word below the first slot is end_of_stack(): the kernel's own check.
        corrupt = stack_end_finding(task, stack.start_marker)
        if corrupt is not None:
            out.append(corrupt)
    if stack.status != LPSTACK_OUT_OF_BOUNDS:
        overflow = lpstack_overflow_finding(task, stack.livepatch_sp)
        if overflow is not None:
            out.append(overflow)
    frame_findings: list[Finding] = []
    for f in stack.frames:
        if not f.magic_ok:
            frame_findings.append(
                Finding(
                    FindingCode.LPSTACK_BAD_MAGIC,
                    f"{where}: livepatch frame {f.index} at {f.address:#x}: end marker "
                    f"{f.magic:#x} is not STACK_END_MAGIC {insn.STACK_END_MAGIC:#x}",
                    pid=pid,
                    address=f.address,
                )
            )
        # PCREL kernels (no kernel TOC) save r2 all the same, but it is no TOC there.
        if owners and f.r2 not in owners:
            frame_findings.append(
                Finding(
                    FindingCode.LPSTACK_R2_UNKNOWN,
                    f"{where}: livepatch frame {f.index} at {f.address:#x}: saved r2 "
                    f"{f.r2:#x} is neither the kernel TOC nor a module TOC",
                    pid=pid,
                    address=f.address,
                )
            )
    if len(frame_findings) > MAX_FRAME_FINDINGS:
        # A wild livepatch_sp deep in the stack makes every "frame" bad: say it once.
        rest = frame_findings[MAX_FRAME_FINDINGS:]
        codes = sorted({f.code for f in rest})
        frame_findings = frame_findings[:MAX_FRAME_FINDINGS] + [
            Finding(
                codes[0],
                f"{where}: {len(rest)} more bad livepatch frame finding(s) "
                f"({', '.join(codes)}) up to livepatch_sp {stack.livepatch_sp:#x}",
                pid=pid,
                address=rest[0].address,
            )
        ]
    return out + frame_findings


# r2_owner of every saved r2 on a PCREL kernel (CONFIG_PPC_KERNEL_PCREL: not in
# 6.1, in 6.12; docs/kernel-facts.md section 1): neither the kernel nor its
# modules have a TOC, and livepatch_handler saves and restores r2 all the same.
# Told from the kernel facts: no paca->kernel_toc and no .TOC. symbol.
PCREL_NO_TOC = "no TOC (PCREL)"


def _no_toc(kernel: KernelInfo) -> str | None:
    if kernel.toc is None and kernel.toc_source is KernelTocSource.NONE:
        return PCREL_NO_TOC
    return None


def _frame_records(
    stack: LivepatchStack,
    owners: Mapping[int, str],
    symbols: Symbolizer,
    no_toc: str | None = None,
) -> list[FrameRecord]:
    return [
        FrameRecord(
            address=f.address,
            r2=f.r2,
            lr=f.lr,
            magic_ok=f.magic_ok,
            r2_owner=owners.get(f.r2, no_toc),
            lr_symbol=symbols.text(f.lr),
        )
        for f in stack.frames
    ]


def _unreadable(task: TaskInfo, err: MemoryReadError, what: str = "livepatch stack") -> Finding:
    return Finding(
        FindingCode.MEMORY_UNREADABLE,
        f"pid {task.pid} ({task.comm}): {what}: {err}",
        pid=task.pid,
        address=err.address,
    )


def _stack_end_findings(
    target: Target, tasks: Iterable[TaskInfo], kernel: KernelInfo, pids: Sequence[int] | None
) -> list[Finding]:
    """``TASK_STACK_CORRUPT`` for tasks whose livepatch stack was not read (an
    8-byte read of ``end_of_stack`` each); exited tasks (no stack) are skipped."""
    out: list[Finding] = []
    for task in tasks:
        if not task.stack or (pids is not None and task.pid not in pids):
            continue
        try:
            data = target.read(end_of_stack(task), 8)
        except MemoryReadError as err:
            out.append(_unreadable(task, err, "end of stack"))
            continue
        corrupt = stack_end_finding(task, int.from_bytes(data, kernel.byteorder))  # type: ignore[arg-type]
        if corrupt is not None:
            out.append(corrupt)
    return out


@without_cyclic_gc
def audit_livepatch_stacks(
    target: Target,
    module_tocs: Mapping[int, str],
    *,
    pids: Sequence[int] | None = None,
    symbols: Symbolizer | None = None,
) -> tuple[list[TaskRecord], list[Finding]]:
    """Every task's livepatch stack (``klp-lpstack``), with findings.

    Tasks with an empty, healthy livepatch stack are left out unless their pid
    is in ``pids``.  Frames are in push order (frame 0 first pushed).  A kernel
    without ``thread_info.livepatch_sp`` gives one ``LIVEPATCH_UNSUPPORTED``
    info finding.

    :param module_tocs: module TOC (r2) value -> module name
    :param pids: only these tasks
    :param symbols: the command's symbolizer, when it has one already
    :raises KlpError: if a pid in ``pids`` names no task
    """
    kernel = target.kernel()
    if not kernel.has_livepatch_sp:
        return [], [_unsupported(), *_stack_end_findings(target, target.tasks(), kernel, pids)]
    owners = toc_owners(kernel, module_tocs)
    symbols = symbols or Symbolizer(target)
    wanted = None if pids is None else set(pids)
    records: list[TaskRecord] = []
    findings: list[Finding] = []
    seen: set[int] = set()
    unsupported = False
    for task in target.tasks():
        if wanted is not None:
            if task.pid not in wanted:
                continue
            seen.add(task.pid)
        try:
            stack = read_task_livepatch_stack(target, task, kernel.byteorder)
        except MemoryReadError as err:
            findings.append(_unreadable(task, err))
            continue
        if stack is None:
            unsupported |= task.livepatch_sp is None
            findings.extend(_stack_end_findings(target, (task,), kernel, None))
            if wanted is not None:
                records.append(TaskRecord(task.pid, task.comm, task.livepatch_sp))
            continue
        problems = check_livepatch_stack(task, stack, owners)
        findings.extend(problems)
        if stack.frames or problems or wanted is not None:
            frames = _frame_records(stack, owners, symbols, _no_toc(kernel))
            records.append(TaskRecord(task.pid, task.comm, stack.livepatch_sp, frames))
    if wanted is not None and wanted - seen:
        missing = ", ".join(str(p) for p in sorted(wanted - seen))
        raise KlpError(f"no task with pid {missing}")
    if unsupported:
        findings.append(_unsupported())
    return records, findings


def back_chain_stack_trace(
    target: Target, task: TaskInfo, byteorder: str = "little"
) -> list[StackFrame]:
    """Unwind a sleeping task by its back chain, for back ends without an unwinder (gdb).

    Reads the whole stack once and starts at ``task->thread.ksp``; the first
    frame there is ``_switch``'s, whose LR-save slot is no return address, so
    the result starts at ``__switch_to`` like drgn's unwind (without inline
    frames).  A running task's ``ksp`` is stale.

    :param task: the ``struct task_struct`` as plain data
    :raises KlpError: if the task has no stack or saved stack pointer
    :raises MemoryReadError: if the stack cannot be read
    """
    if task.ksp is None or not task.stack:
        raise KlpError(f"pid {task.pid}: no kernel stack or saved stack pointer to unwind")
    data = target.read(task.stack, task.stack_size)
    chain = unwind_back_chain(data, task.stack, task.ksp, byteorder=byteorder)
    return [StackFrame(pc=lr, sp=sp) for sp, lr in chain[1:]]


def _find_task(tasks: Iterable[TaskInfo], pid: int) -> TaskInfo:
    for task in tasks:
        if task.pid == pid:
            return task
    raise KlpError(f"no task with pid {pid}")


def _handler_size(kernel: KernelInfo, symbols: Symbolizer) -> int | None:
    if kernel.livepatch_handler is None:
        return None
    sym = symbols.info(kernel.livepatch_handler)
    if sym is None or sym.address != kernel.livepatch_handler or sym.size <= 0:
        return None
    return sym.size


def _backtrace_entry(
    c: CorrectedFrame, symbols: Symbolizer, inline: str | None = None
) -> BacktraceEntry:
    text = symbols.text(c.pc)
    if inline and not c.corrected:
        # drgn lists an inlined call as a frame of its own, with its caller's pc
        text = f"{inline} (inlined in {text})"
    frame = c.from_frame
    return BacktraceEntry(
        index=c.index,
        pc=c.pc,
        symbol=text,
        corrected=c.corrected,
        from_frame=None if frame is None else frame.address,
        frame_index=None if frame is None else frame.index,
        original_pc=c.original_pc if c.corrected else None,
        original_symbol=symbols.text(c.original_pc) if c.corrected else None,
        note=c.note or None,
    )


def klp_backtrace(target: Target, pid: int, module_tocs: Mapping[int, str]) -> Report:
    """``klp-bt PID``: the back end's unwind with ``livepatch_handler`` returns replaced.

    Each return into ``livepatch_handler`` (``+0x30``; ``+0x38`` on 4.6 ..
    ~4.12) becomes the saved return address of the matching livepatch frame,
    innermost handler return <-> top frame.

    :param pid: the task (``struct task_struct.pid``)
    :param module_tocs: module TOC (r2) value -> module name
    :returns: a report whose single task record holds ``frames`` and ``backtrace``
    :raises KlpError: if there is no such task
    """
    kernel = target.kernel()
    task = _find_task(target.tasks(), pid)
    trace = list(target.stack_trace(pid))
    pcs = [f.pc for f in trace]
    symbols = Symbolizer(target)
    findings: list[Finding] = []
    notes: list[str] = []
    record = TaskRecord(task.pid, task.comm, task.livepatch_sp)
    stack = None
    if not kernel.has_livepatch_sp or task.livepatch_sp is None:
        findings.append(_unsupported())
        findings.extend(_stack_end_findings(target, (task,), kernel, None))
    else:
        try:
            stack = read_task_livepatch_stack(target, task, kernel.byteorder)
        except MemoryReadError as err:
            findings.append(_unreadable(task, err))
    if stack is not None:
        # the TOC owners (every module's TOC) only when there are frames to name
        owners = toc_owners(kernel, module_tocs) if stack.frames else {}
        findings.extend(check_livepatch_stack(task, stack, owners))
        record.frames = _frame_records(stack, owners, symbols, _no_toc(kernel))
    frames = stack.frames if stack is not None else ()
    if kernel.livepatch_handler is None:
        corrected = [CorrectedFrame(i, pc, pc) for i, pc in enumerate(pcs)]
        if frames:
            notes.append("livepatch_handler address unknown: backtrace not corrected")
    else:
        corrected = correct_backtrace(
            pcs, frames, kernel.livepatch_handler, _handler_size(kernel, symbols)
        )
    matched = {c.from_frame.index for c in corrected if c.from_frame is not None}
    for f in frames:
        if f.index not in matched and kernel.livepatch_handler is not None:
            notes.append(
                f"livepatch frame {f.index} ({symbols.text(f.lr) or hexaddr(f.lr)}) matches "
                "no livepatch_handler return in the unwind"
            )
    record.backtrace = [
        _backtrace_entry(c, symbols, trace[c.index].inline if c.index < len(trace) else None)
        for c in corrected
    ]
    report = new_report(
        target, kernel, ("backtrace", "findings") if findings else ("backtrace",)
    )
    report.kernel["livepatch_handler"] = hexaddr(kernel.livepatch_handler)
    report.tasks = [record]
    report.findings = findings
    report.notes = notes
    return report
