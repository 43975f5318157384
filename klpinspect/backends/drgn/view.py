"""The struct view of :mod:`klpinspect.backends.layout` over ``drgn.Object``.

drgn reads lazily and finds complete types on its own; this only maps its
exceptions onto the layout layer's: a missing member is ``None``, a fault is
:class:`~klpinspect.errors.MemoryReadError`, an address drgn cannot
translate (a hash-MMU dump) is :class:`~klpinspect.errors.TargetError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import drgn
from drgn import Object, offsetof, sizeof

from klpinspect.errors import MemoryReadError, TargetError
from klpinspect.ppc64.radix import HASH_MMU_MESSAGE

__all__ = ("DrgnKernel", "DrgnView", "drgn_errors")

_T = TypeVar("_T")


def drgn_errors(func: Callable[[], _T], address: int = 0, size: int = 0) -> _T:
    """``func()`` with drgn's read errors as klpinspect's."""
    try:
        return func()
    except drgn.FaultError as e:
        raise MemoryReadError(e.address, size, str(e)) from None
    except (ValueError, OverflowError) as e:
        raise MemoryReadError(address, size, str(e)) from None
    except NotImplementedError:
        # drgn 0.3.0's ppc64 page-table walker knows only the radix MMU (and
        # says "virtual address translation is only supported for Radix MMU")
        raise TargetError(HASH_MMU_MESSAGE) from None


class DrgnView:
    """A :class:`~klpinspect.backends.layout.StructView` of one ``drgn.Object``."""

    __slots__ = ("obj",)

    def __init__(self, obj: Object) -> None:
        self.obj = obj

    def member(self, name: str) -> DrgnView | None:
        try:
            return DrgnView(drgn_errors(lambda: self.obj.member_(name)))
        except LookupError:
            return None

    def integer(self) -> int:
        return int(drgn_errors(self.obj.value_))

    def string(self) -> str:
        data: bytes = drgn_errors(self.obj.string_)
        return data.decode("utf-8", "replace")

    def address(self) -> int:
        if self.obj.type_.unqualified().kind == drgn.TypeKind.POINTER:
            return self.integer()
        address = self.obj.address_
        if address is None:
            raise MemoryReadError(0, 0, "a value has no address")
        return int(address)

    def element(self, index: int) -> DrgnView:
        return DrgnView(drgn_errors(lambda: self.obj[index]))


class DrgnKernel:
    """The :class:`~klpinspect.backends.layout.KernelAccess` of a ``drgn.Program``."""

    def __init__(self, prog: drgn.Program) -> None:
        self.prog = prog
        little = bool(prog.platform and prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
        self.byteorder = "little" if little else "big"

    def variable(self, name: str) -> DrgnView | None:
        try:
            return DrgnView(self.prog.variable(name))
        except LookupError:
            return None

    def object(self, type_name: str, address: int) -> DrgnView:
        return DrgnView(Object(self.prog, type_name, address=address))

    # A type name drgn cannot parse is SyntaxError; an incomplete type TypeError.
    def type_size(self, type_name: str) -> int | None:
        try:
            return int(sizeof(self.prog.type(type_name)))
        except (LookupError, TypeError, ValueError, SyntaxError):
            return None

    def offsetof(self, type_name: str, member: str) -> int | None:
        """``member`` may be a path (``a.b``), as drgn's ``offsetof`` takes it."""
        try:
            return int(offsetof(self.prog.type(type_name), member))
        except (LookupError, TypeError, ValueError, SyntaxError):
            return None

    def constant(self, name: str) -> int | None:
        try:
            return int(self.prog.constant(name).value_())
        except (LookupError, ValueError):
            return None

    def symbol_address(self, name: str) -> int | None:
        """The ELF symbol, else a debug-info variable (a ``static`` one such as
        ``klp_ops`` that the symbol table does not give by name), as gdb's
        ``&'name'`` finds it."""
        try:
            return int(self.prog.symbol(name).address)
        except LookupError:
            pass
        try:
            address = self.prog.object(name).address_
        except (LookupError, ValueError):
            return None
        return int(address) if address else None

    def read(self, address: int, size: int) -> bytes:
        data: bytes = drgn_errors(lambda: self.prog.read(address, size), address, size)
        return data
