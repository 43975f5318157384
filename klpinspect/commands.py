"""The subcommands every front end shares: parsing and running them over a Target.

The CLI, the drgn plugin (``%klp-stubs`` …) and the gdb commands (``klp stubs``
…) all parse with :func:`command_arguments` and run through :func:`run_report`
(the :mod:`klpinspect.api` calls), so names, options and output are the same
everywhere.  Light on purpose: the drgn plugin and gdb import it at start-up.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import KlpError

if TYPE_CHECKING:  # imported on first use: the drgn plugin and gdb load this module at start
    from .report import Report
    from .target import Target

__all__ = (
    "BTF_BACKTRACE_NOTE",
    "BTF_SYMBOL_SIZE_NOTE",
    "BTF_SYMTAB_BACKTRACE_NOTE",
    "COMMANDS",
    "CommandError",
    "add_command_arguments",
    "command_arguments",
    "make_command_parser",
    "pid_or_task",
    "run_command",
    "run_parsed",
    "run_report",
)

# name -> one-line description (the front ends use it for help text)
COMMANDS: dict[str, str] = {
    "stubs": "decode every used .stubs slot of the modules, with targets resolved",
    "toc": "show each module's TOC and check that its stubs imply it",
    "audit": "run every check: stubs, TOCs, ftrace trampolines, call sites, livepatch stacks",
    "lpstack": "walk the per-task livepatch stacks (saved r2, saved LR, end marker)",
    "bt": "backtrace of a task corrected through livepatch_handler frames",
    "ftrace": "every function ftrace redirects, by which ftrace_ops, for which livepatch",
}


# What a backtrace lacks when types and symbols come from BTF and kallsyms
# (klpinspect.backends.drgn.btf_finder) rather than DWARF.
BTF_BACKTRACE_NOTE = (
    "no debug info: types from the kernel's BTF, symbols from kallsyms; "
    "no inlined frames and no source lines (give -s VMLINUX for them), "
    "symbol sizes run to the next kallsyms symbol as in the kernel's %pS"
)
# The same with a vmlinux whose DWARF was left unread (api.open_target(dwarf=False)).
BTF_SYMTAB_BACKTRACE_NOTE = (
    "types from the kernel's BTF, symbols from the vmlinux .symtab, its DWARF not "
    "loaded: no inlined frames and no source lines (open the target with DWARF for them)"
)


# What ``ftrace`` (or any report naming vmlinux functions ``name+off/size``)
# shows differently with kallsyms: the kernel keeps no symbol sizes, so a
# size is the distance to the next kallsyms symbol -- the function's ELF
# ``st_size`` plus the padding to the next function's alignment.
BTF_SYMBOL_SIZE_NOTE = (
    "no debug info: symbols from kallsyms, whose sizes run to the next kallsyms "
    "symbol as in the kernel's %pS (the debug vmlinux's ELF sizes can be smaller "
    "by the alignment padding after a function; give -s VMLINUX for them)"
)


class CommandError(KlpError):
    """Bad command arguments (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: {message}")


def _pid(text: str) -> int:
    try:
        value = int(text, 10)  # pids are decimal, as ps and crash print them
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pid: '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a pid: '{text}'")
    return value


def pid_or_task(text: str) -> tuple[str, int]:
    """``("pid", N)`` for a decimal number, else ``("task", ADDRESS)`` for a hex one.

    The rule of drgn's crash commands (``bt 130``, ``bt c000000003a8c200``).
    """
    try:
        value = int(text, 10)
        kind = "pid"
    except ValueError:
        try:
            value = int(text, 16)
            kind = "task"
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a pid or task address: '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a pid or task address: '{text}'")
    return kind, value


ArgSpec = tuple[tuple[str, ...], dict[str, Any]]


def command_arguments(name: str) -> list[ArgSpec]:
    """The arguments of subcommand ``name`` as ``(args, kwargs)`` for ``add_argument``.

    One list feeds argparse (CLI, gdb) and drgn's ``argument()`` (drgn plugin).
    """
    specs: list[ArgSpec] = [
        (("--format",), {"choices": ("table", "json"), "default": None,
                         "help": "output format (table)"}),
    ]
    if name in ("stubs", "toc", "audit", "ftrace"):
        specs.append((("modules",), {"nargs": "*", "metavar": "MODULE", "help": "module names"}))
    if name == "toc":
        specs.append((("--callsites",), {"action": "store_true",
                                         "help": "also check every call into a stub"}))
    if name == "audit":
        specs.append((("--no-callsites",), {"action": "store_true",
                                            "help": "skip the call-site scan"}))
        specs.append((("--no-tasks",), {"action": "store_true",
                                        "help": "skip the livepatch stack walk"}))
    if name == "lpstack":
        specs.append((("pids",), {"nargs": "*", "type": _pid, "metavar": "PID",
                                  "help": "task pids"}))
    if name == "bt":
        specs.append((("task",), {"nargs": "?", "type": pid_or_task, "metavar": "PID|TASK",
                                  "help": "decimal pid or hex task_struct address "
                                          "(default: the task that crashed)"}))
    return specs


def add_command_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Add the arguments of subcommand ``name`` (and ``--format``) to ``parser``."""
    for args, kwargs in command_arguments(name):
        parser.add_argument(*args, **kwargs)


def make_command_parser(name: str, prog: str) -> argparse.ArgumentParser:
    """A parser for one subcommand whose errors raise :class:`CommandError`."""
    if name not in COMMANDS:
        raise CommandError(f"unknown command '{name}'")
    parser = _Parser(prog=prog, description=COMMANDS[name], add_help=True)
    add_command_arguments(parser, name)
    return parser


def run_report(target: Target, name: str, args: argparse.Namespace) -> Report:
    """Run subcommand ``name`` with parsed ``args`` over ``target``: the
    :mod:`klpinspect.api` call behind each command."""
    from . import api

    if name == "stubs":
        return api.stubs(target, args.modules)
    if name == "toc":
        return api.toc(target, args.modules, callsites=args.callsites)
    if name == "audit":
        return api.audit(
            target, args.modules, callsites=not args.no_callsites, lpstack=not args.no_tasks
        )
    if name == "ftrace":
        return api.ftrace(target, args.modules)
    if name == "lpstack":
        return api.livepatch_stacks(target, args.pids or None)
    if name == "bt":
        task = None if args.task is None else api.TaskRef(*args.task)
        return api.backtrace(target, task)
    raise CommandError(f"unknown command '{name}'")


def run_parsed(
    target: Target, name: str, args: argparse.Namespace, fmt: str = "table"
) -> tuple[str, int]:
    """Run subcommand ``name`` with parsed ``args``; returns (output text, exit status)."""
    report = run_report(target, name, args)
    return report.render(args.format or fmt), report.exit_status


def run_command(
    target: Target,
    name: str,
    argv: Sequence[str],
    *,
    prog: str | None = None,
    fmt: str = "table",
) -> tuple[str, int]:
    """Parse ``argv`` for subcommand ``name`` and run it over ``target``.

    :raises KlpError: bad arguments or an unusable target (exit status 2)
    """
    args = make_command_parser(name, prog or f"klp-{name}").parse_args(list(argv))
    return run_parsed(target, name, args, fmt)
