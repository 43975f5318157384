"""Address -> symbol look-up over ELF symbol tables, the way libdrgn does it.

Both back ends name addresses alike with it: the gdb back end (gdb has no
kallsyms-style look-up for module memory) and the drgn back end (drgn 0.3.0's
``Program.symbol`` costs ~250 us an address on a vmlinux; this is a bisect).
Pure: bytes and files in, tuples out.
"""

from __future__ import annotations

import array
import bisect
import itertools
import operator
import re
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from .elf64 import ELF64_SYM_SIZE, shdr_struct, sym_struct, sym_words
from .errors import TargetError
from .wordset import alternation

__all__ = (
    "ElfSymbols",
    "SymEntry",
    "elf_has_section",
    "elf_symbol_value",
    "parse_elf_columns",
    "parse_elf_columns_within",
    "parse_elf_symbols",
    "read_elf_symbols",
    "read_elf_symtab",
)

_STB_GLOBAL, _STB_WEAK, _STB_GNU_UNIQUE = 1, 2, 10
_STT_SECTION, _STT_FILE, _STT_TLS = 3, 4, 6
_SHT_SYMTAB = 2
_SHN_LORESERVE = 0xFF00
# drgn's binding precedence: GLOBAL = UNIQUE > WEAK > LOCAL = anything else.
_PRECEDENCE = {_STB_GLOBAL: 3, _STB_GNU_UNIQUE: 3, _STB_WEAK: 2}

# (address, size, name or its .strtab offset, binding, section index)
# _find_name's answer where the full name index is the better way
_FULL_INDEX = object()

SymEntry = tuple[int, int, str | int, int, int]
# the same as columns: addresses, sizes, names (or st_name offsets), bindings, shndx
_Columns = tuple[
    "array.array[int]", "array.array[int]", "Sequence[str | int]", "array.array[int]",
    "array.array[int]",
]


# -- symbols -------------------------------------------------------------------------


