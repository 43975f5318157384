"""Pieces the checks share: one symbolizer, one TOC-owner map, kernel-wide traits.

The checks themselves are :mod:`klpinspect.audit` (stubs, TOCs, ftrace
trampolines), :mod:`klpinspect.callsite_audit` (calls into stubs) and
:mod:`klpinspect.livepatch` (livepatch stacks, ``klp-bt``).  Pure core: no
drgn, no gdb.
"""

__all__: tuple[str, ...] = ()
