"""Source this file from gdb to get the ``klp`` commands.

    (gdb) source /path/to/site-packages/klpinspect/gdb_load.py

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


def _load() -> None:
    if "__file__" in globals():
        parent = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        if parent not in (os.path.realpath(p or os.curdir) for p in sys.path):
            sys.path.insert(0, parent)
    commands = importlib.import_module("klpinspect.gdb_commands")
    if commands.IMPORT_ERROR is not None:
        _gdb.write(f"klpinspect: {commands.IMPORT_ERROR}\n", _gdb.STDERR)
    commands.register()


_load()
