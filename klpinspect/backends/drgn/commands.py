"""drgn plugin: ``%klp-stubs``, ``%klp-toc``, ``%klp-audit``, ``%klp-lpstack``, ``%klp-bt``,
``%klp-ftrace``.

Registered through the ``drgn.plugins`` entry point, so after ``pip install``
a plain ``drgn -c VMCORE -s VMLINUX`` has them, and ``%crash`` (drgn's
crash-compatible namespace) has them too.  They behave like drgn's own
commands:

* ``--help`` prints help built from the same argument specs as the
  ``klpinspect`` subcommands (:func:`klpinspect.commands.command_arguments`);
* the command returns the :class:`~klpinspect.report.Report`, so
  ``report = run_command(prog, "klp-audit")`` works in a script;
* a target or argument problem raises :class:`drgn.commands.CommandError`; a
  report with error findings raises :class:`KlpFindingsError` (drgn's
  :class:`~drgn.commands.CommandExitStatusError`, exit status 1) after
  printing it, carrying the report;
* they are enabled only for ppc64 Linux kernels.

Importing this module costs drgn's start-up almost nothing: the argument
specs are plain data, and the checks (and their dependencies) are imported
the first time a command runs.

For a kdump-compressed ppc64 dump opened by drgn itself, the
``drgn_prog_set`` hook adds one virtual memory segment to the user's own
program: libkdumpfile cannot translate module (vmalloc) addresses on ppc64,
so the segment translates them with drgn's own radix page-table walker,
reading physical memory through libkdumpfile.  drgn's helpers then read
module memory too (``for_each_module(prog)``).

For a kernel whose vmlinux has no DWARF (no ``-s``, no debug package), the
same hook registers lazy type, object and symbol finders over the kernel's
own BTF and kallsyms (:func:`klpinspect.backends.drgn.btf_finder.register_lazy_btf`),
so drgn's helpers and the klp commands work on a debuginfo-less vmcore;
the kdump segment then walks page tables with types from that BTF.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

import drgn
from drgn.commands import CommandError, CommandExitStatusError, argument, command

from klpinspect.commands import COMMANDS, command_arguments
from klpinspect.errors import KlpError
from klpinspect.ppc64.radix import PAGE_OFFSET

if TYPE_CHECKING:
    from klpinspect.report import Report

__all__ = ("KlpFindingsError", "drgn_prog_set", "is_ppc64_kernel")

# Where the ppc64 linear map ends: vmalloc / module space starts here on Book3S
# (0xc008… radix 64K); vmemmap and I/O space follow, up to 0xc010….
_LINEAR_MAP_END = 0xC008000000000000
_NON_LINEAR_END = 0xC010000000000000


def is_ppc64_kernel(prog: drgn.Program) -> bool:
    """The ``enabled=`` test of every klp command: a ppc64 Linux kernel."""
    return bool(
        prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
        and prog.platform is not None
        and prog.platform.arch == drgn.Architecture.PPC64
    )


class KlpFindingsError(CommandExitStatusError):
    """A klp command found errors: exit status 1, with the printed report attached."""

    def __init__(self, command: str, report: Report) -> None:
        super().__init__(command, report.exit_status)
        self.report = report

    def __str__(self) -> str:
        errors = sum(1 for f in self.report.findings if f.level.value == "error")
        return f"{self.command}: {errors} error finding(s) (exit status {self.exit_status})"


_HELP = (("-h", "--help"), {"action": "store_true", "help": "show this help message and exit"})


def _arguments(sub: str) -> list[argument]:
    return [argument(*a, **kw) for a, kw in [_HELP, *command_arguments(sub)]]


def _make_command(sub: str) -> Any:
    def run(
        prog: drgn.Program,
        name: str,
        args: argparse.Namespace,
        *,
        parser: argparse.ArgumentParser,
        **kwargs: Any,
    ) -> Report | None:
        if args.help:
            sys.stdout.write(parser.format_help())
            return None
        from klpinspect.api import target_from_drgn
        from klpinspect.commands import run_report

        try:
            report = run_report(target_from_drgn(prog), sub, args)
        except KlpError as e:
            raise CommandError(f"{name}: {str(e).removeprefix(name + ': ')}") from None
        sys.stdout.write(report.render(args.format or "table"))
        if report.exit_status:
            raise KlpFindingsError(name, report)
        return report

    run.__name__ = f"_cmd_klp_{sub}"
    return run


def _register() -> None:
    namespaces: list[Any] = [None]
    try:
        # drgn's crash-compatible namespace (``%crash klp-audit``, drgn-crash).
        from drgn.commands._crash.common import CRASH_COMMAND_NAMESPACE

        namespaces.append(CRASH_COMMAND_NAMESPACE)
    except ImportError:  # a drgn without the crash commands
        pass
    for sub, description in COMMANDS.items():
        func = _make_command(sub)
        for namespace in namespaces:
            kwargs: dict[str, Any] = {} if namespace is None else {"namespace": namespace}
            command(
                name=f"klp-{sub}",
                description=description,
                long_description=f"{description[0].upper()}{description[1:]}.",
                arguments=_arguments(sub),
                enabled=is_ppc64_kernel,
                **kwargs,
            )(func)


_register()


def _is_kdump_file(path: str | None) -> bool:
    if not path:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head in (b"KDUMP   ", b"DISKDUMP")


def _add_module_memory_segment(prog: drgn.Program) -> None:
    """One virtual segment over non-linear kernel space, read through drgn's own
    page-table walk of a helper program whose linear map reads ``prog``'s
    physical memory (made on the first read, when the kernel's debug info
    is loaded)."""
    platform = prog.platform
    assert platform is not None
    state: dict[str, drgn.Program] = {}

    def physical(address: int, count: int, offset: int, physical: bool) -> bytes:
        data: bytes = prog.read(offset, count, True)
        return data

    def read(address: int, count: int, offset: int, physical_: bool) -> bytes:
        helper = state.get("helper")
        if helper is None:
            from .program import _custom_kernel_program, _kernel_vmcoreinfo

            info = _kernel_vmcoreinfo(prog)
            if not info:
                raise drgn.FaultError("no VMCOREINFO to translate module addresses", address)
            helper = _custom_kernel_program(
                platform, info, [(0, _LINEAR_MAP_END - PAGE_OFFSET, physical)]
            )
            # drgn's ppc64 walker reads cur_cpu_spec (radix or hash): it needs the
            # kernel's types, from the debug info the user's program has loaded
            # by now, else from the kernel's BTF and kallsyms.
            try:
                main = prog.main_module()
            except LookupError:
                raise drgn.FaultError("no kernel debug info yet to translate", address) from None
            vmlinux = main.debug_file_path
            if vmlinux:
                helper.load_debug_info([vmlinux], main=True)
            else:
                from .btf_finder import enable_btf

                try:
                    enable_btf(helper)
                except LookupError as e:
                    msg = f"cannot translate module addresses: {e}"
                    raise drgn.FaultError(msg, address) from None
            state["helper"] = helper
        data: bytes = helper.read(address, count)
        return data

    prog.add_memory_segment(
        _LINEAR_MAP_END, _NON_LINEAR_END - _LINEAR_MAP_END, read, False
    )
    prog.cache["klpinspect_module_segment"] = True


def drgn_prog_set(prog: drgn.Program) -> None:
    """drgn's plugin hook, called when a program's target is set.

    * a drgn-opened kdump-compressed ppc64 dump: module memory made readable;
    * a ppc64 kernel whose vmlinux turns out to have no DWARF: types, globals
      and symbols from the kernel's own BTF and kallsyms (lazy finders that
      stay silent when drgn loads vmlinux debug info).
    """
    if os.environ.get("KLPINSPECT_NO_PROGRAM_HOOK"):
        return
    from .btf_finder import register_lazy_btf

    register_lazy_btf(prog)  # any Linux kernel; finders registered by name, once
    if not is_ppc64_kernel(prog) or prog.flags & drgn.ProgramFlags.IS_LIVE:
        return
    if prog.cache.get("klpinspect_module_segment"):
        return  # loaded under two plugin names
    if _is_kdump_file(getattr(prog, "core_dump_path", None)):
        _add_module_memory_segment(prog)
