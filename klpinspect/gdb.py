"""Where the gdb commands are: ``python3 -m klpinspect.gdb`` prints the ``source`` line.

    $ gdb-multiarch -ex "$(python3 -m klpinspect.gdb)" vmlinux vmcore

(``klpinspect --gdb-script`` prints the same.)  The commands themselves are
in :mod:`klpinspect.backends.gdb.commands`; the file gdb sources is
``klpinspect/backends/gdb/load.py``, installed with the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ("script_path", "source_line")


def script_path() -> Path:
    """The file to ``source`` in gdb (``klpinspect/backends/gdb/load.py`` of this package)."""
    return Path(__file__).resolve().parent / "backends" / "gdb" / "load.py"


def source_line() -> str:
    """The gdb command that loads the ``klp`` commands."""
    return f"source {script_path()}"


if __name__ == "__main__":
    sys.stdout.write(source_line() + "\n")
