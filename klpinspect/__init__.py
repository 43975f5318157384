"""klpinspect: ppc64 module call stubs, ftrace trampolines, TOCs and livepatch stacks.

The public API (:mod:`klpinspect.api`, documented in ``docs/api.md``)::

    import klpinspect
    target = klpinspect.open_target("vmcore", symbols=["vmlinux.debug"])
    report = klpinspect.audit(target)
    print(report.render("table"), report.exit_status)

The decoding and checking logic lives in :mod:`klpinspect.ppc64`,
:mod:`klpinspect.audit` and :mod:`klpinspect.report`; it imports neither drgn
nor gdb.  Back ends (:mod:`klpinspect.drgn`, :mod:`klpinspect.gdbtarget`) read
memory and hand plain data to it.  The API names are imported on first use,
so ``import klpinspect`` (the drgn plugin, gdb's start-up) costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import (
        CODES,
        Finding,
        KlpError,
        ModuleRecord,
        Report,
        Severity,
        Target,
        TargetError,
        TaskRecord,
        TaskRef,
        audit,
        backtrace,
        crashed_task,
        lint_ko,
        livepatch_stacks,
        open_target,
        resolve_task,
        stubs,
        target_from_drgn,
        toc,
    )

__all__ = (
    "CODES",
    "Finding",
    "KlpError",
    "ModuleRecord",
    "Report",
    "Severity",
    "Target",
    "TargetError",
    "TaskRecord",
    "TaskRef",
    "__version__",
    "audit",
    "backtrace",
    "crashed_task",
    "lint_ko",
    "livepatch_stacks",
    "open_target",
    "resolve_task",
    "stubs",
    "target_from_drgn",
    "toc",
)


def __getattr__(name: str) -> Any:
    """Import :mod:`klpinspect.api` when one of its names is first used."""
    if name in __all__:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'klpinspect' has no attribute {name!r}")