class ElfSymbols:
    """Address -> symbol over ELF symbol entries, as drgn's ELF symbol search does.

    So that both back ends name every address alike (libdrgn ``elf_symtab.c``):

    * sized symbols containing the address win; among them the one starting
      closest to it, then the smaller, then the higher binding
      (global > weak > local), then the first in table order;
    * else the closest size-0 symbol before it (assembly labels such as
      ``ftrace_caller``), if no sized symbol starting before it reaches past
      the label and the address is in the label's section.

    :param entries: ``(address, size, name, binding, shndx)``
    :param sections: section index -> ``(sh_addr, sh_size)`` for the section
        check; ``None`` (module kallsyms) skips it
    :param boundaries: further addresses where a symbol starts for
        :meth:`size_to_next` (section symbols, which name no address)
    :param strtab: the string table, when entries hold ``st_name`` offsets
    """

    #: ``(Elf64_Sym array, byte order)`` of a table made :meth:`from_symtab`, until parsed
    _raw: tuple[bytes, str] | None

    def __init__(
        self,
        entries: list[SymEntry],
        sections: dict[int, tuple[int, int]] | None = None,
        boundaries: Iterable[int] = (),
        strtab: bytes | None = None,
    ) -> None:
        self._set_columns(
            array.array("Q", [e[0] for e in entries]),
            array.array("Q", [e[1] for e in entries]),
            [e[2] for e in entries],
            array.array("B", [e[3] & 0xFF for e in entries]),
            array.array("I", [e[4] for e in entries]),
        )
        self._sections = sections
        self._boundaries = list(boundaries)
        self._strtab = strtab

    @classmethod
    def from_columns(
        cls,
        columns: _Columns,
        sections: dict[int, tuple[int, int]] | None,
        boundaries: Iterable[int],
        strtab: bytes | None,
    ) -> ElfSymbols:
        """From :func:`parse_elf_columns`: no tuple per symbol (a distribution
        vmlinux has 125,000: ~20 MB as tuples, ~3 MB as arrays)."""
        self = cls.__new__(cls)
        self._set_columns(*columns)
        self._sections = sections
        self._boundaries = list(boundaries)
        self._strtab = strtab
        return self

    @classmethod
    def from_symtab(
        cls,
        symtab: bytes,
        byteorder: str,
        sections: dict[int, tuple[int, int]] | None,
        strtab: bytes | None,
    ) -> ElfSymbols:
        """From a raw ``Elf64_Sym`` array, parsed (:func:`parse_elf_columns`) on the
        first need: a backtrace asks :meth:`size_to_next` of a label or two, which
        a scan of the raw ``st_value`` words answers without the parse."""
        self = cls.from_columns(
            (array.array("Q"), array.array("Q"), array.array("I"), array.array("B"),
             array.array("I")), sections, (), strtab)
        self._raw = (symtab, byteorder)
        return self

    def _parse(self) -> None:
        """The columns of a table made :meth:`from_symtab`, once."""
        if self._raw is None:
            return
        symtab, byteorder = self._raw
        self._raw = None
        boundaries: list[int] = []
        self._cols = parse_elf_columns(symtab, byteorder, boundaries, self._kinds)
        self._boundaries = boundaries

    def _raw_size_to_next(self, address: int) -> int:
        """:meth:`size_to_next` from the raw table: the lowest ``st_value`` above
        ``address`` of a row that is a symbol or a section symbol (what the
        parsed columns and boundaries hold), found with C-level scans."""
        assert self._raw is not None
        symtab, byteorder = self._raw
        n = len(symtab) // ELF64_SYM_SIZE
        words = array.array("Q")
        words.frombytes(memoryview(symtab)[: n * ELF64_SYM_SIZE])
        if byteorder != sys.byteorder:
            words.byteswap()
        values = words[1::3]
        unpack = sym_struct(byteorder).unpack_from
        above = list(filter(address.__lt__, values))
        while above:
            value = min(above)
            for j in _positions(values, value):
                st_name, st_info, _other, shndx, _value, _size = unpack(
                    symtab, j * ELF64_SYM_SIZE)
                kind = st_info & 15
                if shndx and (kind == _STT_SECTION or (
                        st_name and kind not in (_STT_FILE, _STT_TLS))):
                    return value - address
            above = [v for v in above if v != value]
        return 0

    def _set_columns(
        self,
        starts: array.array[int],
        sizes: array.array[int],
        names: Sequence[str | int],
        binds: array.array[int],
        shndx: array.array[int],
    ) -> None:
        self._cols = (starts, sizes, names, binds, shndx)
        self._raw = None
        self._indexed = False
        # after _index(): the same columns sorted by address
        self._order: array.array[int] = array.array("I")
        self._starts0: array.array[int] = array.array("Q")  # table order
        self._starts: array.array[int] = array.array("Q")
        self._sizes: array.array[int] = array.array("Q")
        self._names: Sequence[str | int] = []
        self._binds: array.array[int] = array.array("B")
        self._shndx: array.array[int] = array.array("I")
        self._reach: array.array[int] = array.array("Q")
        self._sizeless: array.array[int] = array.array("I")
        self._sizeless_starts: array.array[int] = array.array("Q")
        self._all_starts: array.array[int] | None = None
        self._sorted_boundaries: array.array[int] = array.array("Q")
        self._scans = 0
        self._by_name: dict[str, int] | None = None
        self._found: dict[str, int | None] = {}
        # names prefetch_names saw nowhere in .strtab (not even inside a longer one)
        self._nowhere: set[str] = set()
        self._used_offsets: set[int] | None = None
        self._names_bytes: bytes | None = None
        # st_info's type of each row, table order (from_symtab tables only)
        self._kinds: array.array[int] = array.array("B")

    def _index(self) -> None:
        """Sort and index the symbols, on the first :meth:`lookup` (a backtrace
        that only needs :meth:`size_to_next` never pays for it)."""
        if self._indexed:
            return
        self._parse()
        self._indexed = True
        starts, sizes, names, binds, shndx = self._cols
        # Sorted by address, table order kept among equals (a stable sort of
        # indices by an int key: ~4x cheaper than sorting 125,000 tuples).
        # keys and gathers from lists: an array makes a new int object for
        # every element it hands out, a list hands out the ones it holds
        start_list = starts.tolist()
        order = sorted(range(len(starts)), key=start_list.__getitem__)
        self._order = array.array("I", order)
        if len(order) > 1:
            # one C-level gather a column (a map of __getitem__ costs ~2x)
            pick = operator.itemgetter(*order)
            self._starts = array.array("Q", pick(start_list))
            self._sizes = array.array("Q", pick(sizes.tolist()))
            del start_list
        else:
            self._starts = array.array("Q", map(starts.__getitem__, order))
            self._sizes = array.array("Q", map(sizes.__getitem__, order))
        # names, bindings and sections stay in table order (row _order[j] of the
        # sorted row j): read for a few candidate rows only, not worth permuting
        self._starts0, self._names, self._binds, self._shndx = starts, names, binds, shndx
        del order
        # _reach[k]: the furthest end of entries[0..k]: scanning back stops once
        # nothing at or before k contains the address; also drgn's max_end_addr.
        self._reach = _running_max(map(operator.add, self._starts, self._sizes))
        self._sizeless = array.array("I", itertools.compress(
            range(len(self._sizes)), map(operator.not_, self._sizes)))
        self._sizeless_starts = array.array("Q", map(self._starts.__getitem__, self._sizeless))
        self._cols = (array.array("Q"), array.array("Q"), [], array.array("B"),
                      array.array("I"))  # the table-order columns live on above
        self._n = len(self._starts)

    @property
    def indexed(self) -> bool:
        """Whether the table is sorted and indexed (the first :meth:`lookup` does it)."""
        return self._indexed

    def _name(self, name: str | int) -> str:
        """A symbol's name: symbols from :func:`read_elf_symbols` keep the string
        table offset and are decoded only when looked up (an audit names ~1,000
        of a vmlinux's 60,000 symbols)."""
        if isinstance(name, str):
            return name
        strtab = self._strtab or b""
        end = strtab.find(b"\0", name)
        return strtab[name : end if end >= 0 else len(strtab)].decode("ascii", "replace")

    def __len__(self) -> int:
        self._parse()
        return self._n if self._indexed else len(self._cols[0])

    def lookup(self, address: int) -> tuple[int, int, str] | None:
        """``(address, size, name)`` of the best symbol containing ``address``."""
        if not self._indexed:
            self._index()
        starts, sizes, reach = self._starts, self._sizes, self._reach
        i = bisect.bisect_right(starts, address)
        if i == 0:
            return None
        # The common case first: the nearest symbol at or below contains the address and
        # nothing before it reaches this far, so it is the only candidate the scan below
        # would find (a module's kallsyms: every function's own ftrace site).
        k = i - 1
        start, size = starts[k], sizes[k]
        if size and address < start + size and (k == 0 or reach[k - 1] <= address):
            return start, size, self._name(self._names[self._order[k]])
        best: tuple[tuple[int, int, int, int], int] | None = None
        j = i
        while j > 0:
            j -= 1
            if reach[j] <= address:
                break
            start, size = starts[j], sizes[j]
            if size and address < start + size:
                row = self._order[j]
                key = (start, -size, _PRECEDENCE.get(self._binds[row], 1), -row)
                if best is None or key > best[0]:
                    best = (key, j)
        if best is not None:
            j = best[1]
            return starts[j], sizes[j], self._name(self._names[self._order[j]])
        return self._sizeless_lookup(address, reach[i - 1])

    def lookup_many(self, addresses: Iterable[int]) -> list[tuple[int, int, str] | None]:
        """:meth:`lookup` of each address (the one-candidate case inline: a
        module's kallsyms naming each of its functions' ftrace sites)."""
        if not self._indexed:
            self._index()
        starts, sizes, reach = self._starts, self._sizes, self._reach
        names, order, name = self._names, self._order, self._name
        right, lookup = bisect.bisect_right, self.lookup
        out: list[tuple[int, int, str] | None] = []
        append = out.append
        for address in addresses:
            k = right(starts, address) - 1
            if k >= 0:
                start, size = starts[k], sizes[k]
                if size and address < start + size and (k == 0 or reach[k - 1] <= address):
                    append((start, size, name(names[order[k]])))
                    continue
            append(lookup(address))
        return out

    def _sizeless_lookup(self, address: int, max_end: int) -> tuple[int, int, str] | None:
        k = bisect.bisect_right(self._sizeless_starts, address)
        if k == 0:
            return None
        nearest = self._sizeless_starts[k - 1]
        if nearest < max_end:
            return None
        best: tuple[tuple[int, int], int] | None = None
        while k > 0 and self._sizeless_starts[k - 1] == nearest:
            k -= 1
            j = self._sizeless[k]
            row = self._order[j]
            key = (_PRECEDENCE.get(self._binds[row], 1), -row)
            if best is None or key > best[0]:
                best = (key, j)
        assert best is not None
        j = best[1]
        shndx = self._shndx[self._order[j]]
        if self._sections is not None:
            if shndx >= _SHN_LORESERVE or shndx not in self._sections:
                return None
            sh_addr, sh_size = self._sections[shndx]
            if not sh_addr <= address < sh_addr + sh_size:
                return None
        return self._starts[j], self._sizes[j], self._name(self._names[self._order[j]])

    def size_to_next(self, address: int) -> int:
        """Distance from ``address`` to the next symbol, as kallsyms sizes symbols.

        For assembler labels with no ELF size (``livepatch_handler``), so that
        ``name+off/size`` reads like the kernel's ``%pS`` (and the drgn back end).
        """
        if self._all_starts is None:
            self._scans += 1
            if not self._indexed and self._scans <= 4:  # a scan beats sorting, a few times
                if self._raw is not None:
                    return self._raw_size_to_next(address)
                nxt = min((s for s in self._cols[0] if s > address), default=None)
                nb = min((b for b in self._boundaries if b > address), default=None)
                cands = [x for x in (nxt, nb) if x is not None]
                return min(cands) - address if cands else 0
            self._index()
            # the sorted starts themselves (duplicates do not change bisect_right's
            # answer), and the few section boundaries beside them
            self._all_starts = self._starts
            self._sorted_boundaries = array.array("Q", sorted(self._boundaries))
        nxt = 0
        for column in (self._all_starts, self._sorted_boundaries):
            i = bisect.bisect_right(column, address)
            if i < len(column) and (not nxt or column[i] < nxt):
                nxt = column[i]
        return nxt - address if nxt else 0

    def _name_index(self) -> dict[str, int]:
        """Name -> address, the highest binding winning, then the first in the table.

        Built with C-level dict updates: every lower-ranked symbol is written
        first and overwritten, and within one binding the table is walked
        backwards so that the first entry is written last.  The names of a
        lazily named table come from one decode and split of ``.strtab``
        (offsets kept: the ASCII decoder replaces each bad byte by one
        character), a tail-merged name from :meth:`_name`.
        """
        raw = self._names
        if isinstance(raw, array.array) and self._strtab:
            parts = self._strtab.decode("ascii", "replace").split("\0")
            offsets = itertools.accumulate((len(x) + 1 for x in parts), initial=0)
            by_offset = dict(zip(offsets, parts, strict=False))  # one offset more than parts
            names = [by_offset.get(o) or self._name(o) for o in raw]
        else:
            names = [self._name(x) for x in raw]
        buckets: dict[int, list[int]] = {}
        binds = self._binds
        for row in range(len(names) - 1, -1, -1):  # the columns are in table order
            buckets.setdefault(_PRECEDENCE.get(binds[row], 1), []).append(row)
        out: dict[str, int] = {}
        for _rank, bucket in sorted(buckets.items()):
            out.update(zip(map(names.__getitem__, bucket),
                           map(self._starts0.__getitem__, bucket), strict=True))
        return out

    def address_of(self, name: str) -> int | None:
        """Address of the symbol called ``name`` with the highest binding, first found."""
        if self._by_name is None:
            self._index()
            cached = self._found.get(name, self._found)
            if cached is not self._found:
                return cached  # type: ignore[return-value]
            # past ~64 distinct names the index is the cheaper way
            found = self._find_name(name) if len(self._found) < 64 else _FULL_INDEX
            if found is not _FULL_INDEX:
                self._found[name] = found  # type: ignore[assignment]
                return found  # type: ignore[return-value]
            self._by_name = self._name_index()
        return self._by_name.get(name)

    @property
    def starts(self) -> Sequence[int]:
        """Every symbol's address, sorted (duplicates kept)."""
        self._index()
        return self._starts

    def symbols_at(self, start: int) -> list[tuple[int, int, int, str, int, int]]:
        """The symbols that start at ``start``, in table order: ``(row, address,
        size, name, binding, type)`` with ``STB_*`` / ``STT_*`` values (the type
        0 where the table keeps none: tables not made :meth:`from_symtab`)."""
        self._index()
        j = bisect.bisect_left(self._starts, start)
        out = []
        while j < len(self._starts) and self._starts[j] == start:
            row = self._order[j]
            kind = self._kinds[row] if row < len(self._kinds) else 0
            out.append((row, start, self._sizes[j], self._name(self._names[row]),
                        self._binds[row], kind))
            j += 1
        return sorted(out)

    def _find_name(self, name: str) -> int | None | object:
        """:meth:`address_of` without a name index, for a lazily named table:
        each place ``name`` ends a string in ``.strtab`` is an ``st_name`` that
        names it (tail-merged names included); the symbols with those offsets
        are found with C-level searches (offsets no symbol uses, a set tells).
        An audit asks for ~20 names of 60,000: ~1 ms a name where the index
        takes ~0.1 s.
        Returns ``_FULL_INDEX`` where the index is the better way."""
        raw, strtab = self._names, self._strtab
        if not isinstance(raw, array.array) or not strtab or not name:
            return _FULL_INDEX
        try:
            needle = name.encode("ascii") + b"\0"
        except UnicodeEncodeError:
            return _FULL_INDEX
        positions = []
        pos = strtab.find(needle)
        while pos >= 0:
            positions.append(pos)
            pos = strtab.find(needle, pos + 1)
        return self._best_at(positions)

    def _best_at(self, positions: Iterable[int]) -> int | None:
        """The address of the best-ranked symbol whose ``st_name`` is one of
        ``positions`` (:meth:`_find_name`)."""
        if self._used_offsets is None:
            self._used_offsets = set(self._names)  # type: ignore[arg-type]
        used = self._used_offsets
        best: tuple[tuple[int, int], int] | None = None
        for pos in positions:
            if pos not in used:  # a suffix of a longer name no symbol points into
                continue
            for j in _positions_in(self._names_blob(), pos):
                rank = (_PRECEDENCE.get(self._binds[j], 1), -j)  # j: a table row
                if best is None or rank > best[0]:
                    best = (rank, j)
        return None if best is None else self._starts0[best[1]]

    def prefetch_names(self, names: Iterable[str]) -> None:
        """:meth:`address_of` of each of ``names`` at once, for the look-ups to
        come: one regular expression over the reversed ``.strtab`` finds every
        place each name ends a string (``\\0`` then the reversed name: a literal
        first byte the search skips to) in about the time three searches of one
        name each take (a distribution vmlinux has ~3 MB of names).  The same
        answers as :meth:`_find_name`'s; a name that ends another of ``names``
        (``_end``, ``ftrace_list_end``) is left to it."""
        if self._by_name is not None:
            return
        self._index()
        if not isinstance(self._names, array.array) or not self._strtab:
            return
        wanted: dict[bytes, str] = {}
        for name in names:
            if name and name not in self._found and "\0" not in name and name.isascii():
                wanted[name.encode("ascii")] = name
        alone = {w for w in wanted for other in wanted if other != w and other.endswith(w)}
        for w in alone:
            del wanted[w]
        if not wanted or len(self._found) + len(wanted) >= 64:  # past 64: the full index
            return
        strtab = self._strtab
        found: dict[bytes, list[int]] = {w: [] for w in wanted}
        pattern = re.compile(b"\x00(" + alternation(w[::-1] for w in wanted) + b")")
        last = len(strtab) - 1
        for m in pattern.finditer(strtab[::-1]):
            w = m.group(1)[::-1]
            found[w].append(last - m.start() - len(w))
        for w, positions in found.items():
            self._found[wanted[w]] = self._best_at(sorted(positions))
            if not positions:
                self._nowhere.add(wanted[w])

    def in_strtab(self, name: str) -> bool:
        """Whether ``name`` followed by a NUL is anywhere in ``.strtab`` (the tail
        of a longer name too): a name :meth:`prefetch_names` saw nowhere is
        answered without another search."""
        if name in self._nowhere:
            return False
        strtab = self._strtab or b""
        return name.encode("ascii", "replace") + b"\0" in strtab

    def _names_blob(self) -> bytes:
        """The ``st_name`` column's bytes (for :func:`_positions_in`), made once."""
        if self._names_bytes is None:
            raw = self._names
            assert isinstance(raw, array.array)
            self._names_bytes = raw.tobytes()
        return self._names_bytes


