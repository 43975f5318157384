"""vmlinux's kallsyms as a lazy drgn symbol finder.

drgn 0.3.0's ``load_vmlinux_kallsyms()`` (libdrgn ``kallsyms.c``) reads
each name's length with its own memory read and decompresses all ~110,000
names up front (~80 ms on a Debian 7.2 kernel).  :func:`load` reads each
table once in bulk and decodes only the 256-symbol blocks a look-up needs
(:class:`klpinspect.kallsyms.KallsymsTable`); names are found by binary
search over ``kallsyms_seqs_of_names``.  The answers are libdrgn's: the same
names, addresses, sizes, bindings and kinds, in the same order.

VMCOREINFO names ``kallsyms_names``, ``kallsyms_num_syms``,
``kallsyms_token_table``, ``kallsyms_token_index``, ``kallsyms_offsets``
(commit 5fd8fea935a1 "vmcoreinfo: include kallsyms symbols" and f09bddbd8661
"vmcoreinfo: add kallsyms_num_syms symbol", 6.0) and
``kallsyms_relative_base`` until 7.0, but neither ``kallsyms_markers`` nor
``kallsyms_seqs_of_names``: they are found where ``scripts/kallsyms.c`` puts
them, checked against the tables around them:

* ``kallsyms_markers`` follows ``kallsyms_names``; before
  ``kallsyms_token_table`` directly (6.0, 6.9+) or with
  ``kallsyms_seqs_of_names`` between them (6.2 to the reorder that moved
  ``kallsyms_offsets`` after ``kallsyms_token_index``; Debian's 6.1.y has this
  layout too, with the backport of commit 60443c88f3a8);
* otherwise ``kallsyms_seqs_of_names`` follows ``kallsyms_offsets`` (and
  ``kallsyms_relative_base`` where there is one): 6.12 and 7.x.

Any other layout, or tables that do not check out: ``None``, and the caller
uses drgn's own loader.
"""

from __future__ import annotations

import array
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import drgn
from drgn import Program

from klpinspect.backends.drgn.btf_finder import (
    _KALLSYMS_TABLES,
    _RANK,
    KallsymsSymbols,
    _underscores,
)
from klpinspect.kallsyms import Encoding, KallsymsError, KallsymsTable, binding_kind

__all__ = (
    "LazyKallsymsSymbols",
    "VmlinuxKallsyms",
    "load",
    "module_addresses_unnamed",
    "symtab_of",
)

_SYMBOL_LINE = re.compile(r"^SYMBOL\(([^)]+)\)=([A-Fa-f0-9]+)$", re.M)
_OSRELEASE = re.compile(r"^OSRELEASE=(\d+)\.(\d+)", re.M)
_BINDINGS = {b.name: b for b in drgn.SymbolBinding}
_KINDS = {k.name: k for k in drgn.SymbolKind}


def _long_names(vmcoreinfo: str) -> bool:
    """libdrgn's ``guess_long_names()``: 2-byte name lengths from Linux 6.1
    (commit 73bbb94466fd), unless ``DRGN_KALLSYMS_LONG`` says otherwise."""
    env = os.environ.get("DRGN_KALLSYMS_LONG")
    if env:
        if env[0] in "1yY":
            return True
        if env[0] in "0nN":
            return False
    m = _OSRELEASE.search(vmcoreinfo)
    if m is None:
        return False
    major, minor = int(m.group(1)), int(m.group(2))
    return (major == 6 and minor >= 1) or major > 6


