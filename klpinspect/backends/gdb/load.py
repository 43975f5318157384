"""Source this file from gdb to get the ``klp`` commands.

    (gdb) source /path/to/site-packages/klpinspect/backends/gdb/load.py

``klpinspect --gdb-script`` (or ``python3 -m klpinspect.gdb``) prints that
line for the installed package; put it in ``~/.gdbinit`` or load it by hand.
gdb's embedded Python does not see a virtualenv, so the directory holding
this package is put first on gdb's ``sys.path``: the commands come from the
package this file belongs to.  Its only non-stdlib need is ``tabulate``
(Debian: ``python3-tabulate``).
"""

import importlib
import os
import sys

_gdb = importlib.import_module("gdb")


def _package_parent() -> str | None:
    """The directory holding the ``klpinspect`` package this loader belongs to.

    ``__file__`` is this file when gdb sources it, but stays the outer file's
    when another script sources it (``gdb/klpinspect.py``,
    ``gdb/vmlinux-gdb.py``): the first directory above it holding
    ``klpinspect/backends/gdb/load.py`` is the checkout either way.
    """
    if "__file__" not in globals():
        return None
    here = os.path.dirname(os.path.realpath(__file__))
    while not os.path.isfile(os.path.join(here, "klpinspect", "backends", "gdb", "load.py")):
        up = os.path.dirname(here)
        if up == here:
            return None  # sourced from outside a checkout: the installed package
        here = up
    return here


def _load() -> None:
    parent = _package_parent()
    if parent is not None:
        if parent not in (os.path.realpath(p or os.curdir) for p in sys.path):
            sys.path.insert(0, parent)
    commands = importlib.import_module("klpinspect.backends.gdb.commands")
    if commands.IMPORT_ERROR is not None:
        _gdb.write(f"klpinspect: {commands.IMPORT_ERROR}\n", _gdb.STDERR)
    commands.register()


_load()
