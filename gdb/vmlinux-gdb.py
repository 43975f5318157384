"""Auto-load shim: gdb runs ``<objfile>-gdb.py`` beside the objfile it loads.

Symlink this file next to your vmlinux (``ln -s .../gdb/vmlinux-gdb.py
/path/to/vmlinux-gdb.py``) and allow it (``add-auto-load-safe-path
/path/to``); loading vmlinux then registers the ``klp`` commands.  It sources
``klpinspect/backends/gdb/load.py`` of the checkout this file really lives in, or of
the installed package when the checkout has none.
"""

import importlib
import os

_here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_loader = os.path.join(_here, "klpinspect", "backends", "gdb", "load.py")
if not os.path.exists(_loader):
    _loader = str(importlib.import_module("klpinspect.gdb").script_path())
importlib.import_module("gdb").execute("source " + _loader)