def _running_max(values: Iterable[int]) -> array.array[int]:
    """``accumulate(values, max)`` as an array: a plain loop, ~2x faster than
    calling the builtin ``max`` for each of a vmlinux's 125,000 ends."""
    out: list[int] = []
    append = out.append
    top = 0
    for v in values:
        if v > top:
            top = v
        append(top)
    return array.array("Q", out)


def _positions_in(blob: bytes, value: int) -> Iterator[int]:
    """Every index of ``value`` in the ``array("I")`` whose bytes are ``blob``, in
    order: a byte search (~40x faster than ``array.index``, which makes an int
    object of every element it passes)."""
    needle = struct.pack("=I", value)
    i = blob.find(needle)
    while i >= 0:
        if i % 4:
            i = blob.find(needle, i + 1)  # straddling two elements
            continue
        yield i // 4
        i = blob.find(needle, i + 4)


def _positions(column: array.array[int], value: int) -> Iterator[int]:
    """Every index of ``value`` in ``column``, in order (C-level searches)."""
    j = -1
    while True:
        try:
            j = column.index(value, j + 1)
        except ValueError:
            return
        yield j


def parse_elf_symbols(
    symtab: bytes,
    strtab: bytes,
    byteorder: str,
    boundaries: list[int] | None = None,
    *,
    lazy_names: bool = False,
) -> list[SymEntry]:
    """Entries of an ``Elf64_Sym`` array: defined, named, not section/file/TLS symbols.

    :param boundaries: if given, gets the addresses of section symbols
    :param lazy_names: keep ``st_name`` offsets for :class:`ElfSymbols` to decode
    """
    heads, values, sizes = sym_words(symtab, byteorder)
    little = byteorder == "little"
    skip = (_STT_SECTION, _STT_FILE, _STT_TLS)
    out: list[SymEntry] = []
    append = out.append
    for w, st_value, st_size in zip(heads, values, sizes, strict=True):
        if little:
            shndx, st_info, st_name = w >> 48, (w >> 32) & 0xFF, w & 0xFFFFFFFF
        else:
            shndx, st_info, st_name = w & 0xFFFF, (w >> 24) & 0xFF, w >> 32
        if not shndx:
            continue
        kind = st_info & 15
        if kind == _STT_SECTION and boundaries is not None and st_value:
            boundaries.append(st_value)
        if not st_name or not st_value or kind in skip:
            continue
        if lazy_names:
            append((st_value, st_size, st_name, st_info >> 4, shndx))
            continue
        end = strtab.find(b"\0", st_name)
        name = strtab[st_name : end if end >= 0 else len(strtab)].decode("ascii", "replace")
        append((st_value, st_size, name, st_info >> 4, shndx))
    return out


