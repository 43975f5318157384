"""``Symbolizer.name``: the ``%pS`` text of :meth:`SymbolInfo.format` without the
owner suffix, for every shape of symbol (vmlinux or a module, at its start or
inside, sized or a label), memoized; ``info``/``text`` share its look-ups."""

from __future__ import annotations

from synthetic import SyntheticTarget

from klpinspect.checks.symbols import Symbolizer
from klpinspect.target import KernelInfo, SymbolInfo

KERNEL = KernelInfo(release="7.2.0-test")
SYMS = [
    SymbolInfo("schedule", 0xC000000000100000, 0x200, "vmlinux"),
    SymbolInfo("ftrace_caller", 0xC000000000200000, 0, "vmlinux"),
    SymbolInfo("zram_init", 0xC008000001000000, 0x150, "zram"),
    SymbolInfo("label", 0xC008000001000400, 0, "zram"),
    # a damaged name that ends like the owner suffix
    SymbolInfo("odd [zram]", 0xC008000001000800, 0x10, "zram"),
]


class _Counting(SyntheticTarget):
    asked: list[int] = []

    def symbolize(self, address: int) -> SymbolInfo | None:
        self.asked.append(address)
        for sym in self.symbols:  # a label names the 0x100 bytes after it
            if sym.address <= address < sym.address + (sym.size or 0x100):
                return sym
        return None


def _reference(sym: SymbolInfo | None, address: int) -> tuple[str | None, str | None]:
    if sym is None:
        return None, None
    text = sym.name if sym.address == address else sym.format(address)
    if sym.owner != "vmlinux":
        text = text.removesuffix(f" [{sym.owner}]")
    return text, sym.owner


def test_name_is_format_without_owner() -> None:
    target = _Counting(KERNEL, symbols=SYMS)
    target.asked = []
    symbols = Symbolizer(target)
    addresses = [a for s in SYMS for a in (s.address, s.address + 8)] + [0x10, 0xC000000000300000]
    for address in addresses:
        assert symbols.name(address) == _reference(target.symbolize(address), address)
    assert symbols.name(0xC008000001000008) == ("zram_init+0x8/0x150", "zram")
    assert symbols.name(0xC008000001000408) == ("label+0x8", "zram")
    assert symbols.name(0xC008000001000800) == ("odd", "zram")
    assert symbols.name(0xC000000000100000) == ("schedule", "vmlinux")
    # each address asked of the target once, whichever way it is named first
    target.asked = []
    for address in addresses:
        symbols.name(address)
        assert symbols.info(address) is target.symbolize(address)
        assert symbols.text(address) == (None if symbols.info(address) is None else
                                         symbols.info(address).format(address))  # type: ignore[union-attr]
    assert target.asked == addresses  # only the explicit calls above


def test_names_is_name_of_each() -> None:
    """``names``: ``name`` of each address in order, ``(None, None)`` for ``None``,
    each address asked of the target once (an unnamed one too)."""
    target = _Counting(KERNEL, symbols=SYMS)
    target.asked = []
    addresses: list[int | None] = [SYMS[0].address, None, 0x10, SYMS[2].address + 8, 0x10,
                                   SYMS[0].address, None]
    got = Symbolizer(target).names(addresses)
    assert got == [(None, None) if a is None else Symbolizer(target).name(a) for a in addresses]
    assert got[0] == ("schedule", "vmlinux") and got[3] == ("zram_init+0x8/0x150", "zram")
    assert got[2] == got[4] == (None, None)
    target.asked = []
    symbols = Symbolizer(target)
    symbols.names(addresses)
    assert target.asked == [SYMS[0].address, 0x10, SYMS[2].address + 8]
