"""ARM32 (little-endian) kernels: the prologue lint for the 2016 ARM livepatch design.

Pure decoding: reads ELF files with pyelftools and decodes instruction words
itself (:mod:`.insn`); capstone only renders instructions for display.  Never
imports drgn or gdb.

    >>> from klpinspect.arm32 import lint_prologues
    >>> result = lint_prologues("vmlinux")          # doctest: +SKIP
    >>> result.counts[PrologueClass.APCS_FRAME]     # doctest: +SKIP
"""

from .prologue import (
    CLASSES,
    Deviation,
    FilePrologues,
    FunctionPrologue,
    Offender,
    PrologueClass,
    classify_arm,
    lint_prologues,
)
from .report import PrologueReport, lint_prologue_files, render_prologues

__all__ = (
    "CLASSES",
    "Deviation",
    "FilePrologues",
    "FunctionPrologue",
    "Offender",
    "PrologueClass",
    "PrologueReport",
    "classify_arm",
    "lint_prologue_files",
    "lint_prologues",
    "render_prologues",
)
