"""Compatibility shim: ``source gdb/klpinspect.py`` loads the package's gdb commands.

The commands live in the package (``klpinspect/backends/gdb/commands.py``,
loaded by ``klpinspect/backends/gdb/load.py``) so a wheel install has them:
prefer the line ``klpinspect --gdb-script`` prints.  This file only sources
the loader of the checkout it sits in.
"""

import importlib
import os

importlib.import_module("gdb").execute(
    "source "
    + os.path.join(
        os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
        "klpinspect", "backends", "gdb", "load.py",
    )
)
