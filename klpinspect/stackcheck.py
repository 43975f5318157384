"""The kernel's own stack checks, and walks of kernel lists that cannot run away.

* ``STACK_END_MAGIC`` at ``end_of_stack(task)``: what the kernel's
  ``task_stack_end_corrupted()`` tests ("Thread overran stack, or stack
  corrupted", kernel/sched/core.c), for every task, livepatch or not.
* The livepatch stack (growing up from ``end_of_stack + 1``) running into the
  kernel stack (growing down to ``task->thread.ksp`` for a sleeping task).
* :func:`guard_list`: a walk that stops at a loop or at a link that leaves
  kernel memory; :func:`walk_list` is the ``list_head`` walk with that rule,
  used by :func:`klpinspect.backends.layout.list_nodes` (``struct module``
  list, task lists, both back ends) and by the ftrace view (livepatch lists).

Pure core: plain data in, :class:`~klpinspect.report.Finding` out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from klpinspect.errors import KlpError
from klpinspect.ppc64 import insn
from klpinspect.report import Finding, FindingCode
from klpinspect.target import TaskInfo

__all__ = (
    "KERNEL_SPACE",
    "MAX_LIST_ENTRIES",
    "STACK_FRAME_OVERHEAD",
    "ListBroken",
    "ListCorruption",
    "end_of_stack",
    "guard_list",
    "lpstack_overflow_finding",
    "stack_end_finding",
    "walk_list",
)

_T = TypeVar("_T")

#: Lowest ppc64 kernel address (``PAGE_OFFSET``; vmalloc and modules lie above).
KERNEL_SPACE = 0xC000000000000000
#: ppc64 ``STACK_FRAME_OVERHEAD`` (arch/powerpc/include/asm/ptrace.h): the
#: minimum stack frame.  A livepatch stack top closer than this to the saved
#: kernel stack pointer has no room for the next frame either way.
STACK_FRAME_OVERHEAD = 112
#: More list entries than any kernel has: a list this long loops through
#: addresses the seen-set cannot hold (never reached in practice).
MAX_LIST_ENTRIES = 1 << 22


class ListCorruption(KlpError):
    """A kernel list loops or leaves kernel memory (finding ``LIST_CORRUPT``).

    :param address: the offending link
    """

    code = FindingCode.LIST_CORRUPT

    def __init__(self, address: int, message: str) -> None:
        super().__init__(message)
        self.address = address


class ListBroken(KlpError):
    """A ``list_head`` chain with a NULL link or more than ``limit`` entries.

    :param address: the link that was followed last (the head or a node)
    """

    def __init__(self, address: int, message: str) -> None:
        super().__init__(message)
        self.address = address


def walk_list(
    read_u64: Callable[[int], int], head: int, what: str, limit: int = MAX_LIST_ENTRIES
) -> Iterator[int]:
    """The nodes after the ``struct list_head`` at ``head`` (``list_for_each``),
    read through ``read_u64`` (``list_head.next`` is the first word).

    :raises ListBroken: at a NULL link or after ``limit`` nodes
    :raises ListCorruption: at a link back to an earlier node (not the head)
        or below :data:`KERNEL_SPACE` (``LIST_CORRUPT``)
    :raises: whatever ``read_u64`` raises at an unreadable link
    """
    seen: set[int] = set()
    prev = head
    node = read_u64(head)
    while node != head:
        if not node or len(seen) > limit:
            raise ListBroken(prev, f"{what} list is damaged at {node:#x}")
        if node < KERNEL_SPACE or node in seen:
            how = "leaves kernel memory" if node < KERNEL_SPACE else "loops"
            raise ListCorruption(
                node,
                f"{what} list {how}: link {node:#x} after {len(seen)} entries; "
                "the walk stops there",
            )
        seen.add(node)
        yield node
        prev = node
        node = read_u64(node)


def guard_list(items: Iterable[_T], address_of: Callable[[_T], int], what: str) -> Iterator[_T]:
    """``items`` (a list walk), stopped by :class:`ListCorruption` when an
    entry's address repeats (the list loops back to an entry instead of its
    head) or is below :data:`KERNEL_SPACE` (a link leaves kernel memory).

    :param address_of: the entry's address (``struct module *``, ``struct task_struct *``)
    :param what: the list, for the message (``"modules"``, ``"task"``)
    """
    seen: set[int] = set()
    for item in items:
        addr = address_of(item)
        if addr < KERNEL_SPACE:
            raise ListCorruption(
                addr, f"{what} list leaves kernel memory: entry at {addr:#x} after "
                f"{len(seen)} entries; the walk stops there"
            )
        if addr in seen:
            raise ListCorruption(
                addr, f"{what} list loops: entry at {addr:#x} comes again after "
                f"{len(seen)} entries; the walk stops there"
            )
        if len(seen) >= MAX_LIST_ENTRIES:
            raise ListCorruption(addr, f"{what} list has more than {MAX_LIST_ENTRIES} entries")
        seen.add(addr)
        yield item


def end_of_stack(task: TaskInfo) -> int:
    """``end_of_stack(task)`` (include/linux/sched/task_stack.h): ``task->stack`` with
    THREAD_INFO_IN_TASK, else just above the ``struct thread_info`` at its base."""
    return task.stack if task.thread_info_in_task else task.stack + task.thread_info_size


def stack_end_finding(task: TaskInfo, word: int) -> Finding | None:
    """``TASK_STACK_CORRUPT`` when the word at :func:`end_of_stack` is not ``STACK_END_MAGIC``."""
    if word == insn.STACK_END_MAGIC:
        return None
    where = end_of_stack(task)
    return Finding(
        FindingCode.TASK_STACK_CORRUPT,
        f"pid {task.pid} ({task.comm}): end_of_stack word at {where:#x} is {word:#x}, not "
        f"STACK_END_MAGIC {insn.STACK_END_MAGIC:#x}: thread overran its stack, or the "
        "stack is corrupted",
        pid=task.pid,
        address=where,
    )


def lpstack_overflow_finding(task: TaskInfo, livepatch_sp: int) -> Finding | None:
    """``LPSTACK_OVERFLOW`` when an in-bounds ``livepatch_sp`` is past, or within
    :data:`STACK_FRAME_OVERHEAD` bytes of, the task's saved stack pointer.

    Only a ``ksp`` inside the task's stack is compared (a wild one is no
    evidence); a running task's ``ksp`` is where it last switched out.
    """
    ksp = task.ksp
    top = task.stack + task.stack_size
    if ksp is None or not task.stack or not task.stack <= ksp < top:
        return None
    if not task.stack < livepatch_sp <= top:
        return None  # out of bounds: LPSTACK_OUT_OF_BOUNDS says so
    if livepatch_sp + STACK_FRAME_OVERHEAD <= ksp:
        return None
    how = "past" if livepatch_sp > ksp else f"within {ksp - livepatch_sp} bytes of"
    return Finding(
        FindingCode.LPSTACK_OVERFLOW,
        f"pid {task.pid} ({task.comm}): livepatch_sp {livepatch_sp:#x} is {how} the saved "
        f"kernel stack pointer {ksp:#x}: the livepatch stack grows into the kernel stack",
        pid=task.pid,
        address=livepatch_sp,
        context=(f"livepatch_sp={livepatch_sp:#x}", f"ksp={ksp:#x}"),
    )
