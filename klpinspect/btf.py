"""A reader of the BPF Type Format (BTF): bytes in, types out.

The kernel keeps its own type information in BTF when it is built with
``CONFIG_DEBUG_INFO_BTF`` (vmlinux: the ``.BTF`` section, in memory between
``__start_BTF`` and ``__stop_BTF``) and ``CONFIG_DEBUG_INFO_BTF_MODULES``
(each module: the ``.BTF`` section, in memory at ``mod->btf_data``, of
``mod->btf_data_size`` bytes).  A module's BTF is *split* BTF: its type IDs
and string offsets continue those of vmlinux's (the *base*).

The layout is the kernel's ``include/uapi/linux/btf.h``: ``struct btf_header``
(magic ``0xeB9F`` in the writer's byte order, version 1, ``hdr_len``, then
offsets of the type and string sections counted from the end of the header),
then ``struct btf_type`` records (``name_off``, ``info`` = kind/vlen/kind_flag,
``size``/``type``), each followed by its kind's trailing data.

Pure: no drgn, no gdb; the drgn type and object finders built on it are in
:mod:`klpinspect.backends.drgn.btf_finder`.
"""

from __future__ import annotations

import array
import operator
import re
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import IntEnum

from klpinspect.wordset import alternation

__all__ = (
    "BTF_MAGIC",
    "Btf",
    "BtfArray",
    "BtfEnumerator",
    "BtfError",
    "BtfInt",
    "BtfKind",
    "BtfMember",
    "BtfParam",
    "BtfSecinfo",
    "BtfType",
)

BTF_MAGIC = 0xEB9F

# struct btf_header: magic u16, version u8, flags u8, hdr_len u32,
# type_off u32, type_len u32, str_off u32, str_len u32
_HDR_SIZE = 24


class BtfError(ValueError):
    """The bytes are not BTF, or are damaged; the text says what and where."""


class BtfKind(IntEnum):
    """``BTF_KIND_*`` of ``include/uapi/linux/btf.h``."""

    UNKN = 0  # void (type ID 0 only)
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# BTF_INT_ENCODING bits (the top byte of the INT kind's trailing u32)
BTF_INT_SIGNED = 1 << 0
BTF_INT_CHAR = 1 << 1
BTF_INT_BOOL = 1 << 2


@dataclass(frozen=True, slots=True)
class BtfInt:
    """The trailing u32 of ``BTF_KIND_INT``: encoding, bit offset, bits."""

    signed: bool
    char: bool
    bool: bool
    offset: int
    bits: int


@dataclass(frozen=True, slots=True)
class BtfArray:
    """``struct btf_array``: element type, index type, number of elements."""

    type: int
    index_type: int
    nelems: int


@dataclass(frozen=True, slots=True)
class BtfMember:
    """``struct btf_member`` of a STRUCT/UNION.

    :param bit_offset: from the start of the struct, in bits
    :param bitfield_size: bits of a bit field; 0 for a plain member
    """

    name: str
    type: int
    bit_offset: int
    bitfield_size: int


@dataclass(frozen=True, slots=True)
class BtfEnumerator:
    """``struct btf_enum`` / ``struct btf_enum64``: a name and its value."""

    name: str
    value: int


@dataclass(frozen=True, slots=True)
class BtfParam:
    """``struct btf_param`` of a FUNC_PROTO; a last one with type 0 means ``...``."""

    name: str
    type: int


@dataclass(frozen=True, slots=True)
class BtfSecinfo:
    """``struct btf_var_secinfo`` of a DATASEC: a VAR and where it is."""

    type: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class BtfType:
    """One decoded ``struct btf_type`` with its kind's trailing data.

    :param size: bytes, for INT, FLOAT, STRUCT, UNION, ENUM, ENUM64, DATASEC
    :param type: the referenced type ID, for PTR, TYPEDEF, the qualifiers,
        FUNC (its FUNC_PROTO), FUNC_PROTO (the return type), VAR, DECL_TAG,
        TYPE_TAG
    :param vlen: the ``vlen`` field (FUNC: the linkage)
    :param kind_flag: the ``kind_flag`` bit (STRUCT/UNION: bit field sizes in
        the member offsets; FWD: a union; ENUM/ENUM64: signed values;
        DECL_TAG/TYPE_TAG: an attribute)
    :param linkage: VAR: 0 static, 1 global, 2 extern; FUNC: the same
    :param component_idx: DECL_TAG: -1 for the type or variable itself,
        else the member or parameter index
    """

    id: int
    kind: BtfKind
    name: str
    vlen: int
    kind_flag: bool
    size: int | None = None
    type: int | None = None
    int_info: BtfInt | None = None
    array: BtfArray | None = None
    members: tuple[BtfMember, ...] = ()
    enumerators: tuple[BtfEnumerator, ...] = ()
    params: tuple[BtfParam, ...] = ()
    secinfos: tuple[BtfSecinfo, ...] = ()
    linkage: int | None = None
    component_idx: int | None = None

    @property
    def is_signed_enum(self) -> bool:
        """ENUM/ENUM64: signed values (the kind flag)."""
        return self.kind_flag


