"""klpinspect inside gdb: the ``klp`` prefix command and its family.

``klp stubs``, ``klp toc``, ``klp audit``, ``klp lpstack``, ``klp bt`` (and
the older spellings ``klp-stubs`` …) take the same arguments as the
``klpinspect`` subcommands: their help text and option parsing come from the
same argument specs (:func:`klpinspect.commands.command_arguments`), and they
print through the same renderers over
:class:`~klpinspect.backends.gdb.target.GdbTarget`.  ``help klp`` lists the family;
TAB completes module names, pids and options.  A failure is one
``gdb.GdbError`` line, never a Python traceback.

Load it with the line ``klpinspect --gdb-script`` prints (``source
…/klpinspect/backends/gdb/load.py``); it imports this module.  drgn is never imported.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable
from typing import Any

from klpinspect.commands import COMMANDS, command_arguments, make_command_parser, run_parsed
from klpinspect.errors import KlpError

__all__ = ("IMPORT_ERROR", "KlpCommand", "KlpPrefix", "register")

gdb: Any = importlib.import_module("gdb")

# A missing dependency (tabulate) must not print a traceback at 'source'
# time: say it once, and again from every command.
IMPORT_ERROR: str | None = None
try:
    importlib.import_module("tabulate")  # imported lazily by the renderers: check once here
except ImportError as _err:
    import sys as _sys

    IMPORT_ERROR = (
        f"cannot import klpinspect: {_err} (gdb's Python {_sys.version.split()[0]}, "
        f"{_sys.prefix}; see gdb/README.md: install it for that Python or set PYTHONPATH)"
    )

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
    target = _STATE["target"]
    key = _connection_key()
    if target is None or key != _STATE["connection"]:
        # First use, or another core file / remote target since the last command.
        _STATE["target"] = None
        # imported on first use: ``source``-ing the loader stays cheap
        from klpinspect.backends.gdb.target import GdbTarget

        target = GdbTarget()
        _STATE["target"], _STATE["connection"] = target, key
    elif target.live:
        # A live target may have run since the last command.
        target.clear_memory_cache()
    return target


def _crashed_task(target: Any) -> int:
    """The ``struct task_struct`` that crashed: ``paca_ptrs[panic_cpu]->__current``
    (what drgn's ``panic_task()`` finds), read through the target (gdb alone reads
    zeros for kernel data in some dumps)."""
    try:
        cpu_addr = int(gdb.parse_and_eval("&panic_cpu"))
        pacas = int(gdb.parse_and_eval("&paca_ptrs"))
        current_off = int(gdb.parse_and_eval("&((struct paca_struct *)0)->__current"))
    except gdb.error as e:
        raise KlpError(f"cannot find the crashed task ({e}): give a PID or task address") from None
    order = target.kernel().byteorder
    cpu = int.from_bytes(target.read(cpu_addr, 4), order, signed=True)
    if cpu < 0:
        raise KlpError("no crashed task in this target (panic_cpu is not set): "
                       "give a PID or task address")
    array = int.from_bytes(target.read(pacas, 8), order)  # struct paca_struct **paca_ptrs
    paca = int.from_bytes(target.read(array + 8 * cpu, 8), order)
    return int.from_bytes(target.read(paca + current_off, 8), order)


def _help_text(sub: str, name: str) -> str:
    """gdb's help for ``name``: the description, then argparse's help, from the specs."""
    parser = make_command_parser(sub, name)
    parser.description = None  # said once, as gdb's one-line summary
    description = COMMANDS[sub]
    return f"{description[0].upper()}{description[1:]}.\n\n{parser.format_help().rstrip()}"


def _completer(sub: str) -> Callable[[], list[str]]:
    """What the positional arguments of ``sub`` name: modules or pids."""
    metavars = {kw.get("metavar") for args, kw in command_arguments(sub) if not args[0][0] == "-"}
    if "MODULE" in metavars:
        return lambda: sorted({m.name for m in _target().modules()})
    if metavars & {"PID", "PID|TASK"}:
        return lambda: [str(t.pid) for t in sorted(_target().tasks(), key=lambda t: t.pid)]
    return list


def _options(sub: str) -> list[str]:
    opts = ["--help"]
    for args, _kw in command_arguments(sub):
        opts += [a for a in args if a.startswith("--")]
    return opts


class KlpCommand(gdb.Command):  # type: ignore[misc]
    """One klpinspect command (its help text is set per instance from the specs)."""

    def __init__(self, sub: str, name: str, doc: str | None = None) -> None:
        self.sub = sub
        self.name = name
        self.__doc__ = doc if doc is not None else _help_text(sub, name)
        self._values = _completer(sub)
        super().__init__(name, gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        if IMPORT_ERROR is not None:
            raise gdb.GdbError(f"{self.name}: {IMPORT_ERROR}")
        # the cyclic collector paused for the whole command: the first one
        # imports the package and reads the symbol tables (tens of thousands of
        # objects, rescanned at each collection), not only the report building
        # (klpinspect.gcpause)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._invoke(argument)
        finally:
            if was_enabled:
                gc.enable()

    def _invoke(self, argument: str) -> None:
        name = self.name
        try:
            argv = gdb.string_to_argv(argument)
            parser = make_command_parser(self.sub, name)
            try:
                args = parser.parse_args(argv)
            except SystemExit:  # --help printed its text
                return
            target = _target()
            if self.sub == "bt" and args.task is None:
                args.task = ("task", _crashed_task(target))
            text, _status = run_parsed(target, self.sub, args)
        except KlpError as err:
            raise gdb.GdbError(f"{name}: {str(err).removeprefix(f'{name}: ')}") from None
        except gdb.GdbError:
            raise
        except gdb.error as err:
            raise gdb.GdbError(f"{name}: gdb: {err}") from None
        except KeyboardInterrupt:
            raise gdb.GdbError(f"{name}: interrupted") from None
        except Exception as err:  # never a traceback in the user's gdb session
            msg = str(err).splitlines()[0] if str(err) else ""
            raise gdb.GdbError(f"{name}: internal error: {type(err).__name__}: {msg}") from None
        gdb.write(text if text.endswith("\n") else text + "\n")

    def complete(self, text: str, word: str | None) -> list[str]:
        """Module names, pids or options completing the last word; nothing on any error."""
        last = "" if not text or text[-1].isspace() else text.split()[-1]
        # gdb's ``word`` starts after its own word-break characters ('-' is one):
        # complete ``last`` and hand back only the part from ``word`` on.
        cut = len(last) - len(word or "")
        if last.startswith("-"):
            return [o[cut:] for o in _options(self.sub) if o.startswith(last)]
        try:
            values = self._values()
        except Exception:  # no kernel loaded yet, unreadable list: complete nothing
            return []
        return [v[cut:] for v in values if v.startswith(last)]


class KlpPrefix(gdb.Command):  # type: ignore[misc]
    """klpinspect: ppc64 module stubs, TOCs, ftrace trampolines and livepatch stacks.

