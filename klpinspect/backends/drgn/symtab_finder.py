"""vmlinux symbols for drgn from an ELF ``.symtab`` alone: no DWARF is indexed.

With ``-s VMLINUX`` and a kernel that carries BTF, the commands that need no
DWARF (every one but ``bt``) take their types from the dump's own BTF
(:mod:`klpinspect.backends.drgn.btf_finder`) and their symbols from the
``.symtab`` of the file given.  drgn would index the file's DWARF on load
(0.3-0.6 s and ~300 MB for a distribution ``-dbg`` vmlinux) only for types the
BTF gives alike; drgn 0.3.0 cannot load a vmlinux for its symbols alone (a
``vmlinux.debug`` with no loadable contents is ignored as a "loaded file").

The finder names the same symbols as libdrgn's ELF symbol search (the rules
:class:`klpinspect.symtab.ElfSymbols` follows), and :class:`DrgnTarget` names
addresses from the very same table.  Unlike libdrgn it holds no ``STT_FILE``
or ``STT_SECTION`` entries (a name look-up of ``"genetlink.c"`` finds
nothing), which name no address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import drgn

from klpinspect.symtab import ElfSymbols, elf_has_section, read_elf_symtab

__all__ = ("disable_symtab_symbols", "enable_symtab_symbols", "has_btf", "symtab_symbols")

_FINDER = "klpinspect_vmlinux_symtab"
_CACHE_KEY = "klpinspect_vmlinux_symtab"
# libdrgn's ELF binding precedence: GLOBAL = UNIQUE > WEAK > LOCAL = anything else
_PRECEDENCE = {1: 3, 10: 3, 2: 2}


class SymtabSymbols:
    """A drgn symbol finder over one ELF symbol table.

    :param table: the vmlinux's symbols (:meth:`ElfSymbols.from_symtab`)
    :param bias: added to every file address: the kernel's ``KERNELOFFSET``
        (as drgn biases the vmlinux it loads)
    """

    def __init__(self, table: ElfSymbols, bias: int = 0) -> None:
        self.table = table
        self._bias = bias

    def _symbol(self, entry: tuple[int, int, int, str, int, int]) -> drgn.Symbol:
        _row, address, size, name, binding, kind = entry
        return drgn.Symbol(name, address + self._bias, size,
                           drgn.SymbolBinding(binding + 1), drgn.SymbolKind(kind))

    def _best(self, entries: list[tuple[int, int, int, str, int, int]]) -> list[drgn.Symbol]:
        """The one libdrgn prefers: highest binding, then first in the table."""
        if not entries:
            return []
        return [self._symbol(max(entries, key=lambda e: (_PRECEDENCE.get(e[4], 1), -e[0])))]

    def __call__(
        self, prog: drgn.Program, name: str | None, address: int | None, one: bool
    ) -> Sequence[drgn.Symbol]:
        table = self.table
        if address is not None:
            hit = table.lookup(address - self._bias)
            if hit is None or (name is not None and hit[2] != name):
                return []
            start, size, found = hit
            best = self._best([e for e in table.symbols_at(start)
                               if e[2] == size and e[3] == found])
            if one or name is not None:
                return best
            # every symbol containing it (Program.symbols(address), rare):
            # those starting where the best one starts, as far as kept
            return [self._symbol(e) for e in table.symbols_at(start)
                    if e[2] and start <= address - self._bias < start + e[2]] or best
        if name is not None:
            named = table.address_of(name)
            if named is None:
                return []
            entries = [e for e in table.symbols_at(named) if e[3] == name]
            return self._best(entries) if one else [self._symbol(e) for e in entries]
        if one:
            return []
        out = []
        for start in sorted(set(table.starts)):
            out += [self._symbol(e) for e in table.symbols_at(start)]
        return out


def symtab_symbols(prog: drgn.Program) -> ElfSymbols | None:
    """The vmlinux :class:`ElfSymbols` :func:`enable_symtab_symbols` gave ``prog``."""
    finder: Any = prog.cache.get(_CACHE_KEY)
    return finder.table if isinstance(finder, SymtabSymbols) else None


def enable_symtab_symbols(prog: drgn.Program, path: str, bias: int = 0) -> ElfSymbols:
    """Register the ``.symtab`` of ``path`` (vmlinux or its ``.debug`` file) as
    ``prog``'s vmlinux symbol finder, once.

    :param bias: the kernel's ``KERNELOFFSET``: drgn's symbols and objects are
        at file address + bias, as with the file's DWARF loaded (the table
        returned, like the one :class:`DrgnTarget` reads with DWARF, is not
        biased: ppc64 kernels run at their link address)

    :raises TargetError: if the file is not ELF64 or has no ``.symtab``
    """
    found: Any = prog.cache.get(_CACHE_KEY)
    if isinstance(found, SymtabSymbols):
        return found.table
    symtab, strtab, byteorder, sections = read_elf_symtab(path)
    table = ElfSymbols.from_symtab(symtab, byteorder, sections, strtab)
    finder = SymtabSymbols(table, bias)
    prog.register_symbol_finder(_FINDER, finder, enable_index=0)
    prog.cache[_CACHE_KEY] = finder
    return table


def disable_symtab_symbols(prog: drgn.Program) -> None:
    """Undo :func:`enable_symtab_symbols` (the kernel's BTF proved unusable:
    drgn loads the DWARF and its own ELF symbols instead)."""
    prog.cache.pop(_CACHE_KEY, None)
    if _FINDER in prog.enabled_symbol_finders():
        prog.set_enabled_symbol_finders(
            [f for f in prog.enabled_symbol_finders() if f != _FINDER])


def has_btf(path: str) -> bool:
    """Whether the ELF file at ``path`` has a ``.BTF`` section: its kernel was
    built with ``CONFIG_DEBUG_INFO_BTF``.  ``False`` for anything unreadable."""
    return elf_has_section(path, ".BTF")