# Bytes of trailing data per record (fixed part) and per vlen item.
_FIXED = {
    BtfKind.INT: 4,
    BtfKind.ARRAY: 12,
    BtfKind.VAR: 4,
    BtfKind.DECL_TAG: 4,
}
_PER_VLEN = {
    BtfKind.STRUCT: 12,
    BtfKind.UNION: 12,
    BtfKind.ENUM: 8,
    BtfKind.FUNC_PROTO: 8,
    BtfKind.DATASEC: 12,
    BtfKind.ENUM64: 12,
}
_SIZED = frozenset(
    {
        BtfKind.INT,
        BtfKind.FLOAT,
        BtfKind.STRUCT,
        BtfKind.UNION,
        BtfKind.ENUM,
        BtfKind.ENUM64,
        BtfKind.DATASEC,
    }
)
_MAX_KIND = max(BtfKind)
# Kinds with so few types that find() indexes them by name (C's base types)
_FEW_KINDS = frozenset({int(BtfKind.INT), int(BtfKind.FLOAT)})
class _UnknownKind(Exception):
    def __init__(self, kind: int) -> None:
        super().__init__(kind)
        self.kind = kind


class _RecordWordsTable(dict[int, int]):
    """``info`` word -> length in 32-bit words of a type record with that
    ``info`` (``struct btf_type``, its kind's fixed part and ``vlen`` items).

    Filled on first use of each ``info`` value (a few thousand distinct ones
    in a vmlinux's BTF): one dict look-up a type while scanning.

    :raises _UnknownKind: for kind 0 (void has no record) and kinds past
        :data:`_MAX_KIND`
    """

    def __missing__(self, info: int) -> int:
        kind = (info >> 24) & 0x1F
        if kind == 0 or kind > _MAX_KIND:
            raise _UnknownKind(kind)
        k = BtfKind(kind)
        words = 3 + _FIXED.get(k, 0) // 4 + _PER_VLEN.get(k, 0) // 4 * (info & 0xFFFF)
        self[info] = words
        return words


_RECORD_WORDS = _RecordWordsTable()
# the top byte of an info word -> the kind (bits 24-28 of the word)
_KIND_OF_TOP_BYTE = bytes(b & 0x1F for b in range(256))


def _word_array(data: bytes, end: str) -> array.array[int]:
    """``data`` as native 32-bit words, from byte order ``end`` (``<`` or ``>``)."""
    words = array.array("I")
    if words.itemsize != 4:  # pragma: no cover (every CPython platform has 4)
        words = array.array("L")
    words.frombytes(data)
    if (end == "<") != (sys.byteorder == "little"):
        words.byteswap()
    return words


# Deepest chain of typedefs/qualifiers/arrays/anonymous members followed
# before calling the BTF damaged (a loop).
_MAX_DEPTH = 256


def _word_indexes(hay: bytes, value: int) -> Iterator[int]:
    """Indexes of the native 32-bit words of ``hay`` equal to ``value``."""
    pattern = array.array("I" if array.array("I").itemsize == 4 else "L", (value,)).tobytes()
    pos = hay.find(pattern)
    while pos >= 0:
        if pos % 4 == 0:
            yield pos // 4
        pos = hay.find(pattern, pos + 1)