# per st_info byte: 1 where the type is kept (not SECTION/FILE/TLS), 1 where it
# is SECTION, and the binding
_KIND_KEPT = bytes(0 if (i & 15) in (_STT_SECTION, _STT_FILE, _STT_TLS) else 1
                   for i in range(256))
_KIND_SECTION = bytes(1 if (i & 15) == _STT_SECTION else 0 for i in range(256))
_BINDING = bytes(i >> 4 for i in range(256))
_KIND = bytes(i & 15 for i in range(256))
_NONZERO = bytes([0, *[1] * 255])


def _rows_nonzero(rows: memoryview, offsets: Iterable[int], n: int) -> int:
    """Bit-packed per-row flags (one byte a row, 0 or 1, as a big int): whether
    any byte at ``offsets`` of the row is nonzero.  Whole-column big-int ORs:
    no Python object a row."""
    acc = 0
    for off in offsets:
        acc |= int.from_bytes(rows[off::ELF64_SYM_SIZE], "big")
    return int.from_bytes(acc.to_bytes(n, "big").translate(_NONZERO), "big")


def parse_elf_columns(
    symtab: bytes,
    byteorder: str,
    boundaries: list[int] | None = None,
    kinds: array.array[int] | None = None,
) -> _Columns:
    """:func:`parse_elf_symbols` with lazy names, as columns (address, size,
    ``st_name`` offset, binding, section index) for :meth:`ElfSymbols.from_columns`.

    :param boundaries: if given, gets the addresses of section symbols
    :param kinds: if given, gets each kept row's symbol type (``STT_*``)

    Column-wise: each field is a strided slice of the table, the kept rows
    (defined, named, not section/file/TLS, nonzero value) a byte mask made
    with big-int operations, and the columns copied in runs between the few
    rows dropped (~1% of a vmlinux: its STT_FILE entries), ~3x faster than a
    Python loop over 125,000 rows.
    """
    n = len(symtab) // ELF64_SYM_SIZE
    rows = memoryview(symtab)[: n * ELF64_SYM_SIZE]
    q, w, h = array.array("Q"), array.array("I"), array.array("H")
    for col in (q, w, h):
        col.frombytes(rows)
        if byteorder != sys.byteorder:
            col.byteswap()
    values, st_sizes, names, shndxs = q[1::3], q[2::3], w[0::6], h[3::12]
    infos = bytes(rows[4::ELF64_SYM_SIZE])
    # st_name bytes 0-3, st_info 4, st_shndx 6-7, st_value 8-15 in either byte order
    name_at = range(0, 4)
    has_shndx = _rows_nonzero(rows, (6, 7), n)
    has_value = _rows_nonzero(rows, range(8, 16), n)
    if boundaries is not None:
        section = has_shndx & has_value & int.from_bytes(infos.translate(_KIND_SECTION), "big")
        boundaries.extend(itertools.compress(values, section.to_bytes(n, "big")))
    keep = (has_shndx & has_value & _rows_nonzero(rows, name_at, n)
            & int.from_bytes(infos.translate(_KIND_KEPT), "big")).to_bytes(n, "big")
    binds = array.array("B", infos.translate(_BINDING))
    out: tuple[array.array[int], ...] = (
        array.array("Q"), array.array("Q"), array.array("I"), array.array("B"),
        array.array("I"))
    cols: tuple[array.array[int], ...] = (
        values, st_sizes, names, binds, array.array("I", shndxs))
    if kinds is not None:
        out += (kinds,)
        cols += (array.array("B", infos.translate(_KIND)),)
    start = 0
    while start < n:  # copy each run of kept rows
        stop = keep.find(0, start)
        if stop < 0:
            stop = n
        if stop > start:
            for dst, src in zip(out, cols, strict=True):
                dst.extend(src[start:stop])
        start = keep.find(1, stop)
        if start < 0:
            break
    return out[0], out[1], out[2], out[3], out[4]


