"""klpinspect: ppc64 module call stubs, ftrace trampolines, TOCs and livepatch stacks.

The decoding and checking logic lives in :mod:`klpinspect.ppc64`,
:mod:`klpinspect.audit` and :mod:`klpinspect.report`; it imports neither drgn
nor gdb.  Back ends (:mod:`klpinspect.backends.drgn`, ``gdb/klpinspect.py``) read
memory and hand plain data to it.
"""

__version__ = "0.1.0"
__all__ = ("__version__",)