class Btf:
    """The types of one BTF blob, decoded on demand.

    Opening scans the record headers once (to find where each type starts and
    to check the blob is whole); :meth:`type` decodes one type, :meth:`find`
    looks types up by name through an index built on first use.

    :param data: the BTF bytes (from ``struct btf_header`` on)
    :param base: for split BTF (a module's): the BTF its IDs and strings
        continue (vmlinux's)
    :raises BtfError: if ``data`` is not BTF or is damaged
    """

    def __init__(self, data: bytes, base: Btf | None = None) -> None:
        if len(data) < _HDR_SIZE:
            raise BtfError(f"BTF too short: {len(data)} bytes")
        if data[0:2] == b"\x9f\xeb":
            end = "<"
        elif data[0:2] == b"\xeb\x9f":
            end = ">"
        else:
            raise BtfError(f"not BTF: magic {data[0:2].hex()} (want eb9f in either order)")
        version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            end + "BBIIIII", data, 2
        )
        if version != 1:
            raise BtfError(f"BTF version {version} unsupported (only 1 exists)")
        if hdr_len < _HDR_SIZE or hdr_len > len(data):
            raise BtfError(f"BTF header length {hdr_len} invalid")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data):
            raise BtfError(
                f"BTF truncated: sections need {max(t0 + type_len, s0 + str_len)} bytes, "
                f"have {len(data)}"
            )
        byteorder = "little" if end == "<" else "big"
        if base is not None and base.byteorder != byteorder:
            raise BtfError("split BTF and its base differ in byte order")
        self.base = base
        self.byteorder: str = byteorder
        self._end = end
        self._data = data
        self._types = data[t0 : t0 + type_len]
        self._strs = data[s0 : s0 + str_len]
        if base is None and str_len and self._strs[0] != 0:
            raise BtfError("BTF string section does not start with an empty string")
        self.start_id: int = base.start_id + len(base) if base is not None else 1
        self._str_base: int = base._str_base + len(base._strs) if base is not None else 0
        # where each type's record starts, in 32-bit words from the type section
        self._offsets: list[int] = []
        self._words: array.array[int]  # the type section as words: _scan
        # kind and name_off of each type (a byte string and a 32-bit word
        # array, searched at C speed by bytes.find), gathered on first use
        self._kinds_cache: bytes | None = None
        self._name_offs_cache: array.array[int] | None = None
        self._scan()
        self._cache: dict[int, BtfType] = {}
        self._name_off_bytes: bytes | None = None
        self._enumerators: tuple[bytes, array.array[int], array.array[int]] | None = None
        self._string_cache: dict[str, list[int]] = {}
        self._few: dict[int, dict[str, list[int]]] = {}

    # --- scanning -----------------------------------------------------------

    def _scan(self) -> None:
        n = len(self._types)
        if n % 4:
            raise BtfError("BTF type section is not a whole number of 32-bit words")
        self._words = _word_array(self._types, self._end)
        # Only the chain of record starts is followed here, one dict look-up
        # a type (the record's length in words from its whole ``info`` word:
        # :class:`_RecordWords`); kinds and names are gathered from the
        # starts at C speed when first needed (:attr:`_kinds`, :attr:`_name_offs`).
        last = n // 4 - 3  # the last word a 3-word record header can start at
        infos = self._words[1 : last + 2]  # infos[i]: the info word of a record at word i
        offsets = self._offsets
        append, step = offsets.append, _RECORD_WORDS
        i = 0
        try:
            while True:
                append(i)
                i += step[infos[i]]  # IndexError: past ``last``
        except IndexError:
            pass
        except _UnknownKind as e:
            j = len(offsets) - 1
            raise BtfError(
                f"BTF type {self.start_id + j} at offset {offsets[j] * 4:#x}: "
                f"unknown kind {e.kind}"
            ) from None
        offsets.pop()  # the start past ``last``: no record
        pos = i * 4
        if pos < n:
            raise BtfError(f"BTF type {self.start_id + len(offsets)} truncated")
        if pos != n:
            raise BtfError("BTF type section ends inside a type")

    def _gather(self, words: array.array[int] | bytes) -> list[int] | tuple[int, ...]:
        """``words[o]`` for each record start ``o``, at C speed."""
        offsets = self._offsets
        if len(offsets) < 2:  # itemgetter of one index returns the item, not a tuple
            return [words[o] for o in offsets]
        found: tuple[int, ...] = operator.itemgetter(*offsets)(words)
        return found

    @property
    def _kinds(self) -> bytes:
        """The kind of each type, one byte each (``kinds[type_id - start_id]``)."""
        if self._kinds_cache is None:
            # the info word's top byte: kind_flag (bit 31) and kind (bits 24-28)
            top = self._types[7::4] if self._end == "<" else self._types[4::4]
            self._kinds_cache = bytes(self._gather(top)).translate(_KIND_OF_TOP_BYTE)
        return self._kinds_cache

    @property
    def _name_offs(self) -> array.array[int]:
        """The ``name_off`` of each type."""
        if self._name_offs_cache is None:
            self._name_offs_cache = array.array(self._words.typecode, self._gather(self._words))
        return self._name_offs_cache

    def __len__(self) -> int:
        """Number of types in this blob (not counting the base's, nor void)."""
        return len(self._offsets)

    @property
    def end_id(self) -> int:
        """One past the last type ID of this blob."""
        return self.start_id + len(self._offsets)

    # --- strings ----------------------------------------------------------------

    def string(self, offset: int) -> str:
        """The string at ``offset`` (split BTF: past the base's strings).

        :raises BtfError: for an offset outside the string sections
        """
        if offset < self._str_base:
            assert self.base is not None
            return self.base.string(offset)
        off = offset - self._str_base
        strs = self._strs
        if off >= len(strs):
            raise BtfError(f"BTF string offset {offset} out of range")
        nul = strs.find(b"\0", off)
        if nul < 0:
            raise BtfError(f"BTF string at {offset} not terminated")
        return strs[off:nul].decode("utf-8", "replace")

    # --- types -------------------------------------------------------------------

    def kind(self, type_id: int) -> BtfKind:
        """The kind of type ``type_id`` (``UNKN`` for void, ID 0), without decoding it."""
        if type_id < self.start_id:
            if self.base is not None:
                return self.base.kind(type_id)
            if type_id == 0:
                return BtfKind.UNKN
        i = type_id - self.start_id
        if not 0 <= i < len(self._kinds):
            raise BtfError(f"BTF type ID {type_id} out of range")
        return BtfKind(self._kinds[i])

    def type(self, type_id: int) -> BtfType:
        """Type ``type_id`` decoded (IDs below :attr:`start_id` from the base).

        :raises BtfError: for an ID of no type (0 is void: no record)
        """
        if type_id < self.start_id:
            if self.base is not None:
                return self.base.type(type_id)
            raise BtfError(f"BTF type ID {type_id} is void or out of range")
        found = self._cache.get(type_id)
        if found is None:
            found = self._decode(type_id)
            self._cache[type_id] = found
        return found

    def _decode(self, type_id: int) -> BtfType:
        i = type_id - self.start_id
        if i >= len(self._offsets):
            raise BtfError(f"BTF type ID {type_id} out of range (last {self.end_id - 1})")
        pos = self._offsets[i] * 4
        data, end = self._types, self._end
        name_off, info, size_type = struct.unpack_from(end + "III", data, pos)
        kind = BtfKind((info >> 24) & 0x1F)
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        name = self.string(name_off)
        p = pos + 12
        sized = kind in _SIZED
        plain = BtfType(
            type_id,
            kind,
            name,
            vlen,
            kflag,
            size=size_type if sized else None,
            type=None if sized else size_type,
        )
        if kind == BtfKind.INT:
            (raw,) = struct.unpack_from(end + "I", data, p)
            enc = (raw >> 24) & 0x0F
            return replace(
                plain,
                int_info=BtfInt(
                    bool(enc & BTF_INT_SIGNED),
                    bool(enc & BTF_INT_CHAR),
                    bool(enc & BTF_INT_BOOL),
                    (raw >> 16) & 0xFF,
                    raw & 0xFF,
                ),
            )
        if kind == BtfKind.ARRAY:
            return replace(plain, array=BtfArray(*struct.unpack_from(end + "III", data, p)))
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            members = []
            for name_o, mtype, offset in struct.iter_unpack(end + "III", data[p : p + 12 * vlen]):
                if kflag:
                    bit_offset, bits = offset & 0xFFFFFF, offset >> 24
                else:
                    bit_offset, bits = offset, 0
                members.append(BtfMember(self.string(name_o), mtype, bit_offset, bits))
            return replace(plain, members=tuple(members))
        if kind == BtfKind.ENUM:
            # kind_flag: signed values (pahole >= 1.24, with ENUM64); else unsigned.
            fmt = end + ("Ii" if kflag else "II")
            enums = tuple(
                BtfEnumerator(self.string(n), v)
                for n, v in struct.iter_unpack(fmt, data[p : p + 8 * vlen])
            )
            return replace(plain, enumerators=enums)
        if kind == BtfKind.ENUM64:
            enums64 = []
            for n, lo, hi in struct.iter_unpack(end + "III", data[p : p + 12 * vlen]):
                v = (hi << 32) | lo
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                enums64.append(BtfEnumerator(self.string(n), v))
            return replace(plain, enumerators=tuple(enums64))
        if kind == BtfKind.FUNC_PROTO:
            params = tuple(
                BtfParam(self.string(n), t)
                for n, t in struct.iter_unpack(end + "II", data[p : p + 8 * vlen])
            )
            return replace(plain, params=params)
        if kind == BtfKind.DATASEC:
            secs = tuple(
                BtfSecinfo(*s) for s in struct.iter_unpack(end + "III", data[p : p + 12 * vlen])
            )
            return replace(plain, secinfos=secs)
        if kind == BtfKind.VAR:
            (linkage,) = struct.unpack_from(end + "I", data, p)
            return replace(plain, linkage=linkage)
        if kind == BtfKind.DECL_TAG:
            (idx,) = struct.unpack_from(end + "i", data, p)
            return replace(plain, component_idx=idx)
        if kind == BtfKind.FUNC:
            return replace(plain, linkage=vlen)
        return plain

    def __iter__(self) -> Iterator[BtfType]:
        """Every type of this blob (not the base's), in ID order."""
        for type_id in range(self.start_id, self.end_id):
            yield self.type(type_id)

    # --- look-up by name -----------------------------------------------------------

    def _ids_of_kind(self, kind: int) -> Iterator[int]:
        """IDs of this blob's types of ``kind``, found at C speed."""
        kinds, needle = self._kinds, bytes((kind,))
        i = kinds.find(needle)
        while i >= 0:
            yield self.start_id + i
            i = kinds.find(needle, i + 1)

    def _ids_named(self, name_off: int) -> list[int]:
        """IDs of this blob's types whose ``name_off`` is ``name_off``."""
        if self._name_off_bytes is None:
            self._name_off_bytes = self._name_offs.tobytes()
        return [self.start_id + i for i in _word_indexes(self._name_off_bytes, name_off)]

    def _string_offsets(self, name: str) -> list[int]:
        """Every offset (in this blob's numbering) where the string ``name`` starts."""
        found = self._string_cache.get(name)
        if found is None:
            found = self._string_cache[name] = self._search_string(name)
        return found

    def prefetch_strings(self, names: Iterable[str]) -> None:
        """Find where each of ``names`` starts in this blob's strings in one pass,
        for the look-ups to come (:meth:`find`): one regular expression over the
        string section finds twenty names in about the time five searches of
        one name each take (a distribution kernel has ~1.8 MB of strings)."""
        wanted = [n for n in dict.fromkeys(names) if n and n not in self._string_cache]
        if not wanted:
            return
        encoded = [n.encode() for n in wanted]
        # "\0name" followed by "\0", the "\0" left for the next match, as the
        # overlapping searches of _search_string find them
        pattern = re.compile(b"\x00(" + alternation(encoded) + b")(?=\x00)")
        found: dict[bytes, list[int]] = {e: [] for e in encoded}
        for m in pattern.finditer(self._strs):
            found[m.group(1)].append(self._str_base + m.start(1))
        for name, enc in zip(wanted, encoded, strict=True):
            offsets = found[enc]
            if self.base is not None:
                offsets.extend(self.base._string_offsets(name))
            self._string_cache[name] = offsets

    def _search_string(self, name: str) -> list[int]:
        needle = b"\0" + name.encode() + b"\0"
        out = []
        strs = self._strs
        pos = strs.find(needle)
        while pos >= 0:
            out.append(self._str_base + pos + 1)
            pos = strs.find(needle, pos + 1)
        if self.base is not None:
            out.extend(self.base._string_offsets(name))
        return out

    def find(self, name: str, kinds: Iterable[int] | None = None) -> list[int]:
        """IDs of the types named ``name`` (of ``kinds`` if given), this blob
        first, then the base's.

        Struct, union and enum names are tags: ``find("module", [STRUCT])``
        for ``struct module``.  Found through the string section (a name is
        stored once), so nothing is decoded up front.
        """
        wanted = frozenset(int(k) for k in kinds) if kinds is not None else None
        ids: list[int] = []
        if name and wanted is not None and wanted <= _FEW_KINDS:
            # base types: a dozen, named once (drgn tries each spelling of
            # "unsigned long" in turn: no search of the strings for the misses)
            for kind in sorted(wanted):
                ids.extend(self._few_named(kind).get(name, ()))
            ids.sort()
        elif name:
            for off in self._string_offsets(name):
                for t in self._ids_named(off):
                    if wanted is None or self._kinds[t - self.start_id] in wanted:
                        ids.append(t)
        if self.base is not None:
            ids.extend(self.base.find(name, wanted))
        return ids

    def _few_named(self, kind: int) -> dict[str, list[int]]:
        """Name -> IDs of this blob's types of ``kind`` (one of :data:`_FEW_KINDS`)."""
        found = self._few.get(kind)
        if found is None:
            found = self._few[kind] = {}
            for type_id in self._ids_of_kind(kind):
                try:
                    name = self.string(self._name_offs[type_id - self.start_id])
                except BtfError:
                    continue  # a damaged name: found by no name, as by a search
                found.setdefault(name, []).append(type_id)
        return found

    def names(self) -> Iterator[tuple[str, int]]:
        """``(name, type ID)`` of every named type of this blob."""
        for i, off in enumerate(self._name_offs):
            if off:
                yield self.string(off), self.start_id + i

    def _enumerator_index(self) -> tuple[bytes, array.array[int], array.array[int]]:
        """Every enumerator of this blob's ENUM/ENUM64 types, in type ID order:
        its ``name_off`` (native 32-bit words, as bytes), its type's index,
        the word where its ``struct btf_enum``/``btf_enum64`` starts."""
        if self._enumerators is None:
            words, offsets, code = self._words, self._offsets, self._words.typecode
            names, owners, items = array.array(code), array.array(code), array.array(code)
            enum, enum64 = int(BtfKind.ENUM), int(BtfKind.ENUM64)
            for type_id in sorted([*self._ids_of_kind(enum), *self._ids_of_kind(enum64)]):
                j = type_id - self.start_id
                first = offsets[j] + 3
                step = 2 if self._kinds[j] == enum else 3  # words of an item
                end = first + step * (words[first - 2] & 0xFFFF)
                names.extend(words[first:end:step])
                items.extend(range(first, end, step))
                owners.extend(array.array(code, (j,)) * ((end - first) // step))
            self._enumerators = (names.tobytes(), owners, items)
        return self._enumerators

    def find_enumerator(self, name: str) -> list[tuple[int, int]]:
        """``(enum type ID, value)`` of every enumerator ``name`` of this blob, then the base's."""
        found: list[tuple[int, int]] = []
        data, end = self._types, self._end
        names, owners, items = self._enumerator_index()
        for off in self._string_offsets(name):
            for k in _word_indexes(names, off):
                j = owners[k]
                at = items[k] * 4
                (info,) = struct.unpack_from(end + "I", data, self._offsets[j] * 4 + 4)
                signed = bool(info >> 31)
                if self._kinds[j] == BtfKind.ENUM:
                    (v,) = struct.unpack_from(end + ("i" if signed else "I"), data, at + 4)
                else:
                    lo, hi = struct.unpack_from(end + "II", data, at + 4)
                    v = (hi << 32) | lo
                    if signed and v >= 1 << 63:
                        v -= 1 << 64
                found.append((self.start_id + j, v))
        if self.base is not None:
            found.extend(self.base.find_enumerator(name))
        return found

    # --- derived facts --------------------------------------------------------------

    def resolve(self, type_id: int) -> int:
        """``type_id`` with typedefs, qualifiers and type tags stripped."""
        seen = 0
        while type_id:
            k = self.kind(type_id)
            if k not in (
                BtfKind.TYPEDEF,
                BtfKind.VOLATILE,
                BtfKind.CONST,
                BtfKind.RESTRICT,
                BtfKind.TYPE_TAG,
            ):
                break
            t = self.type(type_id).type
            assert t is not None
            type_id = t
            seen += 1
            if seen > _MAX_DEPTH:
                raise BtfError(f"BTF type {type_id}: typedef/qualifier loop")
        return type_id

    def sizeof(self, type_id: int) -> int:
        """Size in bytes of type ``type_id`` (pointers: 8, the kernel's ``long``).

        :raises BtfError: for void, functions and incomplete types
        """
        count = 1
        for _ in range(_MAX_DEPTH):
            type_id = self.resolve(type_id)
            if type_id == 0:
                raise BtfError("sizeof(void)")
            t = self.type(type_id)
            if t.size is not None and t.kind != BtfKind.DATASEC:
                return count * t.size
            if t.kind == BtfKind.PTR:
                return count * self._pointer_size()
            if t.kind != BtfKind.ARRAY:
                raise BtfError(f"BTF type {type_id} ({t.kind.name}) has no size")
            assert t.array is not None
            count *= t.array.nelems
            type_id = t.array.type
        raise BtfError(f"BTF type {type_id}: arrays nested too deep (a loop?)")

    def _pointer_size(self) -> int:
        """``sizeof(long)`` as this BTF says (8 on a 64-bit kernel)."""
        root = self
        while root.base is not None:
            root = root.base
        for t in root.find("long int", [BtfKind.INT]) or root.find("long", [BtfKind.INT]):
            size = root.type(t).size
            if size:
                return size
        return 8

    def offsetof(self, type_id: int, member: str) -> int:
        """Byte offset of ``member`` (``a.b.c``, through anonymous members) in a struct/union.

        :raises BtfError: if there is no such member
        """
        found = self.member(type_id, member)
        if found is None:
            raise BtfError(f"BTF type {type_id} has no member {member!r}")
        return found[0] // 8

    def member(self, type_id: int, member: str) -> tuple[int, int] | None:
        """``(bit offset, type ID)`` of ``member`` (``a.b.c``, through anonymous
        members) in a struct/union, or ``None`` if it has no such member.

        :raises BtfError: members nested too deep (a loop in damaged BTF)
        """
        return self._member(self.resolve(type_id), member.split("."))

    def _member(self, type_id: int, path: list[str], depth: int = 0) -> tuple[int, int] | None:
        if depth > _MAX_DEPTH:
            raise BtfError(f"BTF type {type_id}: members nested too deep (a loop?)")
        t = self.type(type_id)
        for m in t.members:
            if m.name == path[0]:
                if len(path) == 1:
                    return m.bit_offset, m.type
                inner = self._member(self.resolve(m.type), path[1:], depth + 1)
                return None if inner is None else (m.bit_offset + inner[0], inner[1])
        for m in t.members:
            if not m.name and self.kind(self.resolve(m.type)) in (BtfKind.STRUCT, BtfKind.UNION):
                inner = self._member(self.resolve(m.type), path, depth + 1)
                if inner is not None:
                    return m.bit_offset + inner[0], inner[1]
        return None

    def datasec_var_names(self) -> Iterator[tuple[str, int]]:
        """``(name, VAR type ID)`` of every variable placed in a DATASEC, in
        :meth:`datasec_vars` order, the VARs' names read without decoding them."""
        kinds, name_offs, start = self._kinds, self._name_offs, self.start_id
        var = BtfKind.VAR
        for type_id in self._ids_of_kind(BtfKind.DATASEC):
            for si in self.type(type_id).secinfos:
                i = si.type - start
                if 0 <= i < len(kinds):
                    if kinds[i] == var:
                        yield self.string(name_offs[i]), si.type
                elif self.kind(si.type) == var:
                    yield self.type(si.type).name, si.type

    def datasec_vars(self) -> Iterator[tuple[str, BtfType, BtfSecinfo]]:
        """``(section name, VAR, secinfo)`` of every variable placed in a DATASEC."""
        for type_id in self._ids_of_kind(BtfKind.DATASEC):
            sec = self.type(type_id)
            for si in sec.secinfos:
                if self.kind(si.type) == BtfKind.VAR:
                    yield sec.name, self.type(si.type), si
