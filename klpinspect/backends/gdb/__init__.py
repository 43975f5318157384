"""The gdb back end: the Target protocol over gdb's selected inferior.

``target`` is :class:`~klpinspect.backends.gdb.target.GdbTarget`; it runs
inside gdb's embedded Python and imports ``gdb`` lazily, so the package and
its pure helpers import anywhere.
"""

__all__: tuple[str, ...] = ()