class VmlinuxKallsyms:
    """A drgn symbol finder (``register_symbol_finder``) over :class:`KallsymsTable`.

    Called as drgn calls a finder: ``(prog, name, address, one)`` -> the list
    of ``drgn.Symbol`` libdrgn's ``drgn_symbol_index_find()`` would give.
    """

    def __init__(self, table: KallsymsTable, drgn_args: Sequence[int] = ()) -> None:
        self.table = table
        self._symbols: dict[int, drgn.Symbol] = {}
        # drgn's own loader's arguments (VMCOREINFO addresses): a full listing
        # (Program.symbols()) comes from its index, built in C (~80 ms on sid)
        # rather than ~110,000 names decoded and drgn.Symbol made in Python (~0.4 s)
        self._drgn_args = tuple(drgn_args)
        self._drgn_index: Any = None
        first = table.address(0)
        last = table.address(table.num_syms - 1)
        self._range = (first, last)

    def symbol(self, i: int) -> drgn.Symbol:
        """Symbol ``i`` (table order) as a ``drgn.Symbol``."""
        sym = self._symbols.get(i)
        if sym is None:
            letter, name = self.table.entry(i)
            binding, kind = binding_kind(letter)
            sym = self._symbols[i] = drgn.Symbol(
                name, self.table.address(i), self.table.size(i), _BINDINGS[binding], _KINDS[kind]
            )
        return sym

    def containing(self, address: int) -> int:
        """The symbol containing ``address`` (table order), or -1."""
        first, last = self._range
        if not first <= address < last:
            return -1  # the last symbol has no size
        found = self.table.locate(address)
        return -1 if found is None else found[0]

    def __call__(
        self, prog: Program, name: str | None, address: int | None, one: bool
    ) -> Sequence[drgn.Symbol]:
        try:
            return self._find(prog, name, address, one)
        except (KallsymsError, IndexError):
            return []  # a damaged name or name index: no symbol, not a crash

    def _find(
        self, prog: Program, name: str | None, address: int | None, one: bool
    ) -> Sequence[drgn.Symbol]:
        if address is not None:
            i = self.containing(address)
            if i < 0:
                return []
            if name is not None and self.table.entry(i)[1] != name:
                return []
            return [self.symbol(i)]
        if name is not None:
            found = self.table.indices_named(name)
            if one:
                found = found[:1]
            return [self.symbol(i) for i in found]
        if not one and self._drgn_args:
            if self._drgn_index is None:
                try:
                    from _drgn import (  # type: ignore[import-not-found,unused-ignore]
                        _linux_helper_load_builtin_kallsyms,
                    )

                    self._drgn_index = _linux_helper_load_builtin_kallsyms(prog, *self._drgn_args)
                except (ImportError, drgn.FaultError, ValueError, LookupError, OSError):
                    self._drgn_args = ()
            if self._drgn_index is not None:
                listing: Sequence[drgn.Symbol] = self._drgn_index(prog, None, None, False)
                return listing
        count = 1 if one else self.table.num_syms
        table, symbols = self.table, self._symbols
        out = []
        for i, (letter, name) in enumerate(table.entries(0, count)):
            sym = symbols.get(i)
            if sym is None:
                binding, kind = binding_kind(letter)
                sym = symbols[i] = drgn.Symbol(
                    name, table.address(i), table.size(i), _BINDINGS[binding], _KINDS[kind]
                )
            out.append(sym)
        return out


