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

from klpinspect.elf64 import sym_words
from klpinspect.symtab import ElfSymbols, read_elf_symtab

__all__ = ("enable_symtab_symbols", "symtab_symbols")

_FINDER = "klpinspect_vmlinux_symtab"
_CACHE_KEY = "klpinspect_vmlinux_symtab"
_STT_SECTION, _STT_FILE, _STT_TLS = 3, 4, 6
# libdrgn's ELF binding precedence: GLOBAL = UNIQUE > WEAK > LOCAL = anything else
_PRECEDENCE = {1: 3, 10: 3, 2: 2}


class SymtabSymbols:
    """A drgn symbol finder over one ELF symbol table (``Elf64_Sym`` rows).

    :param symtab: the ``.symtab`` section's bytes
    :param strtab: its string table
    :param byteorder: ``"little"`` or ``"big"``
    :param table: the :class:`ElfSymbols` over the same rows (address look-ups)
    :param bias: added to every file address: the kernel's ``KERNELOFFSET``
        (as drgn biases the vmlinux it loads)
    """

    def __init__(self, symtab: bytes, strtab: bytes, byteorder: str, table: ElfSymbols,
                 bias: int = 0) -> None:
        self.table = table
        self._bias = bias
        self._strtab = strtab
        self._little = byteorder == "little"
        # three C-unpacked columns; a row's st_name/st_info/st_shndx come from
        # its head word only for the few rows a look-up finds
        self._heads, self._values, self._sizes = sym_words(symtab, byteorder)

    def _head(self, row: int) -> tuple[int, int, int]:
        """``(st_name, st_info, st_shndx)`` of ``row``."""
        w = self._heads[row]
        if self._little:
            return w & 0xFFFFFFFF, (w >> 32) & 0xFF, w >> 48
        return w >> 32, (w >> 24) & 0xFF, w & 0xFFFF

    def _real(self, row: int) -> bool:
        """Whether ``row`` is a symbol (what :func:`parse_elf_columns` keeps)."""
        st_name, st_info, shndx = self._head(row)
        return bool(shndx and st_name and self._values[row]
                    and st_info & 15 not in (_STT_SECTION, _STT_FILE, _STT_TLS))

    def _name(self, row: int) -> str:
        off = self._head(row)[0]
        end = self._strtab.find(b"\0", off)
        return self._strtab[off : end if end >= 0 else len(self._strtab)].decode(
            "ascii", "replace")

    def _symbol(self, row: int) -> drgn.Symbol:
        info = self._head(row)[1]
        return drgn.Symbol(self._name(row), self._values[row] + self._bias, self._sizes[row],
                           drgn.SymbolBinding((info >> 4) + 1), drgn.SymbolKind(info & 15))

    def _rows_at(self, address: int) -> list[int]:
        """The symbol rows starting at ``address`` (C-level searches)."""
        rows: list[int] = []
        j = -1
        while True:
            try:
                j = self._values.index(address, j + 1)
            except ValueError:
                return rows
            if self._real(j):
                rows.append(j)

    def _best(self, rows: list[int]) -> list[int]:
        """The row libdrgn prefers: highest binding, then first in the table."""
        if not rows:
            return []
        return [max(rows, key=lambda r: (_PRECEDENCE.get(self._head(r)[1] >> 4, 1), -r))]

    def _all_rows(self) -> list[int]:
        return [r for r in range(len(self._values)) if self._real(r)]

    def __call__(
        self, prog: drgn.Program, name: str | None, address: int | None, one: bool
    ) -> Sequence[drgn.Symbol]:
        if address is not None:
            address -= self._bias
            if one or name is not None:
                hit = self.table.lookup(address)
                if hit is None or (name is not None and hit[2] != name):
                    return []
                start, size, found = hit
                rows = [r for r in self._rows_at(start)
                        if self._sizes[r] == size and self._name(r) == found]
                return [self._symbol(r) for r in self._best(rows)]
            # every symbol containing it (Program.symbols(address): rare)
            rows = [r for r in self._all_rows()
                    if self._values[r] <= address < self._values[r] + self._sizes[r]]
            return [self._symbol(r) for r in rows] or self(
                prog, None, address + self._bias, True)
        if name is not None:
            if one:
                named = self.table.address_of(name)
                if named is None:
                    return []
                rows = [r for r in self._rows_at(named) if self._name(r) == name]
                return [self._symbol(r) for r in self._best(rows)]
            return [self._symbol(r) for r in self._all_rows() if self._name(r) == name]
        rows = self._all_rows()
        return [self._symbol(r) for r in (rows[:1] if one else rows)]


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
    finder = SymtabSymbols(symtab, strtab, byteorder, table, bias)
    prog.register_symbol_finder(_FINDER, finder, enable_index=0)
    prog.cache[_CACHE_KEY] = finder
    return table
