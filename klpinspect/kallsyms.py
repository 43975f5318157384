"""The kernel's compressed kallsyms tables, decoded on demand: bytes in, symbols out.

``scripts/kallsyms.c`` writes vmlinux's symbol table into the kernel as
(``kernel/kallsyms_internal.h``):

* ``kallsyms_num_syms``: the number of symbols ``n``;
* ``kallsyms_names``: each symbol's type letter and name, compressed: a
  length in tokens (one byte; two, ULEB128, for lengths over 127 since
  commit 73bbb94466fd "kallsyms: support "big" kernel symbols", 6.1), then
  that many token numbers;
* ``kallsyms_markers``: the offset in ``kallsyms_names`` of every 256th symbol
  (``u32``);
* ``kallsyms_token_table`` / ``kallsyms_token_index``: the 256 tokens
  (NUL-terminated strings) and where each starts;
* ``kallsyms_offsets`` (``int``, one a symbol, sorted by address): from
  ``kallsyms_relative_base`` (commit 2213e9a66bb8 "kallsyms: add support for
  relative offsets in kallsyms address table", 4.6) or, since commit
  a081b5789255 "kallsyms: Get rid of kallsyms relative base" (7.0), from the
  entry's own address (``.long _text - . + offset``); ``kallsyms_addresses``
  (``unsigned long``) before commit 64e166099b69 "kallsyms: get rid of code
  for absolute kallsyms" (6.11) when ``CONFIG_KALLSYMS_BASE_RELATIVE`` was off;
* ``kallsyms_seqs_of_names``: the symbol numbers sorted by name, 3 bytes big
  endian each (commit 60443c88f3a8 "kallsyms: Improve the performance of
  kallsyms_lookup_name()", 6.2, backported to 6.1.y; 3 bytes since commit
  19bd8981dc2e "kallsyms: Reduce the memory occupied by
  kallsyms_seqs_of_names[]", 6.2).

:class:`KallsymsTable` decodes only the 256-symbol blocks an address look-up
falls in, and finds a name by binary search over ``kallsyms_seqs_of_names``,
as the kernel's own ``kallsyms_lookup_names()`` does, instead of
decompressing all ~110,000 names up front.  Its answers follow libdrgn's
kallsyms loader (``libdrgn/kallsyms.c``): a symbol's size is the distance to
the next one when under 64 KiB (``MAX_SYMBOL_LENGTH``), else 0 (the last
symbol's too), and the type letter gives binding and kind as nm(1) does.

Pure: no drgn, no gdb (the drgn symbol finder is
:mod:`klpinspect.backends.drgn.kallsyms`).
"""

from __future__ import annotations

import array
import bisect
from collections.abc import Sequence
from typing import Literal

__all__ = ("KallsymsError", "KallsymsTable", "MAX_SYMBOL_LENGTH", "binding_kind")

#: libdrgn's cap on a kallsyms symbol's size (``MAX_SYMBOL_LENGTH``)
MAX_SYMBOL_LENGTH = 0x10000

_BLOCK = 256  # symbols between two kallsyms_markers


class KallsymsError(ValueError):
    """The tables are not kallsyms as :class:`KallsymsTable` knows them."""


def binding_kind(letter: str) -> tuple[str, str]:
    """``(binding, kind)`` of a kallsyms type letter, as libdrgn's
    ``symbol_from_kallsyms()`` gives them: binding ``"UNIQUE"`` (``u``),
    ``"WEAK"`` (``v``/``w``, either case), ``"GLOBAL"`` (other capitals) or
    ``"UNKNOWN"``; kind ``"OBJECT"`` (``b c d g r v``), ``"FUNC"`` (``t``) or
    ``"UNKNOWN"``, either case."""
    lower = letter.lower()
    if letter == "u":
        binding = "UNIQUE"
    elif lower in ("v", "w"):
        binding = "WEAK"
    elif letter.isupper():
        binding = "GLOBAL"
    else:
        binding = "UNKNOWN"
    if lower in ("b", "c", "d", "g", "r", "v"):
        kind = "OBJECT"
    elif lower == "t":
        kind = "FUNC"
    else:
        kind = "UNKNOWN"
    return binding, kind


