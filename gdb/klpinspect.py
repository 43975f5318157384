"""klpinspect inside gdb: ``klp-stubs``, ``klp-toc``, ``klp-lpstack``, ``klp-bt``, ``klp-audit``,
``klp-ftrace``.

Load it with ``source gdb/klpinspect.py``, or let gdb auto-load it beside
vmlinux (``gdb/vmlinux-gdb.py``; see the README).  The commands take the same
arguments as the ``klpinspect`` subcommands and print through the same
renderers, over :class:`klpinspect.backends.gdb.target.GdbTarget`::

    gdb-multiarch -ex 'set architecture powerpc:common64' \\
        -ex 'file vmlinux' -ex 'symbol-file vmlinux.debug' -ex 'core-file vmcore' \\
        -ex 'source gdb/klpinspect.py' -ex 'klp-audit'

gdb's embedded Python does not see a virtualenv: the package is found when
installed for gdb's Python (or on ``PYTHONPATH``), else from the source
checkout this file sits in.  Its only non-stdlib need is ``tabulate``
(Debian: ``python3-tabulate``).  drgn is never imported here.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# Imported by name: this file's directory is called gdb/ too.
gdb: Any = importlib.import_module("gdb")


def _import_klpinspect() -> None:
    """Make ``import klpinspect`` find the package, not this file."""
    here = os.path.dirname(os.path.realpath(__file__)) if "__file__" in globals() else ""
    try:
        import klpinspect

        if hasattr(klpinspect, "__path__"):
            return
        del sys.modules["klpinspect"]  # this script, imported by name from gdb/
    except ImportError:
        pass
    checkout = os.path.dirname(here) if here else os.getcwd()
    sys.path = [p for p in sys.path if os.path.realpath(p or ".") != here]
    sys.path.insert(0, checkout)


_import_klpinspect()

# A missing dependency (tabulate) must not print a traceback at 'source'
# time: say it once, and again from every command.
_IMPORT_ERROR: str | None = None
try:
    import tabulate  # noqa: F401  (klpinspect imports it lazily; check it here, once)

    from klpinspect.commands import COMMANDS, make_command_parser, run_parsed
    from klpinspect.errors import KlpError
except ImportError as _err:
    _IMPORT_ERROR = (
        f"cannot import klpinspect: {_err} (gdb's Python {sys.version.split()[0]}, "
        f"{sys.prefix}; see gdb/README.md: install it for that Python or set PYTHONPATH)"
    )
    gdb.write(f"klpinspect: {_IMPORT_ERROR}\n", gdb.STDERR)
    COMMANDS = {"stubs": "", "toc": "", "lpstack": "", "bt": "", "audit": "", "ftrace": ""}

    class KlpError(Exception):  # type: ignore[no-redef]
        """Stand-in: nothing raises it without the package."""

# One target per session; dropped when gdb loads or unloads an objfile (new
# kernel or symbols: types may have changed) or the inferior goes away.
_STATE: dict[str, Any] = {"target": None, "connection": None}


def _drop_target(*_args: object) -> None:
    _STATE["target"] = None


def _forget_memory(*_args: object) -> None:
    target = _STATE["target"]
    if target is not None:
        target.clear_memory_cache()


def _connection_key() -> tuple[int, str] | None:
    conn = gdb.selected_inferior().connection
    return None if conn is None else (conn.num, conn.type)


def _target() -> Any:
    from klpinspect.backends.gdb.target import GdbTarget

    target = _STATE["target"]
    key = _connection_key()
    if target is None or key != _STATE["connection"]:
        # First use, or another core file / remote target since the last command.
        _STATE["target"] = None
        target = GdbTarget()
        _STATE["target"], _STATE["connection"] = target, key
    elif target.live:
        # A live target may have run since the last command.
        target.clear_memory_cache()
    return target


class _KlpCommand(gdb.Command):  # type: ignore[misc]
    sub = ""

    def __init__(self) -> None:
        super().__init__(f"klp-{self.sub}", gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        name = f"klp-{self.sub}"
        self.dont_repeat()
        if _IMPORT_ERROR is not None:
            raise gdb.GdbError(f"{name}: {_IMPORT_ERROR}")
        try:
            argv = gdb.string_to_argv(argument)
            parser = make_command_parser(self.sub, name)
            try:
                args = parser.parse_args(argv)
            except SystemExit:  # --help printed its text
                return
            text, _status = run_parsed(_target(), self.sub, args)
        except KlpError as err:
            raise gdb.GdbError(f"{name}: {_strip(str(err), name)}") from None
        except gdb.GdbError:
            raise
        except gdb.error as err:
            raise gdb.GdbError(f"{name}: gdb: {err}") from None
        except KeyboardInterrupt:
            raise gdb.GdbError(f"{name}: interrupted") from None
        except Exception as err:  # never a traceback in the user's gdb session
            raise gdb.GdbError(f"{name}: internal error: {type(err).__name__}: {err}") from None
        gdb.write(text if text.endswith("\n") else text + "\n")


def _strip(message: str, name: str) -> str:
    return message.removeprefix(f"{name}: ")


class KlpStubs(_KlpCommand):
    """Decode every used .stubs slot of the modules, with targets resolved.

Usage: klp-stubs [--format table|json] [MODULE...]"""

    sub = "stubs"


class KlpToc(_KlpCommand):
    """Show each module's TOC and check that its stubs imply it.

Usage: klp-toc [--format table|json] [--callsites] [MODULE...]"""

    sub = "toc"


class KlpLpstack(_KlpCommand):
    """Walk the per-task livepatch stacks (saved r2, saved LR, end marker).

Usage: klp-lpstack [--format table|json] [PID...]"""

    sub = "lpstack"


class KlpBt(_KlpCommand):
    """Backtrace of a task corrected through livepatch_handler frames.

Usage: klp-bt [--format table|json] PID"""

    sub = "bt"


class KlpAudit(_KlpCommand):
    """Run every check: stubs, TOCs, ftrace trampolines, call sites, livepatch stacks.

Usage: klp-audit [--format table|json] [--no-callsites] [--no-tasks] [MODULE...]"""

    sub = "audit"


class KlpFtrace(_KlpCommand):
    """Every function ftrace redirects, by which ftrace_ops, for which livepatch klp_func.

Usage: klp-ftrace [--format table|json] [MODULE...]"""

    sub = "ftrace"


_CLASSES = (KlpStubs, KlpToc, KlpLpstack, KlpBt, KlpAudit, KlpFtrace)
assert {c.sub for c in _CLASSES} == set(COMMANDS)

for _cls in _CLASSES:
    _cls()

for _event, _handler in (
    ("new_objfile", _drop_target),
    ("clear_objfiles", _drop_target),
    ("inferior_deleted", _drop_target),
    ("exited", _drop_target),
    ("connection_removed", _drop_target),
    ("cont", _forget_memory),
    ("memory_changed", _forget_memory),
):
    _registry = getattr(gdb.events, _event, None)
    if _registry is not None:
        _registry.connect(_handler)