def read_elf_symbols(path: str) -> ElfSymbols:
    """The ``.symtab`` of an ELF64 file (vmlinux or its separate debug file).

    :raises TargetError: if the file is not ELF64 or has no symbol table
    """
    symtab, strtab, byteorder, sections = read_elf_symtab(path)
    return ElfSymbols.from_symtab(symtab, byteorder, sections, strtab)


def _section_headers(f: BinaryIO, path: str) -> tuple[str, list[tuple[int, ...]], int]:
    """``(byteorder, section headers, e_shstrndx)`` of the open ELF64 file ``f``.

    :raises TargetError: if it is not ELF64
    :raises struct.error: if it is truncated
    """
    ident = f.read(64)
    if ident[:4] != b"\x7fELF" or ident[4] != 2:
        raise TargetError(f"{path}: not an ELF64 file")
    order = "little" if ident[5] == 1 else "big"
    e = "<" if order == "little" else ">"
    (shoff,) = struct.unpack_from(e + "Q", ident, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", ident, 0x3A)
    f.seek(shoff)
    shdrs = [shdr_struct(order).unpack_from(f.read(shentsize)) for _ in range(shnum)]
    return order, shdrs, shstrndx


def read_elf_symtab(path: str) -> tuple[bytes, bytes, str, dict[int, tuple[int, int]]]:
    """The raw ``.symtab`` of an ELF64 file: ``(symtab, strtab, byteorder,
    sections)``, sections mapping each index to ``(sh_addr, sh_size)``.

    :raises TargetError: if the file is not ELF64 or has no symbol table
    """
    try:
        with open(path, "rb") as f:
            order, shdrs, _shstrndx = _section_headers(f, path)
            sections = {i: (sh[3], sh[5]) for i, sh in enumerate(shdrs)}
            for _name, sh_type, _fl, _addr, off, size, link, _info, _al, _es in shdrs:
                if sh_type != _SHT_SYMTAB or link >= len(shdrs):
                    continue
                f.seek(off)
                symtab = f.read(size)
                f.seek(shdrs[link][4])
                strtab = f.read(shdrs[link][5])
                return symtab, strtab, order, sections
    except OSError as err:
        raise TargetError(f"cannot read symbols from {path}: {err.strerror}") from None
    except struct.error:
        raise TargetError(f"{path}: truncated ELF file") from None
    raise TargetError(f"{path}: no .symtab")


def elf_symbol_value(path: str, name: str) -> int | None:
    """The value of the defined symbol ``name`` in the ``.symtab`` of the ELF64
    file at ``path``, found without parsing the table: each place ``name``
    ends a string in ``.strtab`` (tail-merged names too) is looked for as an
    ``st_name`` at the start of a row.  ~5 ms on a distribution vmlinux where
    :class:`ElfSymbols` takes ~0.1 s to index.

    :returns: ``st_value``, or ``None`` when there is no such defined symbol
        or the file is unreadable, not ELF64 or has no ``.symtab``
    """
    try:
        symtab, strtab, order, _sections = read_elf_symtab(path)
    except TargetError:
        return None
    try:
        needle = name.encode("ascii") + b"\0"
    except UnicodeEncodeError:
        return None
    row = sym_struct(order)
    pos = strtab.find(needle)
    while pos >= 0:
        key = pos.to_bytes(4, order)  # type: ignore[arg-type]
        i = symtab.find(key)
        while i >= 0:
            if i % ELF64_SYM_SIZE == 0 and i + ELF64_SYM_SIZE <= len(symtab):
                _name, _info, _other, shndx, value, _size = row.unpack_from(symtab, i)
                if shndx != 0:  # SHN_UNDEF: a reference, not the definition
                    return int(value)
            i = symtab.find(key, i + 1)
        pos = strtab.find(needle, pos + 1)
    return None


def elf_has_section(path: str, name: str) -> bool:
    """Whether the ELF64 file at ``path`` has a section called ``name``;
    ``False`` for anything unreadable or not ELF64."""
    try:
        with open(path, "rb") as f:
            _order, shdrs, shstrndx = _section_headers(f, path)
            if shstrndx >= len(shdrs):
                return False
            f.seek(shdrs[shstrndx][4])
            names = f.read(min(shdrs[shstrndx][5], 1 << 20))
    except (OSError, struct.error, TargetError):
        return False
    want = name.encode() + b"\0"
    return any(names[sh[0] : sh[0] + len(want)] == want for sh in shdrs)


def parse_elf_columns_within(
    symtab: bytes, byteorder: str, starts: Sequence[int], ends: Sequence[int]
) -> _Columns:
    """:func:`parse_elf_columns` of the symbols whose address lies in one of the
    sorted, disjoint ``[starts[i], ends[i])`` spans, every binding ``LOCAL`` (0).

    A module's kallsyms (:func:`klpinspect.backends.layout.module_kallsyms`): its
    own regions only, aliases resolved in table order as the kernel's
    ``find_kallsyms_symbol()`` does.  One comprehension over the C-unpacked
    words and C-level column gathers, no tuple a symbol (Debian sid's 50
    modules have ~33,000).
    """
    heads, values, st_sizes = sym_words(symtab, byteorder)
    right = bisect.bisect_right
    skip = (_STT_SECTION, _STT_FILE, _STT_TLS)
    if byteorder == "little":  # st_name 0-31, st_info 32-39, st_shndx 48-63
        rows = [
            i
            for i, w, v in zip(itertools.count(), heads, values)
            if w >> 48 and w & 0xFFFFFFFF and v and (w >> 32) & 15 not in skip
            and (k := right(starts, v)) and v < ends[k - 1]
        ]
        picked = list(map(heads.__getitem__, rows))
        names = array.array("I", map((0xFFFFFFFF).__and__, picked))
        shndx = array.array("I", map((48).__rrshift__, picked))
    else:  # st_name 32-63, st_info 24-31, st_shndx 0-15
        rows = [
            i
            for i, w, v in zip(itertools.count(), heads, values)
            if w & 0xFFFF and w >> 32 and v and (w >> 24) & 15 not in skip
            and (k := right(starts, v)) and v < ends[k - 1]
        ]
        picked = list(map(heads.__getitem__, rows))
        names = array.array("I", map((32).__rrshift__, picked))
        shndx = array.array("I", map((0xFFFF).__and__, picked))
    return (
        array.array("Q", map(values.__getitem__, rows)),
        array.array("Q", map(st_sizes.__getitem__, rows)),
        names,
        array.array("B", bytes(len(rows))),
        shndx,
    )