Encoding = Literal["absolute", "base-relative", "absolute-percpu", "place-relative"]


class KallsymsTable:
    """vmlinux's kallsyms, decoded on demand.

    :param num_syms: ``kallsyms_num_syms``
    :param names: ``kallsyms_names`` (at least up to the end of the last name)
    :param markers: ``kallsyms_markers``
    :param tokens: the 256 tokens (``kallsyms_token_table`` split by
        ``kallsyms_token_index``)
    :param long_names: lengths over 127 take two bytes (Linux 6.1+)
    :param values: ``kallsyms_offsets`` (``u32``, or ``u64`` for ``absolute``)
    :param encoding: how ``values`` give addresses
    :param base: ``kallsyms_relative_base`` (base-relative, absolute-percpu);
        the address of ``kallsyms_offsets`` (place-relative)
    :param seqs: ``kallsyms_seqs_of_names`` (3 bytes a symbol), if the kernel has it
    :param llvm_suffixes_sorted_off: ``kallsyms_seqs_of_names`` is sorted by
        names cut at ``.llvm.`` (``cleanup_symbol_name()`` of the 6.2-era
        ``scripts/kallsyms.c``, and Debian's 6.1.y: clang LTO's suffixes;
        no name of a GCC build has one, so both orders agree there)
    """

    def __init__(
        self,
        *,
        num_syms: int,
        names: bytes,
        markers: Sequence[int],
        tokens: Sequence[bytes],
        long_names: bool,
        values: array.array[int],
        encoding: Encoding,
        base: int,
        seqs: bytes | None,
        llvm_suffixes_sorted_off: bool = False,
    ) -> None:
        if num_syms <= 0 or len(values) < num_syms or len(markers) < (num_syms + 255) // 256:
            raise KallsymsError("kallsyms tables shorter than kallsyms_num_syms")
        if seqs is not None and len(seqs) < 3 * num_syms:
            raise KallsymsError("kallsyms_seqs_of_names shorter than kallsyms_num_syms")
        self.num_syms = num_syms
        self._names = names
        self._markers = markers
        self._tokens = list(tokens)
        self._long = long_names
        self._values = values
        self._encoding = encoding
        self._base = base
        self._seqs = seqs
        self._cut_llvm = llvm_suffixes_sorted_off
        # kallsyms_seqs_of_names positions decoded by check_name_order(), their keys
        self._sample_at: list[int] = []
        self._sample_keys: list[str] = []
        # decoded blocks: (type letters, names), and each block's first address
        self._blocks: dict[int, tuple[list[str], list[str]]] = {}
        self._block_addrs: dict[int, list[int]] = {}
        self._starts: dict[int, list[int]] = {}
        self._one: dict[int, tuple[str, str]] = {}
        self._firsts = [self.address(i) for i in range(0, num_syms, _BLOCK)]

    @property
    def has_name_index(self) -> bool:
        """Whether names are found by binary search (``kallsyms_seqs_of_names``)."""
        return self._seqs is not None

    # --- addresses ------------------------------------------------------------

    def address(self, i: int) -> int:
        """Address of symbol ``i`` (as libdrgn's ``kallsyms_load_addresses()``)."""
        v = self._values[i]
        enc = self._encoding
        if enc == "base-relative":
            return (self._base + v) & 0xFFFFFFFFFFFFFFFF
        if enc == "place-relative":
            if v >= 1 << 31:
                v -= 1 << 32
            return (self._base + 4 * i + v) & 0xFFFFFFFFFFFFFFFF
        if enc == "absolute-percpu":
            if v >= 1 << 31:
                return (self._base - 1 - (v - (1 << 32))) & 0xFFFFFFFFFFFFFFFF
            return v
        return v

    def _addresses(self, block: int) -> list[int]:
        found = self._block_addrs.get(block)
        if found is None:
            lo = block * _BLOCK
            hi = min(lo + _BLOCK, self.num_syms)
            values, base, mask = self._values[lo:hi], self._base, 0xFFFFFFFFFFFFFFFF
            enc = self._encoding
            if enc == "base-relative":
                found = [(base + v) & mask for v in values]
            elif enc == "place-relative":
                # .long _text - . + offset: signed, from the entry's own address
                signed = array.array("i", values.tobytes())
                found = [
                    (a + v) & mask
                    for a, v in zip(range(base + 4 * lo, base + 4 * hi, 4), signed, strict=True)
                ]
            else:
                found = [self.address(i) for i in range(lo, hi)]
            self._block_addrs[block] = found
        return found

    def index_at(self, address: int) -> int:
        """The last symbol (in table order) whose address is ``<= address``, or -1."""
        block = bisect.bisect_right(self._firsts, address) - 1
        if block < 0:
            return -1
        return block * _BLOCK + bisect.bisect_right(self._addresses(block), address) - 1

    def locate(self, address: int) -> tuple[int, int, int] | None:
        """``(symbol, its address, its size)`` of the symbol containing
        ``address`` (libdrgn's look-up: only a symbol with a size contains
        anything, so of several at one address only the last), or ``None``."""
        firsts = self._firsts
        block = bisect.bisect_right(firsts, address) - 1
        if block < 0:
            return None
        addrs = self._addresses(block)
        j = bisect.bisect_right(addrs, address) - 1
        start = addrs[j]
        if j + 1 < len(addrs):
            nxt = addrs[j + 1]
        elif block + 1 < len(firsts):
            nxt = firsts[block + 1]
        else:
            return None  # the last symbol has no size
        size = nxt - start
        if size >= MAX_SYMBOL_LENGTH or size <= 0:
            return None
        return block * _BLOCK + j, start, size

    def size(self, i: int) -> int:
        """libdrgn's size of symbol ``i``: to the next symbol, if under 64 KiB."""
        if i + 1 >= self.num_syms:
            return 0
        block = (i + 1) // _BLOCK
        nxt = self._addresses(block)[(i + 1) % _BLOCK]
        here = self._addresses(i // _BLOCK)[i % _BLOCK]
        diff = (nxt - here) & 0xFFFFFFFFFFFFFFFF
        return diff if diff < MAX_SYMBOL_LENGTH else 0

    def aliases(self, i: int) -> range:
        """The symbols at symbol ``i``'s address (a run in table order)."""
        here = self.address(i)
        lo = i
        while lo > 0 and self._addresses((lo - 1) // _BLOCK)[(lo - 1) % _BLOCK] == here:
            lo -= 1
        hi = i + 1
        while hi < self.num_syms and self._addresses(hi // _BLOCK)[hi % _BLOCK] == here:
            hi += 1
        return range(lo, hi)

    # --- names -------------------------------------------------------------------

    def _length(self, pos: int) -> tuple[int, int]:
        """``(tokens, first token's offset)`` of the name at ``pos``."""
        names = self._names
        n = names[pos]
        if n & 0x80 and self._long:
            second = names[pos + 1]
            if second & 0x80:
                raise KallsymsError("3-byte length in kallsyms_names")
            return (n & 0x7F) | (second << 7), pos + 2
        return n, pos + 1

    def _block_starts(self, block: int, upto: int = _BLOCK - 1) -> list[int]:
        """Where the names of ``block`` start, at least up to its ``upto``-th
        (walked from the block's marker as far as needed, then kept)."""
        found = self._starts.get(block)
        if found is None:
            found = self._starts[block] = [self._markers[block]]
        count = min(upto + 1, self.num_syms - block * _BLOCK)
        if len(found) < count:
            names, long_names = self._names, self._long
            pos = found[-1]
            append = found.append
            for _ in range(count - len(found)):
                n = names[pos]
                if n & 0x80 and long_names:
                    pos += 2 + ((n & 0x7F) | (names[pos + 1] << 7))
                else:
                    pos += 1 + n
                append(pos)
        return found

    def _decode_at(self, pos: int) -> tuple[str, str]:
        n, first = self._length(pos)
        text = b"".join(map(self._tokens.__getitem__, self._names[first : first + n]))
        if len(text) < 2:
            raise KallsymsError("zero-length symbol in kallsyms")
        decoded = text.decode("utf-8", "surrogateescape")
        return decoded[0], decoded[1:]

    def _block(self, block: int) -> tuple[list[str], list[str]]:
        found = self._blocks.get(block)
        if found is None:
            letters, names = [], []
            count = min(_BLOCK, self.num_syms - block * _BLOCK)
            for pos in self._block_starts(block)[:count]:
                letter, name = self._decode_at(pos)
                letters.append(letter)
                names.append(name)
            found = self._blocks[block] = (letters, names)
        return found

    def entry(self, i: int) -> tuple[str, str]:
        """``(type letter, name)`` of symbol ``i`` (only it decoded; cached)."""
        block = self._blocks.get(i // _BLOCK)
        if block is not None:
            return block[0][i % _BLOCK], block[1][i % _BLOCK]
        found = self._one.get(i)
        if found is None:
            j = i % _BLOCK
            found = self._one[i] = self._decode_at(self._block_starts(i // _BLOCK, j)[j])
        return found

    def entries(self, lo: int, hi: int) -> list[tuple[str, str]]:
        """``(type letter, name)`` of symbols ``lo`` to ``hi - 1`` (whole blocks decoded)."""
        out: list[tuple[str, str]] = []
        for block in range(lo // _BLOCK, (hi + _BLOCK - 1) // _BLOCK):
            letters, names = self._block(block)
            first = block * _BLOCK
            a, b = max(lo, first) - first, min(hi, first + len(names)) - first
            out.extend(zip(letters[a:b], names[a:b], strict=True))
        return out

    def _seq(self, k: int) -> int:
        assert self._seqs is not None
        s = self._seqs
        return (s[3 * k] << 16) | (s[3 * k + 1] << 8) | s[3 * k + 2]

    def _seq_name(self, k: int) -> str:
        seq = self._seq(k)
        if seq >= self.num_syms:
            raise KallsymsError(f"kallsyms_seqs_of_names[{k}] = {seq}: no such symbol")
        return self.entry(seq)[1]

    def _sort_key(self, name: str) -> str:
        if self._cut_llvm:
            cut = name.find(".llvm.")
            if cut >= 0:
                return name[:cut]
        return name

    def indices_named(self, name: str) -> list[int]:
        """Symbols named ``name``, in table (address) order.

        :raises KallsymsError: without ``kallsyms_seqs_of_names``
        """
        if self._seqs is None:
            raise KallsymsError("no kallsyms_seqs_of_names")
        # scripts/kallsyms.c compare_names(): strcmp of the names (not the type
        # letter; see llvm_suffixes_sorted_off), ties by address then table
        # order: a run of equal names, found as the kernel's
        # kallsyms_lookup_names() finds it
        key = self._sort_key
        want = key(name)
        # the first levels from the samples check_name_order() decoded
        s = bisect.bisect_left(self._sample_keys, want)
        lo = self._sample_at[s - 1] + 1 if s > 0 else 0
        hi = self._sample_at[s] if s < len(self._sample_at) else self.num_syms
        while lo < hi:
            mid = (lo + hi) // 2
            if key(self._seq_name(mid)) < want:
                lo = mid + 1
            else:
                hi = mid
        found = []
        while lo < self.num_syms:
            here = self._seq_name(lo)
            if key(here) != want:
                break
            if here == name:
                found.append(self._seq(lo))
            lo += 1
        found.sort()
        return found

    def check_name_order(self, samples: int = 32) -> bool:
        """Whether ``kallsyms_seqs_of_names`` looks sorted by name (spot checks)."""
        if self._seqs is None:
            return False
        n = self.num_syms
        ks = sorted({min(n - 1, n * j // samples) for j in range(samples + 1)})
        try:
            names = [self._seq_name(k) for k in ks]
        except (KallsymsError, IndexError):
            return False
        keys = [self._sort_key(name) for name in names]
        if not all(a <= b for a, b in zip(keys, keys[1:], strict=False)):
            return False
        self._sample_at, self._sample_keys = ks, keys
        return True
