"""klpinspect: ppc64 module call stubs, ftrace trampolines, TOCs and livepatch stacks.

The public API (:mod:`klpinspect.api`, documented in ``docs/api.md``)::

    import klpinspect
    target = klpinspect.open_target("vmcore", symbols=["vmlinux.debug"])
    report = klpinspect.audit(target)
    print(report.render("table"), report.exit_status)

The decoding and checking logic lives in :mod:`klpinspect.ppc64`,
:mod:`klpinspect.audit` and :mod:`klpinspect.report`; it imports neither drgn
nor gdb.  Back ends (:mod:`klpinspect.backends.drgn`, :mod:`klpinspect.backends.gdb`) read
memory and hand plain data to it.  The API names are imported on first use,
so ``import klpinspect`` (the drgn plugin, gdb's start-up) costs nothing.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import (
        CODES,
        Finding,
        FindingCode,
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
    "FindingCode",
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


class _Package(types.ModuleType):
    """``klpinspect.audit`` is the API function, not the submodule of the same name.

    Importing a submodule sets it as an attribute of the package; for
    ``klpinspect/audit.py`` that would hide :func:`klpinspect.api.audit`.  The
    submodule stays importable (``from klpinspect.audit import …`` reads
    ``sys.modules``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "audit" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import :mod:`klpinspect.api` when one of its names is first used."""
    if name in __all__:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'klpinspect' has no attribute {name!r}")
