"""Import the lab (tests/lab/lab.py) from tests and benchmarks.

``tests/lab`` is a directory of scripts, not a package: its modules import
each other by plain name, so the directory goes on ``sys.path`` first.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

LAB_DIR = Path(__file__).resolve().parent / "lab"


def load_lab() -> ModuleType:
    """The ``lab`` module (``Guest``, ``fixture_kernel``, ...)."""
    if str(LAB_DIR) not in sys.path:
        sys.path.insert(0, str(LAB_DIR))
    return importlib.import_module("lab")
