"""drgn back end: the innermost frame of a switched-out task names the call, as gdb does.

A blocked task's frame 0 pc is the return address ``_switch`` saved in
``__switch_to``; drgn marks the frame interrupted and looks inlined functions
up at the pc itself.  On the lab's PCREL 7.2 kernel (gcc, ``-mpcrel``:
no TOC restore after ``bl _switch``) the next instruction is the inlined
``get_current``, so drgn listed a ``get_current`` frame the task never
reached, and ``klpinspect bt`` differed between the drgn and gdb back ends
(``tests/lab/lpmatrix.py``, ``make matrix MATRIX=lp-pcrel``).  The lookup is
now made at ``pc - 4`` (drgn's ``Program.source_location``); here with a
stand-in program that answers what drgn answered on that kernel's dump.
"""

from __future__ import annotations

from collections.abc import Callable

import drgn
import pytest

from klpinspect.backends.drgn.target import _switched_out
from klpinspect.target import StackFrame

PC = 0xC000000000019BB0


def _loc(name: str) -> drgn.SourceLocation:
    return drgn.SourceLocation("x.c", 1, 1, lambda: name)


class _Prog:
    def __init__(self, at: Callable[[int], list[drgn.SourceLocation]]) -> None:
        self.source_location = at


def test_inline_frame_past_the_call_is_dropped() -> None:
    frames = [StackFrame(PC, 0x100, "get_current"), StackFrame(PC, 0x100, None),
              StackFrame(0xC000000000890B2C, 0x200, None)]
    prog = _Prog(lambda pc: [_loc("__switch_to")] if pc == PC - 4 else
                 [_loc("get_current"), _loc("__switch_to")])
    assert _switched_out(prog, frames) == frames[1:]  # type: ignore[arg-type]


def test_inline_frame_of_the_call_is_kept() -> None:
    """A call inside an inlined function keeps that function's frame (pc - 4)."""
    frames = [StackFrame(PC, 0x100, None), StackFrame(0xC000000000890B2C, 0x200, None)]
    prog = _Prog(lambda pc: [_loc("inner"), _loc("outer"), _loc("__switch_to")])
    out = _switched_out(prog, frames)  # type: ignore[arg-type]
    assert [f.inline for f in out] == ["inner", "outer", None, None]
    assert {f.pc for f in out[:3]} == {PC} and out[0].sp == 0x100


@pytest.mark.parametrize("err", [LookupError, ValueError])
def test_no_location_drops_the_inline_frames(err: type[Exception]) -> None:
    def fail(pc: int) -> list[drgn.SourceLocation]:
        raise err("no")

    frames = [StackFrame(PC, 0x100, "get_current"), StackFrame(PC, 0x100, None)]
    assert _switched_out(_Prog(fail), frames) == frames[1:]  # type: ignore[arg-type]
