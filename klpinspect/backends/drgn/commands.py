"""drgn plugin: ``%klp-stubs``, ``%klp-toc``, ``%klp-audit``, ``%klp-lpstack``, ``%klp-bt``,
``%klp-ftrace``.

Registered through the ``drgn.plugins`` entry point (``setup.cfg``), so after
``pip install .`` a plain ``drgn -c VMCORE -s VMLINUX`` has them.  They take
the same arguments as the ``klpinspect`` subcommands and print through the
same renderers (:mod:`klpinspect.commands`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import drgn
from drgn.commands import argument
from drgn.commands.linux import linux_kernel_command

from klpinspect.commands import COMMANDS, command_arguments, run_parsed
from klpinspect.errors import KlpError

from .program import translating_program
from .target import DrgnTarget

__all__ = ("drgn_target",)

# One DrgnTarget per program, so kernel facts, the module list and the symbol
# table are read once per session.  drgn.Program takes no weak references:
# keyed by id(), holding the program (a session has one, for its lifetime).
_TARGETS: dict[int, tuple[drgn.Program, DrgnTarget]] = {}


def _kind(prog: drgn.Program) -> str:
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        return "live"
    return "vmcore"


def drgn_target(prog: drgn.Program) -> DrgnTarget:
    """The cached :class:`DrgnTarget` for ``prog``."""
    entry = _TARGETS.get(id(prog))
    if entry is not None and entry[0] is prog:
        return entry[1]
    # A kdump-compressed ppc64 dump opened by drgn itself cannot read module
    # (vmalloc) memory; translating_program() swaps in one that can.
    target = DrgnTarget(translating_program(prog), _kind(prog))
    _TARGETS[id(prog)] = (prog, target)
    return target


def _register(sub: str) -> None:
    name = f"klp-{sub}"

    def run(prog: drgn.Program, _name: str, args: argparse.Namespace, **kwargs: Any) -> None:
        try:
            text, _status = run_parsed(drgn_target(prog), sub, args)
        except KlpError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return
        sys.stdout.write(text)

    linux_kernel_command(
        name=name,
        description=COMMANDS[sub],
        arguments=[argument(*a, **kw) for a, kw in command_arguments(sub)],
    )(run)


for _sub in COMMANDS:
    _register(_sub)
