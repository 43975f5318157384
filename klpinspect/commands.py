"""The subcommands every front end shares: parsing and running them over a Target.

The CLI, the drgn plugin (``%klp-stubs`` …) and the gdb commands (``klp-stubs``
…) all call :func:`run_command`, so names, options and output are the same
everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from .errors import KlpError
from .report import Report, render
from .target import Target

__all__ = (
    "COMMANDS",
    "CommandError",
    "add_command_arguments",
    "command_arguments",
    "make_command_parser",
    "run_command",
    "run_parsed",
)

# name -> one-line description (the front ends use it for help text)
COMMANDS: dict[str, str] = {
    "stubs": "decode every used .stubs slot of the modules, with targets resolved",
    "toc": "show each module's TOC and check that its stubs imply it",
    "audit": "run every check: stubs, TOCs, ftrace trampolines, call sites, livepatch stacks",
    "lpstack": "walk the per-task livepatch stacks (saved r2, saved LR, end marker)",
    "bt": "backtrace of a task corrected through livepatch_handler frames",
}


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


ArgSpec = tuple[tuple[str, ...], dict[str, Any]]


def command_arguments(name: str) -> list[ArgSpec]:
    """The arguments of subcommand ``name`` as ``(args, kwargs)`` for ``add_argument``.

    One list feeds argparse (CLI, gdb) and drgn's ``argument()`` (drgn plugin).
    """
    specs: list[ArgSpec] = [
        (("--format",), {"choices": ("table", "json"), "default": None,
                         "help": "output format (table)"}),
    ]
    if name in ("stubs", "toc", "audit"):
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
        specs.append((("pid",), {"type": _pid, "metavar": "PID", "help": "task pid"}))
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


def _report_for(target: Target, name: str, args: argparse.Namespace) -> Report:
    from . import audit as _audit

    if name == "stubs":
        return _audit.stubs_report(target, args.modules)
    if name == "toc":
        return _audit.toc_report(target, args.modules, callsites=args.callsites)
    if name == "audit":
        return _audit.audit(
            target, args.modules, callsites=not args.no_callsites, tasks=not args.no_tasks
        )
    from .livepatch import audit_livepatch_stacks, klp_backtrace

    tocs = _audit.tocs_for(target)
    if name == "lpstack":
        kernel = target.kernel()
        report = _audit.new_report(target, kernel, ("tasks", "findings"))
        records, findings = audit_livepatch_stacks(target, tocs, pids=args.pids or None)
        report.tasks = records
        report.extend(findings)
        report.extend(_audit._damage_findings(target))  # a task list that loops, ...
        return report
    if name == "bt":
        report = klp_backtrace(target, args.pid, tocs)
        damage = _audit._damage_findings(target)
        if damage:
            report.extend(damage)
            if "findings" not in report.sections:
                report.sections = (*report.sections, "findings")
        return report
    raise CommandError(f"unknown command '{name}'")


def run_parsed(
    target: Target, name: str, args: argparse.Namespace, fmt: str = "table"
) -> tuple[str, int]:
    """Run subcommand ``name`` with parsed ``args``; returns (output text, exit status)."""
    report = _report_for(target, name, args)
    return render(report, args.format or fmt), report.exit_status


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
