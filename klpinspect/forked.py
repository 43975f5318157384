"""Run part of a report in a forked child, on the machine's second core.

drgn indexes DWARF on every core; klpinspect's checks are Python, one core.
The call-site scan of an audit (every module's text read and searched for
``bl`` into its stubs) and the task walk need nothing of the stub naming that
takes most of the rest, so a child process does them meanwhile.  Only for a
target that is a file (a vmcore: the child's reads cannot disturb the
parent's), on a machine with more than one CPU, in a process with no other
Python thread, and where ``os.fork`` exists; anywhere else, or if the child
fails in any way, the work runs in this process when its result is asked for.
The result is the same either way (tests compare the two).

``KLPINSPECT_JOBS=1`` in the environment keeps everything in one process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ("Pending", "can_fork", "start")

_T = TypeVar("_T")


def can_fork(target: Any) -> bool:
    """Whether work on ``target`` may go to a forked child: a vmcore (a file;
    a live kernel, a QEMU or gdb session must see one reader), more than one
    CPU to run on, no other thread in this process, ``os.fork``, and
    ``KLPINSPECT_JOBS`` not ``1``."""
    if getattr(target, "kind", None) != "vmcore" or not getattr(target, "forkable", False):
        return False
    if os.environ.get("KLPINSPECT_JOBS", "").strip() == "1" or not hasattr(os, "fork"):
        return False
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return False  # a script's other threads: their locks would stay held in the child
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus > 1


class Pending(Generic[_T]):
    """The result of :func:`start`'s ``work``: :meth:`result` waits for it."""

    def __init__(self, work: Callable[[], _T], pid: int | None, fd: int | None) -> None:
        self._work = work
        self._pid = pid
        self._fd = fd

    def result(self) -> _T:
        """The child's result, or ``work()`` run here if there was no child or it
        failed (an exception of ``work`` then comes from here, as without a child)."""
        if self._fd is None:
            return self._work()
        chunks = []
        try:
            with os.fdopen(self._fd, "rb") as pipe:
                self._fd = None
                while chunk := pipe.read(1 << 20):
                    chunks.append(chunk)
        finally:
            if self._pid is not None:
                pid, self._pid = self._pid, None
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        import pickle

        try:
            ok, value = pickle.loads(b"".join(chunks))
        except Exception:  # a child killed or cut short: no result
            ok = False
        if ok:
            return value  # type: ignore[no-any-return]
        return self._work()


def start(work: Callable[[], _T], target: Any) -> Pending[_T]:
    """Start ``work()`` (no arguments, a picklable result, no side effects the
    caller needs) in a forked child when :func:`can_fork` allows, else later
    in this process."""
    if not can_fork(target):
        return Pending(work, None, None)
    import pickle  # here, not at the top: the gdb front end never forks

    try:
        rfd, wfd = os.pipe()
    except OSError:
        return Pending(work, None, None)
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return Pending(work, None, None)
    if pid == 0:  # the child: compute, send, and leave without any clean-up
        status = 0
        try:
            os.close(rfd)
            try:
                data = pickle.dumps((True, work()), pickle.HIGHEST_PROTOCOL)
            except BaseException:  # the parent does it again itself
                data = pickle.dumps((False, None))
            with os.fdopen(wfd, "wb") as pipe:
                pipe.write(data)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(wfd)
    return Pending(work, pid, rfd)
