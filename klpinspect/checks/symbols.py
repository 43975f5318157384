"""One memoizing symbolizer for every check of a command.

Stubs share targets and tasks share return addresses: each address is
symbolized once per command, whichever check asks first.
"""

from __future__ import annotations

from collections.abc import Iterable

from klpinspect.errors import KlpError
from klpinspect.target import SymbolInfo, Target, try_symbolize

__all__ = ("Symbolizer",)


class Symbolizer:
    """``target.symbolize`` with a cache, and the two ways the reports print a symbol."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._info: dict[int, SymbolInfo | None] = {}
        self._text: dict[int, str | None] = {}
        self._names: dict[int, tuple[str | None, str | None]] = {}

    def info(self, address: int) -> SymbolInfo | None:
        """The symbol containing ``address``, if any."""
        try:
            return self._info[address]
        except KeyError:
            sym = self._info[address] = try_symbolize(self._target, address)
            return sym

    __call__ = info

    def prefetch(self, addresses: Iterable[int]) -> None:
        """Name ``addresses`` now, together where the back end can
        (``target.symbolize_many``), for the look-ups to come."""
        many = getattr(self._target, "symbolize_many", None)
        if many is None:
            return
        info = self._info
        unknown = [a for a in dict.fromkeys(addresses) if a not in info]
        if not unknown:
            return
        try:
            found = many(unknown)
        except KlpError:
            return  # each named alone, as try_symbolize does
        info.update(zip(unknown, found, strict=True))

    def text(self, address: int) -> str | None:
        """``name+0xoff/0xsize [owner]`` as the kernel's ``%pS`` prints it."""
        try:
            return self._text[address]
        except KeyError:
            sym = self.info(address)
            text = self._text[address] = None if sym is None else sym.format(address)
            return text

    def names(self, addresses: Iterable[int | None]) -> list[tuple[str | None, str | None]]:
        """:meth:`name` of each address (``(None, None)`` for ``None``), in order:
        the look-up of a whole module's stub targets in one call."""
        get, name, nothing = self._names.get, self.name, (None, None)
        return [nothing if a is None else get(a) or name(a) for a in addresses]

    def name(self, address: int) -> tuple[str | None, str | None]:
        """``(symbol, owner)`` for a stub target: the bare name at a symbol's start,
        ``name+0xoff/0xsize`` inside one (the owner apart)."""
        # most calls name a new address (every OOL stub's own site): no KeyError raised
        result = self._names.get(address)
        if result is not None:
            return result
        info = self._info
        if address in info:
            sym = info[address]
        else:
            sym = info[address] = try_symbolize(self._target, address)
        result = (None, None)
        if sym is not None:
            # sym.format(address) without the " [owner]" it would append
            start, owner = sym.address, sym.owner
            if start == address:
                text = sym.name
                if owner != "vmlinux" and text.endswith("]"):
                    text = text.removesuffix(f" [{owner}]")
            elif sym.size:
                text = f"{sym.name}+{address - start:#x}/{sym.size:#x}"
            else:
                text = f"{sym.name}+{address - start:#x}"
            result = (text, owner)
        self._names[address] = result
        return result
