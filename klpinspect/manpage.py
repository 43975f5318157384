"""``klpinspect(1)``: the man page, generated from the argparse parser.

``python3 -m klpinspect.manpage > man/klpinspect.1`` writes it; the package
installs ``man/klpinspect.1`` (``setup.cfg`` ``data_files``) and a test
checks the file is current, so the options in the page are the parser's.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .cli import make_parser

__all__ = ("manpage",)


def _esc(text: str) -> str:
    """roff-escape running text."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{_esc(action.metavar or action.dest)}\\fR"  # type: ignore[arg-type]
    opts = ", ".join(f"\\fB{_esc(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return opts
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
    )
    return f"{opts} \\fI{_esc(str(metavar))}\\fR"


def _options(actions: list[argparse.Action]) -> list[str]:
    out = []
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        out += [".TP", _invocation(action), _esc(action.help or "")]
    return out


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    return " ".join(usage.split())


def manpage() -> str:
    """The roff source of ``klpinspect(1)``."""
    from .findings import EXPLANATIONS
    from .report import CODES

    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        f'.TH KLPINSPECT 1 "" "klpinspect {__version__}" "User Commands"',
        ".SH NAME",
        "klpinspect \\- " + _esc(
            "inspect ppc64 module call stubs, ftrace trampolines, TOCs and livepatch stacks"
        ),
        ".SH SYNOPSIS",
        ".B klpinspect",
        _esc(_usage(parser).removeprefix("klpinspect ")),
        ".SH DESCRIPTION",
        _esc(parser.description or ""),
        ".PP",
        _esc("The same commands exist in drgn (%klp-audit ..., also under %crash) and in gdb "
             "(klp audit ...; load them with the line klpinspect --gdb-script prints)."),
        ".SH OPTIONS",
    ]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        if group.title not in ("options", "optional arguments", "positional arguments"):
            lines += [".SS", _esc(group.title or "")]
        lines += _options(actions)
    lines.append(".SH COMMANDS")
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, subparser in sub.choices.items():
        lines += [
            ".SS",
            f"\\fB{_esc(name)}\\fR",
            _esc(helps.get(name) or subparser.description or ""),
            ".PP",
            ".B klpinspect",
            _esc(_usage(subparser).removeprefix("klpinspect ")),
        ]
        lines += _options([a for a in subparser._actions
                           if not isinstance(a, argparse._HelpAction)])
    lines += [
        ".SH EXIT STATUS",
        ".TP", "0", "no error finding",
        ".TP", "1", "at least one error finding",
        ".TP", "2", _esc("the target or the arguments could not be used "
                         "(one line on standard error)"),
        ".SH FINDING CODES",
        _esc("klpinspect explain CODE prints what a code means, the kernel mechanism behind it "
             "and what to do."),
    ]
    for code, severity in CODES.items():
        lines += [".TP", f"\\fB{_esc(code)}\\fR ({severity.value})",
                  _esc(EXPLANATIONS[code].meaning)]
    lines += [
        ".SH ENVIRONMENT",
        ".TP", "KLPINSPECT_DEBUG", _esc("show Python tracebacks and drgn's log"),
        ".TP", "KLPINSPECT_JOBS", _esc("1: run an audit in one process (by default the call-site "
                                       "scan of a vmcore read without DWARF runs in a forked "
                                       "child on a second CPU)"),
        ".TP", "XDG_CACHE_HOME", _esc("decompressed .ko debug files are cached in "
                                      "$XDG_CACHE_HOME/klpinspect (~/.cache/klpinspect)"),
        ".SH SEE ALSO",
        ".BR drgn (1),",
        ".BR gdb (1),",
        ".BR crash (8),",
        ".BR makedumpfile (8)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manpage())