The kernel is the one gdb has loaded (vmlinux with debug info, then a core
file or a remote target).  Each subcommand takes --help and --format table|json."""

    def __init__(self) -> None:
        super().__init__("klp", gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)

    def invoke(self, argument: str, from_tty: bool) -> None:
        if argument.strip():
            word = argument.split()[0]
            raise gdb.GdbError(f"klp: unknown command '{word}' (help klp lists them)")
        gdb.execute("help klp", from_tty)


_REGISTERED: list[Any] = []


def register() -> None:
    """Create the commands (once per gdb session) and hook gdb's events."""
    if _REGISTERED:
        return
    _REGISTERED.append(KlpPrefix())
    for sub in COMMANDS:
        doc = _help_text(sub, f"klp {sub}")
        _REGISTERED.append(KlpCommand(sub, f"klp {sub}", doc))
        # the spelling before `klp`: its help differs only in the usage line's
        # program name, of the same length (argparse wraps the usage alike)
        older = doc.replace(f"usage: klp {sub}", f"usage: klp-{sub}", 1)
        _REGISTERED.append(KlpCommand(sub, f"klp-{sub}", older))
    for event, handler in (
        ("new_objfile", _drop_target),
        ("clear_objfiles", _drop_target),
        ("inferior_deleted", _drop_target),
        ("exited", _drop_target),
        ("connection_removed", _drop_target),
        ("cont", _forget_memory),
        ("memory_changed", _forget_memory),
    ):
        registry = getattr(gdb.events, event, None)
        if registry is not None:
            registry.connect(handler)
