"""``klpinspect``: the command line for vmcores, the running kernel and QEMU guests.

    klpinspect [-c VMCORE] [-s FILE]... [--vmcoreinfo FILE] [--live] [--qemu QMP_SOCKET]
               [--format table|json] {stubs,toc,audit,lpstack,bt,ko,prologue,explain} ...

Exit status: 0 no error finding, 1 at least one error finding, 2 the target or
the arguments could not be used (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .commands import COMMANDS, add_command_arguments, run_parsed
from .errors import EXIT_UNUSABLE, KlpError

if TYPE_CHECKING:  # imported where used: --help, explain and prologue need neither
    from .target import Target

__all__ = ("main", "make_parser", "open_target", "run")

PROG = "klpinspect"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise KlpError(f"{self.prog}: {message}")


def make_parser() -> argparse.ArgumentParser:
    """The ``klpinspect`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Inspect ppc64 module call stubs, ftrace trampolines, TOCs and "
        "livepatch stacks of a kernel: a vmcore, the running kernel or a QEMU guest.",
    )
    tgt = parser.add_argument_group("target")
    tgt.add_argument("-c", "--core", metavar="VMCORE", help="ELF or kdump-compressed vmcore, "
                     "or a QEMU dump-guest-memory file")
    tgt.add_argument("-s", "--symbols", metavar="FILE", action="append", default=[],
                     help="vmlinux / debug file / module .ko or .ko.debug, or a directory "
                     "of them such as /usr/lib/debug (repeatable)")
    tgt.add_argument("--vmcoreinfo", metavar="FILE",
                     help="VMCOREINFO text for dumps that carry none (ppc64 QEMU dumps)")
    tgt.add_argument("--live", action="store_true", help="the running kernel (/proc/kcore)")
    tgt.add_argument("--qemu", metavar="QMP_SOCKET", help="a live QEMU guest's QMP socket")
    dbg = parser.add_argument_group("drgn debug info search")
    dbg.add_argument("--debug-directory", dest="debug_directories", metavar="DIR",
                     action="append", default=[],
                     help="also search DIR for debug info, by build ID (DIR/.build-id/) "
                     "and kernel release (DIR/lib/modules/RELEASE/) (drgn's option; repeatable)")
    dbg.add_argument("--default-symbols", action="store_true",
                     help="also run drgn's default debug info search (/usr/lib/debug, "
                     "/lib/modules/RELEASE, debuginfod) for modules -s does not cover")
    dbg.add_argument("--dwarf", action="store_true",
                     help="load the DWARF of a -s vmlinux even where the kernel's own BTF "
                     "gives the same types (by default only bt, for inlined frames and "
                     "source lines, reads it)")
    # The subcommands take --format too (after the command name); the global one
    # gets its own dest so a subcommand's default does not overwrite it.
    parser.add_argument("--format", dest="global_format", choices=("table", "json"),
                        default="table", help="output format (default: table)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--gdb-script", action=_GdbScriptAction,
                        help="print the gdb 'source' line that loads the klp commands, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, description in COMMANDS.items():
        p = sub.add_parser(name, help=description, description=description)
        add_command_arguments(p, name)
    ko = sub.add_parser("ko", help="lint livepatch/module .ko files before loading them",
                        description="Lint .ko files offline (no kernel needed).")
    ko.add_argument("--format", choices=("table", "json"), default=None)
    ko.add_argument("files", nargs="+", metavar="FILE.ko")
    # ARM32: the 2016 ARM livepatch design's prologue lint (klpinspect.arm32); no target.
    pro = sub.add_parser(
        "prologue", help="classify ARM32 function prologues (vmlinux or .ko) for livepatch",
        description="Classify every function of ARM32 little-endian ELF files (vmlinux or "
        ".ko) by the prologue before its __gnu_mcount_nc call: apcs-frame, apcs-frame-extra, "
        "unwind-tables, thumb2, no-mcount.  Percentages are of the traced functions "
        "(no-mcount: of all functions).  No kernel needed.  See docs/arm32.md.")
    pro.add_argument("--format", choices=("table", "json"), default=None)
    pro.add_argument("--list", action="store_true",
                     help="list every traced function with its class and the reason")
    pro.add_argument("files", nargs="+", metavar="FILE",
                     help="vmlinux or module (.ko, .ko.xz, .ko.gz)")
    explain = sub.add_parser("explain", help="explain a finding code: meaning, kernel "
                             "mechanism, what to do", description="Explain finding codes "
                             "(docs/findings.md holds the same text).")
    explain.add_argument("codes", nargs="*", metavar="CODE",
                         help="finding codes (default: list every code)")
    return parser


class _GdbScriptAction(argparse.Action):
    """``--gdb-script``: print the ``source`` line for gdb and exit (like ``--version``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from .gdb import source_line

        print(source_line())
        parser.exit()


# Commands that need what only DWARF gives: a backtrace's inlined frames,
# source lines and CFI.  The others read the same types from the kernel's BTF.
_DWARF_COMMANDS = frozenset({"bt"})
# Commands whose reports show vmlinux symbol sizes (``name+off/size``): they
# take them from the -s vmlinux's .symtab.  The others name symbols from the
# kernel's own kallsyms, the same names, and the .symtab is left unparsed.
_ELF_SIZE_COMMANDS = frozenset({"ftrace", "bt"})


def open_target(args: argparse.Namespace) -> Target:
    """Open the target the global options name (:func:`klpinspect.api.open_target`)."""
    from .api import open_target as _open_target

    if not os.environ.get("KLPINSPECT_DEBUG"):
        # drgn logs its own warnings ("can't find kernel modules", "missing
        # debugging symbols"); klpinspect says what matters in one line.
        # (Here, not at start-up: drgn imports logging, the other commands need not.)
        import logging

        logging.getLogger("drgn").setLevel(logging.CRITICAL)
    dwarf = args.dwarf or args.command in _DWARF_COMMANDS
    search = args.debug_directories or args.default_symbols or any(
        os.path.isdir(s) for s in args.symbols)
    if not search and not (
        "DRGN_PLUGINS" in os.environ or "DRGN_DISABLE_PLUGINS" in os.environ
    ):
        # No debug info search, only the files named (or none: types from the
        # kernel's BTF, symbols from kallsyms or the -s vmlinux's .symtab,
        # klpinspect.backends.drgn.btf_finder): drgn's plugins -- its own
        # commands, klpinspect's drgn plugin (which does the same for drgn's
        # CLI), debug-info finders -- have nothing to add, and finding and
        # importing them costs 50-100 ms of a 0.4 s audit or backtrace.  The
        # user's own DRGN_PLUGINS / DRGN_DISABLE_PLUGINS still decide.
        os.environ["DRGN_DISABLE_PLUGINS"] = "*"
    return _open_target(
        args.core,
        symbols=args.symbols,
        vmcoreinfo=args.vmcoreinfo,
        live=args.live,
        qemu=args.qemu,
        debug_directories=args.debug_directories,
        default_symbols=args.default_symbols,
        dwarf=dwarf,
        elf_sizes=args.command in _ELF_SIZE_COMMANDS,
    )


def _run(argv: Sequence[str] | None) -> int:
    args = make_parser().parse_args(argv)
    if args.command is None:
        raise KlpError(
            f"{PROG}: give a command: {', '.join([*COMMANDS, 'ko', 'prologue', 'explain'])}")
    fmt = args.global_format
    if args.command == "explain":
        from .findings import explain

        text, status = explain(args.codes)
        sys.stdout.write(text)
        return status
    if args.command == "ko":
        from .ko import lint_files
        from .report import FindingCode, render

        report, status = lint_files(args.files)
        status = int(status)
        for f in report.findings:  # one line per file that could not be linted
            if f.code is FindingCode.KO_UNREADABLE:
                print(f"{PROG}: {f.file}: {f.message}", file=sys.stderr)
        sys.stdout.write(render(report, args.format or fmt))
        return status
    if args.command == "prologue":
        from .arm32.report import lint_prologue_files, render_prologues

        result = lint_prologue_files(args.files)
        for path, reason in result.errors:  # one line per file that could not be read
            print(f"{PROG}: {path}: {reason}", file=sys.stderr)
        sys.stdout.write(render_prologues(result, args.format or fmt, listing=args.list))
        return result.exit_status
    text, status = run_parsed(open_target(args), args.command, args, fmt)
    sys.stdout.write(text)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the exit status."""
    try:
        return _run(argv)
    except KlpError as e:
        msg = str(e).removeprefix(PROG + ": ")
        # argparse's own "klpinspect lpstack: ..." already names the program
        print(msg if msg.startswith(PROG + " ") else f"{PROG}: {msg}", file=sys.stderr)
        return EXIT_UNUSABLE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_UNUSABLE
    except Exception as e:  # never a traceback for a user; KLPINSPECT_DEBUG=1 shows it
        if os.environ.get("KLPINSPECT_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"{PROG}: internal error: {type(e).__name__}: {msg} "
              "(KLPINSPECT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_UNUSABLE


def run() -> NoReturn:
    """The ``klpinspect`` command (console script, ``python3 -m klpinspect``):
    :func:`main` with the cyclic garbage collector paused, then an exit without
    the interpreter's teardown.

    Python frees every object one by one when it exits -- the report, the symbol
    and type tables, the drgn program: ~30 ms of a 0.3 s audit of Debian's 6.12
    kernel; the kernel frees the process at once.  The output is flushed and
    the exit handlers run (the QMP back end's scratch files) first, as at a
    normal exit.  A normal exit all the same under a tracer or profiler
    (coverage; ``python -m cProfile -o`` writes its file after the code
    returns) and with ``KLPINSPECT_DEBUG``.
    """
    import atexit
    import gc

    # paused for the whole command, as the audit and the stack walks already
    # pause it: its collections while the modules are imported and the BTF is
    # read cost ~5-10 ms and free almost nothing; reference counting frees the rest
    gc.disable()
    status = main()
    if (sys.gettrace() is not None or sys.getprofile() is not None
            or os.environ.get("KLPINSPECT_DEBUG")):
        sys.exit(status)
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # a reader that stopped early (| head): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        status = status or EXIT_UNUSABLE
    try:
        sys.stderr.flush()
    except OSError:
        pass
    atexit._run_exitfuncs()
    os._exit(status)


if __name__ == "__main__":
    run()
