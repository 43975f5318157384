"""The back ends: the :class:`klpinspect.target.Target` protocol over drgn and over gdb.

``layout`` knows the kernel's struct layouts of every era once, over a small
read-only struct view; ``drgn`` and ``gdb`` provide that view (over
``drgn.Object`` and over gdb values built from bulk reads) and the rest of a
back end: opening targets, memory, symbols and unwinding.  The pure core
never imports this package.
"""

__all__: tuple[str, ...] = ()
