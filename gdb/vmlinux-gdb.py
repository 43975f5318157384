"""Auto-load shim: gdb runs ``<objfile>-gdb.py`` beside the objfile it loads.

Symlink this file next to your vmlinux (``ln -s .../gdb/vmlinux-gdb.py
/path/to/vmlinux-gdb.py``) and allow it (``add-auto-load-safe-path
/path/to``); loading vmlinux then registers the ``klp-*`` commands.  It
sources ``klpinspect.py`` from the directory this file really lives in.
"""

import importlib
import os

importlib.import_module("gdb").execute(
    "source " + os.path.join(os.path.dirname(os.path.realpath(__file__)), "klpinspect.py")
)
