"""The pure ppc64 core: instruction fields, stub layouts, TOCs, call sites,
livepatch stacks.  Bytes and integers in, plain dataclasses out; no drgn, no gdb.
"""

__all__: tuple[str, ...] = ()