def _u32s(data: bytes, little: bool) -> array.array[int]:
    words = array.array("I")
    if words.itemsize != 4:  # pragma: no cover
        words = array.array("L")
    words.frombytes(data[: len(data) // 4 * 4])
    if little != (sys.byteorder == "little"):
        words.byteswap()
    return words


def _walk_block(names: bytes, pos: int, count: int, long_names: bool) -> int:
    """Offset past ``count`` names starting at ``pos``."""
    for _ in range(count):
        n = names[pos]
        if n & 0x80 and long_names:
            pos += 2 + ((n & 0x7F) | (names[pos + 1] << 7))
        else:
            pos += 1 + n
    return pos


def _markers_at(
    region: bytes, start: int, n: int, align: int, long_names: bool, little: bool
) -> list[int] | None:
    """``kallsyms_markers`` if they start at ``start`` of ``region`` (which
    starts at ``kallsyms_names``): 0 first, increasing, and the last block of
    names ends where the markers start (to ``align``)."""
    count = (n + 255) // 256
    if start < 0 or start % align or start + 4 * count > len(region):
        return None
    markers = _u32s(region[start : start + 4 * count], little).tolist()
    if markers[0] != 0 or any(a >= b for a, b in zip(markers, markers[1:], strict=False)):
        return None
    if markers[-1] >= start:
        return None
    try:
        end = _walk_block(region, markers[-1], n - 256 * (count - 1), long_names)
    except IndexError:
        return None
    if end > start or start - end >= align:
        return None
    return markers


def load(prog: Program) -> VmlinuxKallsyms | None:
    """vmlinux's kallsyms from the tables VMCOREINFO names, or ``None`` when
    they cannot be read this way (no ``kallsyms_seqs_of_names``, another
    layout, damage): drgn's own loader then decides."""
    try:
        return _load(prog)
    except (drgn.FaultError, KallsymsError, LookupError, ValueError, IndexError, OverflowError):
        return None


def _load(prog: Program) -> VmlinuxKallsyms | None:
    platform = prog.platform
    if platform is None or not platform.flags & drgn.PlatformFlags.IS_64_BIT:
        return None
    little = bool(platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)
    text = prog["VMCOREINFO"].string_().decode("ascii", "replace")
    found = {m.group(1): int(m.group(2), 16) for m in _SYMBOL_LINE.finditer(text)}
    names_at = found.get("kallsyms_names", 0)
    table_at = found.get("kallsyms_token_table", 0)
    index_at = found.get("kallsyms_token_index", 0)
    num_at = found.get("kallsyms_num_syms", 0)
    offsets_at = found.get("kallsyms_offsets", 0)
    base_at = found.get("kallsyms_relative_base", 0)
    stext = found.get("_stext", 0)
    if not (names_at and table_at and index_at and num_at and offsets_at and stext):
        return None  # kallsyms_addresses (absolute) and the rest: drgn's loader
    if found.get("kallsyms_addresses"):
        return None
    if not (names_at < table_at < index_at and index_at - table_at < 1 << 16):
        return None
    n = int.from_bytes(prog.read(num_at, 4), "little" if little else "big")
    if not 0 < n < 1 << 24:
        return None
    long_names = _long_names(text)

    # the tokens: kallsyms_token_table up to kallsyms_token_index, then the index
    tokdata = prog.read(table_at, index_at - table_at + 512)
    index = array.array("H")
    index.frombytes(tokdata[-512:])
    if little != (sys.byteorder == "little"):
        index.byteswap()
    tokens = []
    for off in index:
        nul = tokdata.find(b"\0", off)
        if nul < 0 or nul >= index_at - table_at:
            return None
        tokens.append(tokdata[off:nul])

    # kallsyms_names up to kallsyms_token_table: the names, the markers and,
    # in the 6.2-era layout, kallsyms_seqs_of_names
    region = prog.read(names_at, table_at - names_at)
    end = len(region)
    count = (n + 255) // 256
    markers = None
    seqs: bytes | None = None
    seqs_between = False  # 6.2-era layout, names sorted without .llvm. suffixes
    for align in (8, 4):  # ALGN: .balign 8 on 64-bit until 7.x's .balign 4
        # markers right before the token table
        start = (end - 4 * count) // align * align
        markers = _markers_at(region, start, n, align, long_names, little)
        if markers is not None:
            break
        # kallsyms_seqs_of_names between them
        seqs_start = (end - 3 * n) // align * align
        start = (seqs_start - 4 * count) // align * align
        markers = _markers_at(region, start, n, align, long_names, little)
        if markers is not None:
            seqs = region[seqs_start : seqs_start + 3 * n]
            seqs_between = True
            break
    if markers is None:
        return None

    values = _u32s(prog.read(offsets_at, 4 * n), little)
    if seqs is None:
        if offsets_at < names_at:
            return None  # 6.0-6.1 layout without kallsyms_seqs_of_names
        # after kallsyms_offsets (7.x) or kallsyms_relative_base (6.12)
        after = base_at + 8 if base_at else offsets_at + 4 * n
        after = (after + 3) // 4 * 4
        seqs = prog.read(after, 3 * n)
    relative_base = 0
    if base_at:
        relative_base = int.from_bytes(prog.read(base_at, 8), "little" if little else "big")

    def table(encoding: Encoding, base: int) -> KallsymsTable:
        return KallsymsTable(
            num_syms=n,
            names=region,
            markers=markers,
            tokens=tokens,
            long_names=long_names,
            values=values,
            encoding=encoding,
            base=base,
            seqs=seqs,
            llvm_suffixes_sorted_off=seqs_between,
        )

    probe = table("base-relative", relative_base)
    if not probe.check_name_order():
        return None
    named = probe.indices_named("_stext")
    if not named:
        return None
    # libdrgn's kallsyms_load_addresses(): the interpretation that puts _stext
    # (its first kallsyms entry) where VMCOREINFO says, tried in this order
    i = named[0]
    raw = values[i]
    signed = raw - (1 << 32) if raw >= 1 << 31 else raw
    mask = 0xFFFFFFFFFFFFFFFF
    if (relative_base + raw) & mask == stext:
        result = probe
    elif base_at and (raw if signed >= 0 else (relative_base - 1 - signed) & mask) == stext:
        result = table("absolute-percpu", relative_base)
    elif (offsets_at + 4 * i + signed) & mask == stext:
        result = table("place-relative", offsets_at)
    else:
        return None
    return VmlinuxKallsyms(result, [found.get(name, 0) for name in _KALLSYMS_TABLES])


# KallsymsSymbols' rank of a symbol's binding (_RANK), by type letter
_LETTER_RANK = {chr(c): _RANK.get(_BINDINGS[binding_kind(chr(c))[0]], 0) for c in range(0x21, 0x7F)}


class LazyKallsymsSymbols(KallsymsSymbols):
    """:class:`~klpinspect.backends.drgn.btf_finder.KallsymsSymbols` over a
    :class:`VmlinuxKallsyms`: the same answers, the aliases from the table's
    run of equal addresses rather than a listing of every symbol."""

    def __init__(self, prog: Program, index: VmlinuxKallsyms) -> None:
        super().__init__(prog, index)
        self._own = index
        self._found: dict[int, tuple[int, int, str] | None] = {}

    def lookup(self, address: int) -> tuple[int, int, str] | None:
        """``(start, size, name)`` of the symbol containing ``address``."""
        if address in self._found:
            return self._found[address]
        found = self._found[address] = self._lookup(address)
        return found

    def _lookup(self, address: int) -> tuple[int, int, str] | None:
        first, last = self._own._range
        if not first <= address < last:
            return None
        table = self._own.table
        hit = table.locate(address)
        if hit is None:
            return None
        i, start, size = hit
        best_key, best = (-1, -1), ""
        try:
            for j in table.aliases(i):
                letter, name = table.entry(j)
                key = (_LETTER_RANK.get(letter, 0), _underscores(name))
                if key > best_key:  # the first of the best, as max() picks
                    best_key, best = key, name
        except (KallsymsError, IndexError):
            return None  # a damaged name: unnamed, as drgn's finder gives it
        return start, size, best

    def size_to_next(self, start: int) -> int:
        """Distance from ``start`` to the next symbol (kallsyms' own sizes)."""
        first, last = self._own._range
        hit = self._own.table.locate(start) if first <= start < last else None
        return hit[2] if hit is not None else 0


def symtab_of(prog: Program, index: Any) -> LazyKallsymsSymbols | None:
    """A :class:`LazyKallsymsSymbols` if ``index`` is a :class:`VmlinuxKallsyms`."""
    return LazyKallsymsSymbols(prog, index) if isinstance(index, VmlinuxKallsyms) else None


# symbol finders that name no module address when no module file is loaded:
# drgn's ELF one, this vmlinux kallsyms one, and the drgn plugin's lazy one
# (inert once vmlinux kallsyms are registered: btf_finder.register_lazy_btf)
# (or, for -s VMLINUX without its DWARF, the symtab_finder over its .symtab)
_VMLINUX_ONLY_FINDERS = frozenset({"elf", "klpinspect_vmlinux_kallsyms", "klpinspect_btf_lazy",
                                   "klpinspect_vmlinux_symtab"})


def module_addresses_unnamed(prog: Program) -> bool:
    """Whether ``prog.symbol(address)`` cannot find a module address: the
    enabled symbol finders are drgn's ELF one, with no module file loaded, and
    vmlinux kallsyms or the -s vmlinux's .symtab (the BTF paths).  A look-up
    there would only cost a miss (two calls into Python finders, ~3 us, for
    each of an audit's ~12,000 module addresses): the caller goes to the
    module's kallsyms directly."""
    registered = prog.registered_symbol_finders()
    if not {"klpinspect_vmlinux_kallsyms", "klpinspect_vmlinux_symtab"} & set(registered):
        return False
    if not set(prog.enabled_symbol_finders()) <= _VMLINUX_ONLY_FINDERS:
        return False
    status = drgn.ModuleFileStatus.HAVE
    for mod in prog.modules():
        if mod.loaded_file_status == status or mod.debug_file_status == status:
            if mod.name != "kernel":
                return False
    return True
