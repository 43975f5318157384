"""ppc64 livepatch stacks and backtraces corrected through ``livepatch_handler``.

When ftrace redirects a call from A to a patched function C in another
module, ``livepatch_handler`` (``arch/powerpc/kernel/trace/ftrace_mprofile.S``
on 6.1, ``ftrace_entry.S`` on 6.12+) saves A's r2 and the real return address
into A on a small per-task *livepatch stack* and calls C with ``bctrl``, so C
returns into the handler (85baa095497f "powerpc/livepatch: Add live patching
support on ppc64le", v4.6).  The stack starts just
above the ``STACK_END_MAGIC`` word at the bottom of the kernel stack and grows
up to ``thread_info.livepatch_sp``; each frame is 24 bytes::

    livepatch_sp - 24   saved r2
    livepatch_sp - 16   real return address into A
    livepatch_sp -  8   STACK_END_MAGIC as a u64 (0x0000000057ac6e9d)

C saves the handler's return address (``livepatch_handler+0x30``) into A's
frame, so an unwinder shows the handler where A should be.  Frames are LIFO:
the k-th handler return counted from the innermost frame belongs to the k-th
livepatch frame counted from the top.

Also here: the 2016 ``klp_return_helper`` mini stack frame that was proposed
instead and never merged, and a plain back-chain unwinder (``0(r1)`` back
chain, ``16(r1)`` LR save) for back ends without one.

Everything is pure: functions take the bytes of a stack and return plain
data; frames come back in *push order* (index 0 is the first pushed, at the
bottom; the last one is the top, just below ``livepatch_sp``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from klpinspect.ppc64 import insn

__all__ = (
    "LIVEPATCH_FRAME_SIZE",
    "LIVEPATCH_HANDLER_RETURN_OFFSETS",
    "LPSTACK_MISALIGNED",
    "LPSTACK_NO_START_MARKER",
    "LPSTACK_OK",
    "LPSTACK_OUT_OF_BOUNDS",
    "LpstackStatus",
    "KLP_RETURN_HELPER_FRAME_SIZE",
    "CorrectedFrame",
    "KlpReturnHelperFrame",
    "LivepatchFrame",
    "LivepatchStack",
    "correct_backtrace",
    "find_klp_return_helper_frames",
    "is_livepatch_handler_return",
    "klp_return_helper_insns",
    "livepatch_stack_start",
    "match_klp_return_helper",
    "parse_klp_return_helper_frame",
    "unwind_back_chain",
    "walk_livepatch_stack",
)

LIVEPATCH_FRAME_SIZE = 24
# Return address after the handler's bctrl (docs/kernel-facts.md §4): +0x30 for the r11
# handler (5.x .. 7.x), +0x38 for the 4.6 .. ~4.12 one that juggles r1.
LIVEPATCH_HANDLER_RETURN_OFFSETS = (0x30, 0x38)



class LpstackStatus(StrEnum):
    """How a livepatch stack could be walked (:attr:`LivepatchStack.status`)."""

    OK = "ok"
    OUT_OF_BOUNDS = "out-of-bounds"
    MISALIGNED = "misaligned"
    NO_START_MARKER = "no-start-marker"


LPSTACK_OK = LpstackStatus.OK
LPSTACK_OUT_OF_BOUNDS = LpstackStatus.OUT_OF_BOUNDS
LPSTACK_MISALIGNED = LpstackStatus.MISALIGNED
LPSTACK_NO_START_MARKER = LpstackStatus.NO_START_MARKER

KLP_RETURN_HELPER_FRAME_SIZE = 32

_STACK_FRAME_LR_SAVE = 16  # ppc64 ABI (both ELFv1 and ELFv2): LR save at 16(r1)
_STACK_FRAME_MIN = 32  # ELFv2 minimal frame: back chain, CR, LR, TOC
_BLR = 0x4E800020


@lru_cache(maxsize=16)
def _u64s(byteorder: str, count: int) -> struct.Struct:
    return struct.Struct(("<" if byteorder == "little" else ">") + "Q" * count)


# Not frozen: a frozen dataclass __init__ costs 3x more, and walks build many.
@dataclass(slots=True)
class LivepatchFrame:
    """One 24-byte ``livepatch_handler`` frame.

    :param index: push order, 0 = first pushed (lowest address)
    :param address: address of the frame (its saved-r2 slot)
    :param r2: saved r2, the caller's TOC at the patched call
    :param lr: saved real return address into the caller
    :param magic: the end marker word as read
    """

    index: int
    address: int
    r2: int
    lr: int
    magic: int

    @property
    def magic_ok(self) -> bool:
        return self.magic == insn.STACK_END_MAGIC


@dataclass(frozen=True, slots=True)
class LivepatchStack:
    """A task's livepatch stack.

    :param start: address of the first frame slot (the empty stack's ``livepatch_sp``)
    :param livepatch_sp: ``thread_info.livepatch_sp`` as read
    :param status: :data:`LPSTACK_OK`, :data:`LPSTACK_OUT_OF_BOUNDS` (no frames
        read), :data:`LPSTACK_MISALIGNED` (``livepatch_sp`` is not
        ``start + 24*k``; the whole frames from ``start`` up are read) or
        :data:`LPSTACK_NO_START_MARKER` (frames read, but the
        ``STACK_END_MAGIC`` word below ``start`` is overwritten)
    :param frames: push order; ``frames[-1]`` is the top frame
    :param start_marker: the word at ``start - 8`` (``end_of_stack``), if read
    :param limit: one past the highest address the stack may use
    """

    start: int
    livepatch_sp: int
    status: LpstackStatus
    frames: tuple[LivepatchFrame, ...]
    start_marker: int | None
    limit: int

    @property
    def start_marker_ok(self) -> bool | None:
        if self.start_marker is None:
            return None
        return self.start_marker == insn.STACK_END_MAGIC

    @property
    def depth(self) -> int:
        return len(self.frames)

    @property
    def bad_frames(self) -> tuple[LivepatchFrame, ...]:
        return tuple(f for f in self.frames if not f.magic_ok)


def livepatch_stack_start(
    stack_base: int, *, thread_info_in_task: bool = True, thread_info_size: int = 0
) -> int:
    """Address of the first livepatch frame slot: ``klp_init_thread_info()``'s value.

    THREAD_INFO_IN_TASK kernels (5.x+): ``end_of_stack(p) + 1`` =
    ``task->stack + 8``.  Older kernels (4.6 .. 4.x): ``(unsigned long *)(ti +
    1) + 1`` with ``struct thread_info`` at the stack base.  In both the word
    just below is ``end_of_stack()``, which holds ``STACK_END_MAGIC``.

    :param stack_base: ``task->stack`` (the ``struct thread_info *`` on old kernels)
    """
    if thread_info_in_task:
        return stack_base + 8
    return stack_base + thread_info_size + 8


def walk_livepatch_stack(
    stack_bytes: bytes,
    stack_base: int,
    livepatch_sp: int,
    *,
    thread_info_in_task: bool = True,
    thread_info_size: int = 0,
    stack_size: int | None = None,
    byteorder: str = "little",
) -> LivepatchStack:
    """Parse the livepatch frames of one task from the bytes of its stack.

    :param stack_bytes: memory from ``stack_base`` on; it must reach at least
        ``max(start, livepatch_sp)`` when ``livepatch_sp`` is within bounds
    :param stack_base: lowest address of the kernel stack (``task->stack``)
    :param livepatch_sp: ``thread_info.livepatch_sp``
    :param stack_size: ``THREAD_SIZE``; defaults to ``len(stack_bytes)``
    :returns: the frames in push order and a status
    :raises ValueError: if ``stack_bytes`` is shorter than the in-bounds range
    """
    start = livepatch_stack_start(
        stack_base, thread_info_in_task=thread_info_in_task, thread_info_size=thread_info_size
    )
    limit = stack_base + (len(stack_bytes) if stack_size is None else stack_size)
    if not start <= livepatch_sp <= limit:
        marker = None
        if stack_base <= start - 8 and start - stack_base <= len(stack_bytes):
            (marker,) = _u64s(byteorder, 1).unpack_from(stack_bytes, start - 8 - stack_base)
        return LivepatchStack(start, livepatch_sp, LPSTACK_OUT_OF_BOUNDS, (), marker, limit)
    if livepatch_sp - stack_base > len(stack_bytes):
        raise ValueError(
            f"stack bytes end at {stack_base + len(stack_bytes):#x}, "
            f"below livepatch_sp {livepatch_sp:#x}"
        )
    (marker,) = _u64s(byteorder, 1).unpack_from(stack_bytes, start - 8 - stack_base)
    count, rest = divmod(livepatch_sp - start, LIVEPATCH_FRAME_SIZE)
    frames: tuple[LivepatchFrame, ...] = ()
    if count:
        vals = _u64s(byteorder, 3 * count).unpack_from(stack_bytes, start - stack_base)
        frames = tuple(
            LivepatchFrame(
                i, start + LIVEPATCH_FRAME_SIZE * i, vals[3 * i], vals[3 * i + 1], vals[3 * i + 2]
            )
            for i in range(count)
        )
    if rest:
        status = LPSTACK_MISALIGNED
    elif marker != insn.STACK_END_MAGIC:
        status = LPSTACK_NO_START_MARKER
    else:
        status = LPSTACK_OK
    return LivepatchStack(start, livepatch_sp, status, frames, marker, limit)


# -- backtrace correction ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorrectedFrame:
    """One frame of a backtrace after correction, innermost first.

    :param index: position in the backtrace (0 = innermost)
    :param pc: the corrected return address (``original_pc`` if unchanged)
    :param original_pc: what the unwinder gave
    :param corrected: ``pc`` came from a livepatch frame
    :param from_frame: the livepatch frame matched to this position, if any
    :param note: why a handler return was left alone, or that a frame's
        return address was already in place
    """

    index: int
    pc: int
    original_pc: int
    corrected: bool = False
    from_frame: LivepatchFrame | None = None
    note: str | None = None


def is_livepatch_handler_return(
    pc: int, livepatch_handler: int, handler_size: int | None = None
) -> bool:
    """Whether ``pc`` lies in ``livepatch_handler``.

    Without a symbol size (a ``.S`` label may have none) only the known return
    offsets after ``bctrl`` count (:data:`LIVEPATCH_HANDLER_RETURN_OFFSETS`).
    """
    if handler_size:
        return livepatch_handler <= pc < livepatch_handler + handler_size
    return pc - livepatch_handler in LIVEPATCH_HANDLER_RETURN_OFFSETS


def correct_backtrace(
    pcs: Sequence[int],
    livepatch_frames: Sequence[LivepatchFrame],
    livepatch_handler: int,
    handler_size: int | None,
) -> list[CorrectedFrame]:
    """Replace returns into ``livepatch_handler`` by the callers they hide.

    The innermost handler return gets the top livepatch frame's saved LR, the
    next one the frame below, and so on (LIFO).  A patched leaf function never
    stores LR, so its handler return is on no stack while its caller's slot
    still holds the real return address (``ftrace_caller`` put it there): when
    a pc equals the next frame's saved LR and fewer handler returns remain
    than frames, that frame counts as already visible.  Handler returns left
    over when the frames run out stay as they are, with a note.

    :param pcs: return addresses, innermost first
    :param livepatch_frames: push order, as :func:`walk_livepatch_stack` returns them
    """
    hits = [is_livepatch_handler_return(pc, livepatch_handler, handler_size) for pc in pcs]
    remaining = sum(hits)
    j = len(livepatch_frames) - 1
    out: list[CorrectedFrame] = []
    for i, (pc, hit) in enumerate(zip(pcs, hits, strict=True)):
        if hit:
            remaining -= 1
            if j >= 0:
                frame = livepatch_frames[j]
                out.append(CorrectedFrame(i, frame.lr, pc, True, frame))
                j -= 1
            else:
                out.append(
                    CorrectedFrame(
                        i, pc, pc, note="no livepatch frame left for this livepatch_handler return"
                    )
                )
        elif j >= 0 and remaining < j + 1 and pc == livepatch_frames[j].lr:
            frame = livepatch_frames[j]
            note = f"return address of livepatch frame {frame.index} already in place"
            out.append(CorrectedFrame(i, pc, pc, False, frame, note))
            j -= 1
        else:
            out.append(CorrectedFrame(i, pc, pc))
    return out


# -- back chain ----------------------------------------------------------------


def unwind_back_chain(
    stack_bytes: bytes,
    stack_base: int,
    sp: int,
    *,
    max_frames: int = 1024,
    byteorder: str = "little",
) -> list[tuple[int, int]]:
    """Follow the ppc64 back chain like ``arch_stack_walk()``: ``(sp, lr)`` pairs.

    Each frame's return address is its LR-save slot ``16(sp)``; the next frame
    is ``0(sp)``.  The walk stops when the chain leaves ``stack_bytes``, does
    not move up (the stack grows down), or is not 16-byte aligned.  Interrupt
    frames (``pt_regs`` with the ``REGSHERE`` marker) are not decoded.

    :param stack_bytes: the task's stack from ``stack_base`` (``THREAD_SIZE`` bytes)
    :param sp: the innermost frame, e.g. ``task->thread.ksp``
    :returns: innermost first.  For a sleeping task the first pair is
        ``_switch``'s frame at ``ksp``, whose LR-save slot is not a return
        address; drgn's unwind starts at the second (``__switch_to``).
    """
    end = stack_base + len(stack_bytes)
    u64 = _u64s(byteorder, 1)
    out: list[tuple[int, int]] = []
    while len(out) < max_frames:
        if sp & 15 or not stack_base <= sp or sp + _STACK_FRAME_MIN > end:
            break
        off = sp - stack_base
        (back,) = u64.unpack_from(stack_bytes, off)
        (lr,) = u64.unpack_from(stack_bytes, off + _STACK_FRAME_LR_SAVE)
        out.append((sp, lr))
        if back <= sp:
            break
        sp = back
    return out


# -- the 2016 klp_return_helper design (never merged; docs/kernel-facts.md §5) ------


@dataclass(frozen=True, slots=True)
class KlpReturnHelperFrame:
    """The 32-byte mini frame ``ftrace_caller`` opened in the 2016 proposal.

    :param address: the mini frame's r1
    :param back_chain: ``0(r1)``, A's frame (``address + 32`` when intact)
    :param cr_save: ``8(r1)``, unused
    :param lr_save: ``16(r1)``, ``&klp_return_helper``
    :param toc_save: ``24(r1)``, A's r2
    :param real_lr: ``16(back_chain)``, the real return address into A that
        ``ftrace_caller`` left in A's frame, when the bytes reach it
    """

    address: int
    back_chain: int
    cr_save: int
    lr_save: int
    toc_save: int
    real_lr: int | None

    @property
    def chain_ok(self) -> bool:
        return self.back_chain == self.address + KLP_RETURN_HELPER_FRAME_SIZE


def parse_klp_return_helper_frame(
    data: bytes, address: int, *, byteorder: str = "little"
) -> KlpReturnHelperFrame:
    """Decode a ``klp_return_helper`` mini frame.

    :param data: memory from ``address`` on, at least 32 bytes (56 to reach
        A's LR-save slot when the back chain is intact)
    :param address: the mini frame's stack pointer
    :raises ValueError: if ``data`` is shorter than 32 bytes
    """
    if len(data) < KLP_RETURN_HELPER_FRAME_SIZE:
        raise ValueError(f"klp_return_helper frame needs 32 bytes, got {len(data)}")
    back, cr, lr, toc = _u64s(byteorder, 4).unpack_from(data)
    real_lr = None
    off = back - address + _STACK_FRAME_LR_SAVE
    if back > address and off + 8 <= len(data):
        (real_lr,) = _u64s(byteorder, 1).unpack_from(data, off)
    return KlpReturnHelperFrame(address, back, cr, lr, toc, real_lr)


def find_klp_return_helper_frames(
    stack_bytes: bytes,
    stack_base: int,
    chain: Sequence[tuple[int, int]],
    klp_return_helper: int,
    *,
    byteorder: str = "little",
) -> list[tuple[int, KlpReturnHelperFrame]]:
    """Mini frames in a back-chain walk: frames whose LR-save slot is ``klp_return_helper``.

    The unwinder shows such a frame as ``klp_return_helper``; the caller A
    follows as the next frame with its real return address (unlike with
    ``livepatch_handler``, nothing is hidden, there is one frame too many).

    :param chain: :func:`unwind_back_chain` output
    :returns: ``(position in chain, frame)`` pairs
    """
    out = []
    for pos, (sp, lr) in enumerate(chain):
        if lr != klp_return_helper:
            continue
        off = sp - stack_base
        frame = parse_klp_return_helper_frame(stack_bytes[off:], sp, byteorder=byteorder)
        out.append((pos, frame))
    return out


def klp_return_helper_insns() -> tuple[int, ...]:
    """The proposed ``klp_return_helper`` body as instruction words.

    ``ld r2,24(r1)`` (restore TOC), ``addi r1,r1,32`` (drop the mini frame),
    ``ld r0,16(r1)`` (the real return address), ``mtlr r0``, ``blr``.
    """
    return (insn.ld(2, 24, 1), insn.addi(1, 1, 32), insn.ld(0, 16, 1), insn.MTLR_R0, _BLR)


def match_klp_return_helper(code: bytes, *, byteorder: str = "little") -> bool:
    """Whether ``code`` starts with the ``klp_return_helper`` body (to find it without a symbol)."""
    expect = klp_return_helper_insns()
    return insn.words(code[: 4 * len(expect)], byteorder) == expect
