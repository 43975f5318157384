"""Pausing the cyclic garbage collector while a report is built."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ("without_cyclic_gc",)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def without_cyclic_gc(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` with the cyclic garbage collector paused.

    A report holds a few small acyclic objects per stub slot or livepatch frame
    (millions on a big kernel); each collection while it is built would rescan
    them all, which doubled the audit time of 5,000 modules and made the walk
    of 100,000 tasks superlinear.  Reference counting still frees everything.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper
