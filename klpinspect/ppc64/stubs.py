"""Decode ppc64 module call stubs (``struct ppc64_stub_entry``) and OOL ftrace stubs.

A module's ``.stubs`` section is an array of ``struct ppc64_stub_entry``
(``arch/powerpc/kernel/module_64.c``)::

    struct ppc64_stub_entry {
            u32 jump[7];        /* ELFv2 uses 6, ELFv1 7 */
            u32 magic;          /* STUB_MAGIC since v4.6 (f17c4e01e906); "unused" before */
            func_desc_t funcdata;
    };

40 bytes on ELFv2; 48 (<= 5.x) or 56 (6.1+) on ELFv1.  Classification is
pure integer matching on the words; capstone is only used for display
(:mod:`klpinspect.ppc64.disasm`).  Nothing here raises on bad bytes: a short,
zero or garbage slot decodes as ``empty`` or ``unknown`` with its words kept.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from typing import Any

from .insn import (
    BCTR,
    MFLR_R0,
    MTCTR_R12,
    MTLR_R0,
    NOP,
    STD_R2_24_R1,
    STD_R2_40_R1,
    STUB_MAGIC,
    branch_target,
    is_b,
    is_bl,
    sext,
)

__all__ = (
    "OOL_STUB_SIZE",
    "ool_slots",
    "sentinel_slot",
    "Stub",
    "StubKind",
    "decode_ool_stub",
    "decode_stub",
    "decode_stub_general",
    "for_each_ool_stub",
    "ool_reserve_marks_only",
    "for_each_stub",
    "ool_reserved_slots",
    "stub_size",
)


class StubKind(StrEnum):
    """Stub kinds, exactly the values of the JSON ``kind`` field (design.md)."""

    NORMAL = "normal"  # ELFv2 r2-relative call stub
    NORMAL_ELFV1 = "normal-elfv1"  # ELFv1: also loads the callee's TOC from the descriptor
    FTRACE = "ftrace"  # kernel TOC from the paca: ld r12,PACATOC(r13)
    PCREL = "pcrel"  # pld r12,32 (pc-relative), CONFIG_PPC_KERNEL_PCREL
    PCREL_FTRACE = "pcrel-ftrace"  # ld r12,kernelbase(r13); paddi
    OOL_FTRACE = "ool-ftrace"  # struct ftrace_ool_stub (6.13+)
    # 4.6 .. ~5.7 -mprofile-kernel: the _mcount stub is a normal stub whose
    # std r2 was replaced by a nop (squash_toc_save_inst()); gone by 5.10, when
    # _mcount calls use the paca stub (docs/kernel-facts.md §1).
    LEGACY_MCOUNT = "legacy-mcount"
    # ELFv1 stub of old trees whose word 4 is 0xe84b0026 (lwa r2,36(r11)), seen in
    # torvalds/linux at 008d7a914efe (pre-4.5; docs/kernel-facts.md §1).
    LEGACY_ELFV1_LWA = "legacy-elfv1-lwa"
    # pre-3.16 ELFv1 stub with r12/r11 swapped (addis r12,r2; ld r11,32(r12); ld r2,40(r12)).
    LEGACY_R12 = "legacy-r12"
    # The 2016 ppc64le-livepatch seed patch: the TOC save comes first.
    LEGACY_2016_NORMAL = "legacy-2016-normal"
    # The 2016 seed patch's profiling stub: ld r12,PACATOC(r13); addis r11,r12; addi r11,r11;
    # addi r12,r11,0; mtctr r12; bctr.
    LEGACY_2016_PROFILING = "legacy-2016-profiling"
    EMPTY = "empty"
    UNKNOWN = "unknown"

    @property
    def r2_relative(self) -> bool:
        """The stub computes its own address from r2, so it implies the module TOC."""
        return self in _R2_RELATIVE

    @property
    def uses_kernel_toc(self) -> bool:
        """The stub takes the kernel TOC (or kernelbase) from the paca: safe with any r2."""
        return self in _PACA_KINDS


_R2_RELATIVE = frozenset(
    {
        StubKind.NORMAL,
        StubKind.NORMAL_ELFV1,
        StubKind.LEGACY_MCOUNT,
        StubKind.LEGACY_ELFV1_LWA,
        StubKind.LEGACY_R12,
        StubKind.LEGACY_2016_NORMAL,
    }
)
_PACA_KINDS = frozenset(
    {StubKind.FTRACE, StubKind.PCREL_FTRACE, StubKind.LEGACY_2016_PROFILING}
)

_LD_R2_40_R11 = 0xE84B0028  # ELFv1 stub: the callee's TOC from funcdata
_LWA_R2_36_R11 = 0xE84B0026  # the same, mis-encoded in old trees (kernel-facts.md §1)

_K_NORMAL = StubKind.NORMAL  # enum attribute look-ups are slow on the hot path
_K_FTRACE = StubKind.FTRACE

OOL_STUB_SIZE = 24  # struct ftrace_ool_stub: ftrace_op + u32 insn[4]


@dataclass(frozen=True, slots=True)
class Stub:
    """One decoded stub slot.

    :param address: address of the slot (``struct ppc64_stub_entry *``)
    :param kind: the layout recognised
    :param raw: the bytes decoded (the slot; ``insn[4]`` of an OOL stub); :attr:`words`
        are read from it on demand, which keeps decoding cheap
    :param byteorder: byte order of ``raw``
    :param reladdr: the signed offset the stub adds (r2-relative stubs: ``stub - r2``;
        ftrace stubs: ``target - kernel_toc``; PCREL: the pc-relative displacement)
    :param target: where the stub branches, when the slot alone (``funcdata``) or the
        slot plus ``kernel_toc``/``kernelbase`` determines it
    :param implied_toc: r2-relative stubs: ``address - reladdr``, the module TOC the
        stub assumes (``my_r2()`` at load time)
    :param paca_offset: paca stubs: the DS field of ``ld r12,X(r13)``
        (``offsetof(struct paca_struct, kernel_toc)`` or ``kernelbase``)
    :param funcdata: ``funcdata.addr``, the first doubleword after ``magic``
    :param funcdata_toc: ELFv1 only: the descriptor's TOC
    :param magic_ok: ``magic == STUB_MAGIC``; ``None`` if the slot was too short to tell
    :param site: OOL stubs: the patched call site (``b`` target minus 4)
    """

    address: int
    kind: StubKind
    raw: bytes
    byteorder: str = "little"
    reladdr: int | None = None
    target: int | None = None
    implied_toc: int | None = None
    paca_offset: int | None = None
    funcdata: int | None = None
    funcdata_toc: int | None = None
    magic_ok: bool | None = None
    site: int | None = None

    @property
    def words(self) -> tuple[int, ...]:
        """The instruction words ``jump[]`` + ``magic`` as read (as many as present)."""
        return _words(self.raw[:32], self.byteorder)


_new = object.__new__
_DEFAULTS = {
    "reladdr": None,
    "target": None,
    "implied_toc": None,
    "paca_offset": None,
    "funcdata": None,
    "funcdata_toc": None,
    "magic_ok": None,
    "site": None,
}


def _make(
    address: int, kind: StubKind, raw: bytes, byteorder: str, **fields: int | bool | None
) -> Stub:
    stub: Any = _new(_StubBuilder)
    stub.address = address
    stub.kind = kind
    stub.raw = raw
    stub.byteorder = byteorder
    for name, value in _DEFAULTS.items():
        setattr(stub, name, fields.get(name, value))
    stub.__class__ = Stub
    return stub  # type: ignore[no-any-return]


class _StubBuilder:
    """A plain slot bag that :func:`decode_stub` turns into a :class:`Stub`.

    A frozen dataclass's ``__init__`` costs one ``object.__setattr__`` per field;
    plain slot stores on this class (the same ``__slots__`` as :class:`Stub`, so
    the layouts match) followed by one ``__class__`` assignment are several times
    cheaper.  Every slot must be set: the result then equals, hashes and prints
    like a ``Stub(...)`` built normally.
    """

    __slots__ = Stub.__slots__


def stub_size(abi: int = 2, func_desc_size: int | None = None) -> int:
    """``sizeof(struct ppc64_stub_entry)``: 40 on ELFv2; 32 + descriptor on ELFv1.

    :param func_desc_size: ``sizeof(func_desc_t)``; ELFv1 default 24 (6.1+), 16 on <= 5.x
    """
    if func_desc_size is None:
        func_desc_size = 8 if abi == 2 else 24
    return 32 + func_desc_size


def _words(data: bytes, byteorder: str) -> tuple[int, ...]:
    n = len(data) // 4
    return struct.unpack_from(("<" if byteorder == "little" else ">") + "I" * n, data)


_W8 = {"little": struct.Struct("<8I"), "big": struct.Struct(">8I")}
_W8Q = {"little": struct.Struct("<8IQ"), "big": struct.Struct(">8IQ")}
_U64 = {"little": struct.Struct("<Q"), "big": struct.Struct(">Q")}
_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}


def _slot_words(data: bytes, byteorder: str) -> tuple[int, ...]:
    if len(data) >= 32:
        return _W8[byteorder].unpack_from(data)
    n = len(data) // 4
    return struct.unpack_from(("<" if byteorder == "little" else ">") + "I" * n, data)


def _u64(data: bytes, offset: int, byteorder: str) -> int | None:
    if len(data) < offset + 8:
        return None
    value: int = _U64[byteorder].unpack_from(data, offset)[0]
    return value


def _ha_lo(w_hi: int, w_lo: int) -> int:
    return (sext(w_hi & 0xFFFF, 16) << 16) + sext(w_lo & 0xFFFF, 16)


def _sext34(hi18: int, lo16: int) -> int:
    return sext(((hi18 & 0x3FFFF) << 16) | (lo16 & 0xFFFF), 34)


_MASK64 = 0xFFFFFFFFFFFFFFFF


def _r2_relative(
    kind: StubKind,
    rel: int,
    address: int,
    data: bytes,
    byteorder: str,
    funcdata: int | None,
    magic_ok: bool | None,
    elfv1: bool = False,
) -> Stub:
    """An r2-relative stub: r11 = r2 + rel is the stub itself, the target is funcdata
    (ELFv1: the descriptor's TOC at +40)."""
    return _make(
        address, kind, data, byteorder, reladdr=rel, target=funcdata,
        implied_toc=(address - rel) & _MASK64, funcdata=funcdata,
        funcdata_toc=_u64(data, 40, byteorder) if elfv1 else None, magic_ok=magic_ok,
    )


def _from_paca(
    kind: StubKind,
    rel: int,
    base: int | None,
    address: int,
    data: bytes,
    byteorder: str,
    funcdata: int | None,
    magic_ok: bool | None,
    paca_offset: int,
) -> Stub:
    """A paca stub: r12 = paca->kernel_toc (or kernelbase) + rel, whatever r2 holds."""
    return _make(
        address, kind, data, byteorder, reladdr=rel,
        target=None if base is None else (base + rel) & _MASK64,
        paca_offset=paca_offset, funcdata=funcdata, magic_ok=magic_ok,
    )


def decode_stub(
    data: bytes,
    address: int,
    *,
    kernel_toc: int | None = None,
    byteorder: str = "little",
    abi: int = 2,
    kernelbase: int | None = None,
) -> Stub:
    """Decode one stub slot.

    :param data: the slot's bytes (``sizeof(struct ppc64_stub_entry)``; shorter input
        is decoded as far as it goes)
    :param address: address of the slot
    :param kernel_toc: ``paca->kernel_toc``, to resolve ftrace stubs' targets
    :param byteorder: ``"little"`` (ppc64le) or ``"big"``
    :param abi: 2 (ELFv2) or 1 (ELFv1): which normal stub layout to expect
    :param kernelbase: ``paca->kernelbase``, to resolve PCREL ftrace stubs
    """
    if byteorder not in _W8Q:  # unknown byte order: read as little-endian
        byteorder = "little"
    if len(data) >= 40:
        return _decode_slots(data, address, 0, 1, len(data), kernel_toc, byteorder, abi,
                             kernelbase)[0]
    # shorter than a slot: the general path decodes what is there
    return decode_stub_general(
        data, address, kernel_toc=kernel_toc, byteorder=byteorder, abi=abi,
        kernelbase=kernelbase,
    )


@lru_cache(maxsize=16)
def _slot_struct(byteorder: str, size: int) -> struct.Struct:
    """One slot of ``size`` bytes as its eight words and ``funcdata`` (the rest skipped)."""
    return struct.Struct(("<" if byteorder == "little" else ">") + f"8IQ{size - 40}x")


def _decode_slots(
    section: bytes,
    address: int,
    first: int,
    last: int,
    size: int,
    kernel_toc: int | None,
    byteorder: str,
    abi: int,
    kernelbase: int | None,
) -> list[Stub]:
    """Slots ``first`` to ``last - 1`` of ``section`` (``size`` bytes each, >= 40), decoded.

    One C-level unpack for the whole run, and for the two kinds every module has
    (ELFv2 normal, paca ftrace) plain slot stores and one class switch (see
    :class:`_StubBuilder`); anything else goes to :func:`decode_stub_general`.
    Millions of slots pass here, so the loop is written out for speed.
    """
    out: list[Stub] = []
    append = out.append
    new = _new
    builder = _StubBuilder
    off = first * size
    at = address + off
    for w0, w1, w2, w3, w4, w5, _w6, w7, fd in _slot_struct(byteorder, size).iter_unpack(
        section[off : last * size]
    ):
        b: Any
        if w2 == STD_R2_24_R1:
            if (
                w3 == 0xE98B0020  # ld r12,32(r11)
                and w0 >> 16 == 0x3D62  # addis r11,r2,HA
                and w1 >> 16 == 0x396B  # addi r11,r11,LO
                and w4 == 0x7D8903A6  # mtctr r12
                and w5 == 0x4E800420  # bctr
            ):
                rel = ((((w0 & 0xFFFF) ^ 0x8000) - 0x8000) << 16) + (
                    ((w1 & 0xFFFF) ^ 0x8000) - 0x8000
                )
                b = new(builder)
                b.address = at
                b.kind = _K_NORMAL
                b.raw = section[off : off + size]
                b.byteorder = byteorder
                b.reladdr = rel
                b.target = b.funcdata = fd
                b.implied_toc = (at - rel) & _MASK64
                b.paca_offset = b.funcdata_toc = b.site = None
                b.magic_ok = w7 == 0x73747562
                b.__class__ = Stub
                append(b)
                off += size
                at += size
                continue
        elif (
            w3 == 0x7D8903A6  # mtctr r12
            and w0 & 0xFFFF0003 == 0xE98D0000  # ld r12,X(r13)
            and w1 >> 16 == 0x3D8C  # addis r12,r12,HA
            and w2 >> 16 == 0x398C  # addi r12,r12,LO
            and w4 == 0x4E800420  # bctr
        ):
            rel = ((((w1 & 0xFFFF) ^ 0x8000) - 0x8000) << 16) + (((w2 & 0xFFFF) ^ 0x8000) - 0x8000)
            b = new(builder)
            b.address = at
            b.kind = _K_FTRACE
            b.raw = section[off : off + size]
            b.byteorder = byteorder
            b.reladdr = rel
            b.target = None if kernel_toc is None else (kernel_toc + rel) & _MASK64
            b.implied_toc = b.funcdata_toc = b.site = None
            b.paca_offset = w0 & 0xFFFC
            b.funcdata = fd
            b.magic_ok = w7 == 0x73747562
            b.__class__ = Stub
            append(b)
            off += size
            at += size
            continue
        append(decode_stub_general(section[off : off + size], at, kernel_toc=kernel_toc,
                                   byteorder=byteorder, abi=abi, kernelbase=kernelbase))
        off += size
        at += size
    return out


def decode_stub_general(
    data: bytes,
    address: int,
    *,
    kernel_toc: int | None = None,
    byteorder: str = "little",
    abi: int = 2,
    kernelbase: int | None = None,
) -> Stub:
    """:func:`decode_stub` without its fast path: every layout, one matcher at a time.

    The fast path must give exactly what this gives (a test holds them to it).
    """
    if byteorder not in _W8:
        byteorder = "little"
    w = _slot_words(data, byteorder)
    n = len(w)
    magic_ok = (w[7] == STUB_MAGIC) if n >= 8 else None
    funcdata = _u64(data, 32, byteorder)
    if n < 6:
        kind = StubKind.EMPTY if not any(data) else StubKind.UNKNOWN
        return _make(address, kind, data, byteorder, magic_ok=magic_ok, funcdata=funcdata)
    w0, w1, w2, w3, w4, w5 = w[0], w[1], w[2], w[3], w[4], w[5]
    hi0 = w0 & 0xFFFF0000

    # (module-level helpers, not closures: a closure would turn these locals into
    # cells and slow the fast path above)
    r2 = (address, data, byteorder, funcdata, magic_ok)
    paca = (address, data, byteorder, funcdata, magic_ok, w0 & 0xFFFC)

    # Normal r2-relative stubs: addis r11,r2,HA; addi r11,r11,LO; ...
    if hi0 == 0x3D620000 and w1 & 0xFFFF0000 == 0x396B0000 and w3 == 0xE98B0020:
        if w4 == MTCTR_R12 and w5 == BCTR:
            if w2 == STD_R2_24_R1:
                return _r2_relative(StubKind.NORMAL, _ha_lo(w0, w1), *r2)
            if w2 == NOP:
                return _r2_relative(StubKind.LEGACY_MCOUNT, _ha_lo(w0, w1), *r2)
        elif w2 == STD_R2_40_R1 and n >= 7 and w5 == MTCTR_R12 and w[6] == BCTR:
            if w4 == _LD_R2_40_R11:
                return _r2_relative(StubKind.NORMAL_ELFV1, _ha_lo(w0, w1), *r2, elfv1=True)
            if w4 == _LWA_R2_36_R11:
                return _r2_relative(StubKind.LEGACY_ELFV1_LWA, _ha_lo(w0, w1), *r2, elfv1=True)

    # paca stubs: ld r12,X(r13)
    if w0 & 0xFFFF0003 == 0xE98D0000:
        if (
            w1 & 0xFFFF0000 == 0x3D8C0000
            and w2 & 0xFFFF0000 == 0x398C0000
            and w3 == MTCTR_R12
            and w4 == BCTR
        ):
            return _from_paca(StubKind.FTRACE, _ha_lo(w1, w2), kernel_toc, *paca)
        if (
            w1 == NOP
            and w2 & 0xFFFC0000 == 0x06000000
            and w3 & 0xFFFF0000 == 0x398C0000
            and w4 == MTCTR_R12
            and w5 == BCTR
        ):
            return _from_paca(StubKind.PCREL_FTRACE, _sext34(w2, w3), kernelbase, *paca)
        # 2016 seed patch: ld r12,PACATOC(r13); addis r11,r12,HI; addi r11,r11,LO;
        # addi r12,r11,0; mtctr r12; bctr
        if (
            w1 & 0xFFFF0000 == 0x3D6C0000
            and w2 & 0xFFFF0000 == 0x396B0000
            and w3 == 0x398B0000
            and w4 == MTCTR_R12
            and w5 == BCTR
        ):
            return _from_paca(StubKind.LEGACY_2016_PROFILING, _ha_lo(w1, w2), kernel_toc, *paca)

    # PCREL normal stub: pld r12,D(0),1 (prefix 0x0410xxxx, suffix 0xe580xxxx)
    if w0 & 0xFFFC0000 == 0x04100000 and w1 & 0xFFFF0000 == 0xE5800000:
        if w2 == MTCTR_R12 and w3 == BCTR:
            rel = _sext34(w0, w1)
            tgt = funcdata if rel == 32 else None
            if tgt is None and 0 <= rel and rel + 8 <= len(data):
                tgt = _u64(data, rel, byteorder)
            return _make(
                address, StubKind.PCREL, data, byteorder, reladdr=rel, target=tgt,
                funcdata=funcdata, magic_ok=magic_ok,
            )

    # 2016 seed patch normal stub: std r2,24(r1) first, then addis/addi/ld/mtctr/bctr.
    if (
        w0 == STD_R2_24_R1
        and w1 & 0xFFFF0000 == 0x3D620000
        and w2 & 0xFFFF0000 == 0x396B0000
        and w3 == 0xE98B0020
        and w4 == MTCTR_R12
        and w5 == BCTR
    ):
        return _r2_relative(StubKind.LEGACY_2016_NORMAL, _ha_lo(w1, w2), *r2)

    # pre-3.16 (ELFv1) r12/r11 stub: addis r12,r2; addi r12,r12; std r2,40(r1);
    # ld r11,32(r12); ld r2,40(r12); mtctr r11; bctr
    if (
        hi0 == 0x3D820000
        and w1 & 0xFFFF0000 == 0x398C0000
        and w2 == STD_R2_40_R1
        and w3 == 0xE96C0020
        and w4 == 0xE84C0028
        and w5 == 0x7D6903A6
        and n >= 7
        and w[6] == BCTR
    ):
        return _r2_relative(StubKind.LEGACY_R12, _ha_lo(w0, w1), *r2, elfv1=True)

    kind = StubKind.EMPTY if not any(data) else StubKind.UNKNOWN
    return _make(address, kind, data, byteorder, funcdata=funcdata, magic_ok=magic_ok)


def ool_reserved_slots(ool_stub_count: int, slot_size: int = 40) -> int:
    """Slots ``get_stubs_size()`` reserves for ``ool_stub_count`` OOL stubs (6.13+)."""
    total = ool_stub_count * OOL_STUB_SIZE
    return (total + slot_size - 1) // slot_size


def ool_slots(address: int, ool: tuple[int, int] | None, slot_size: int) -> range:
    """Slot numbers the out-of-line ftrace area occupies in ``.stubs`` (6.13+).

    :param address: address of ``.stubs``
    :param ool: ``(mod->arch.ool_stubs, mod->arch.ool_stub_count)``, or ``None``
    :returns: an empty range without one
    """
    if ool is None or not ool[0] or ool[1] <= 0:
        return range(0)
    first = (ool[0] - address) // slot_size
    return range(first, first + ool_reserved_slots(ool[1], slot_size))


def sentinel_slot(section: bytes, slot_size: int, skip: range = range(0)) -> int | None:
    """The first whole slot whose ``funcdata`` (the doubleword at +32) is zero.

    Kernels before 6.18 end the used stubs with such a slot (``get_stubs_size()``
    adds one; 6.18's b137312fbf2d "powerpc64/modules: replace stub allocation
    sentinel with an explicit counter" replaced it with ``mod->arch.stub_count``).
    The OOL ftrace area's slots (``skip``) hold other data, whose "funcdata" may
    be 0: they never end the list.
    """
    n = len(section) // slot_size
    if n == 0:
        return None
    # every slot's funcdata in one C-level pass and the zeros found by list.index:
    # the walk is per slot, millions of them (byte order does not matter for == 0)
    if slot_size % 8:
        words = [w for (w,) in struct.iter_unpack(f"<32xQ{slot_size - 40}x",
                                                  section[: n * slot_size])]
    else:
        words = memoryview(section)[: n * slot_size].cast("Q")[
            4 :: slot_size // 8].tolist()
    start = 0
    while True:
        try:
            i = words.index(0, start)
        except ValueError:
            return None
        if i not in skip:
            return i
        start = i + 1


def for_each_stub(
    section: bytes,
    address: int,
    *,
    count: int | None = None,
    ool: tuple[int, int] | None = None,
    kernel_toc: int | None = None,
    kernelbase: int | None = None,
    byteorder: str = "little",
    abi: int = 2,
    func_desc_size: int | None = None,
) -> Iterator[Stub]:
    """Walk the used slots of a ``.stubs`` section the way ``stub_for_addr()`` fills them.

    Up to 7.1 the kernel walks slots while ``funcdata`` is non-zero and fills the
    first zero one, so the used slots end at the first zero ``funcdata``.  Since
    b137312fbf2d ("powerpc64/modules: replace stub allocation sentinel with an
    explicit counter", v6.18) the kernel keeps ``mod->arch.stub_count`` instead:
    pass it as ``count`` to walk exactly that many.

    :param section: the bytes of ``.stubs`` (read in one go)
    :param address: address of ``.stubs``
    :param count: ``mod->arch.stub_count`` when the kernel has it
    :param ool: ``(mod->arch.ool_stubs, mod->arch.ool_stub_count)``: the out-of-line
        ftrace area (6.13+), whose slots are skipped here (see :func:`for_each_ool_stub`)
    """
    size = stub_size(abi, func_desc_size)
    nslots = len(section) // size
    skip = ool_slots(address, ool, size)
    if count is not None:
        nslots = min(nslots, max(count, 0))
    else:
        end = sentinel_slot(section, size, skip)
        nslots = nslots if end is None else end
    if byteorder not in _W8Q:
        byteorder = "little"
    # the OOL area (a range of slots) splits the walk in two runs at most
    runs = [(0, min(nslots, skip.start)), (max(skip.stop, 0), nslots)] if skip else [(0, nslots)]
    for first, last in runs:
        if first < last:
            yield from _decode_slots(section, address, first, last, size, kernel_toc, byteorder,
                                     abi, kernelbase)


def decode_ool_stub(data: bytes, address: int, *, byteorder: str = "little") -> Stub:
    """Decode a ``struct ftrace_ool_stub`` (6.13+, ``CONFIG_PPC_FTRACE_OUT_OF_LINE``).

    ``{ftrace_op; mflr r0; bl tramp; mtlr r0; b ip+4}``.  ``address`` is the start of
    the struct (``ftrace_op``); ``target`` is the ``bl`` target (``ftrace_caller`` or
    the module's ``arch.tramp``) and ``site`` the traced call site (``b`` target - 4).
    """
    if byteorder not in _W8:
        byteorder = "little"
    op = _u64(data, 0, byteorder)
    insns = data[8:OOL_STUB_SIZE]  # after the ftrace_op pointer
    w = _slot_words(insns, byteorder)
    if (
        len(w) == 4
        and w[0] == MFLR_R0
        and is_bl(w[1])
        and w[2] == MTLR_R0
        and is_b(w[3])
    ):
        return _make(
            address,
            StubKind.OOL_FTRACE,
            insns,
            byteorder,
            target=branch_target(w[1], address + 12),
            funcdata=op,
            site=(branch_target(w[3], address + 20) - 4) & _MASK64,
        )
    kind = StubKind.EMPTY if not any(data[:OOL_STUB_SIZE]) else StubKind.UNKNOWN
    return _make(address, kind, insns, byteorder, funcdata=op)


def ool_reserve_marks_only(
    data: bytes, offset: int, *, slot_size: int = 40, byteorder: str = "little"
) -> bool:
    """Whether an OOL stub's bytes are zero but for the 6.13–6.17 reserve marks.

    ``setup_ftrace_ool_stubs()`` from eec37961a56a (v6.13) on marks the ``.stubs``
    slots reserved for the OOL area by writing a ``nop`` (``0x60000000``,
    ``patch_u32()``, kernel byte order) into the first 4 bytes of their
    ``funcdata`` (slot + 32): only the first slot until f6b4df37ebfe
    ("powerpc64/modules: correctly iterate over stubs in setup_ftrace_ool_stubs",
    v6.18; backported to 6.17 stable only, review of 2025-10-13) made it every slot; 6.18's
    b137312fbf2d ("... replace stub allocation sentinel with an explicit
    counter") counts them in ``mod->arch.stub_count`` and writes no mark.  An OOL stub that
    ``ftrace_init_ool_stub()`` never wrote therefore holds only zeros and such
    marks: it is unused, not unknown.

    :param data: the stub's bytes (``struct ftrace_ool_stub``)
    :param offset: where they start inside ``.stubs``
    """
    if byteorder not in _W8:
        byteorder = "little"
    mark = NOP.to_bytes(4, byteorder)  # type: ignore[arg-type]
    rest = bytearray(data)
    # every slot funcdata (slot start + 32) that falls inside this stub
    first = max(0, (offset - 32) // slot_size)
    for slot in range(first, (offset + len(data)) // slot_size + 1):
        at = slot * slot_size + 32 - offset
        if 0 <= at and at + 4 <= len(data) and rest[at : at + 4] == mark:
            rest[at : at + 4] = bytes(4)
    return not any(rest)


_OOL = {"little": struct.Struct("<Q4I"), "big": struct.Struct(">Q4I")}
_K_OOL = StubKind.OOL_FTRACE


def for_each_ool_stub(
    section: bytes,
    address: int,
    ool_stubs: int,
    ool_stub_count: int,
    *,
    byteorder: str = "little",
    slot_size: int = 40,
) -> Iterator[Stub]:
    """The ``ool_stub_count`` OOL stubs at ``ool_stubs`` inside ``.stubs``.

    A stub holding only zeros and 6.13–6.17 reserve marks
    (:func:`ool_reserve_marks_only`) is ``EMPTY``: never written by
    ``ftrace_init_ool_stub()``.

    Every stub gives exactly what :func:`decode_ool_stub` gives for its bytes (a
    test holds them to it); the ``{mflr; bl; mtlr; b}`` ones, all of them in a
    live module (Debian sid: ~12,000 stubs), are matched inline on words unpacked
    from the whole area in one C-level pass.

    :param ool_stubs: ``mod->arch.ool_stubs`` (``struct ftrace_ool_stub *``)
    :param slot_size: ``sizeof(struct ppc64_stub_entry)``, where the marks sit
    """
    if byteorder not in _OOL:
        byteorder = "little"
    start = ool_stubs - address
    if start < 0:
        return
    n = min(max(ool_stub_count, 0), (len(section) - start) // OOL_STUB_SIZE)
    if n <= 0:
        return
    off = start
    at = address + start
    for op, w0, w1, w2, w3 in _OOL[byteorder].iter_unpack(
        section[start : start + n * OOL_STUB_SIZE]
    ):
        if (
            w0 == 0x7C0802A6  # mflr r0
            and w2 == 0x7C0803A6  # mtlr r0
            and w1 & 0xFC000003 == 0x48000001  # bl
            and w3 & 0xFC000003 == 0x48000000  # b
        ):
            b: Any = _StubBuilder()
            b.address = at
            b.kind = _K_OOL
            b.raw = section[off + 8 : off + OOL_STUB_SIZE]
            b.byteorder = byteorder
            b.reladdr = b.implied_toc = b.paca_offset = b.funcdata_toc = b.magic_ok = None
            # the bl at insn[1] (at + 12) and the b at insn[3] (at + 20), whose target
            # minus 4 is the site: sign-extended 26-bit LI fields
            b.target = (at + 12 + (((w1 & 0x03FFFFFC) ^ 0x02000000) - 0x02000000)) & _MASK64
            b.site = (at + 16 + (((w3 & 0x03FFFFFC) ^ 0x02000000) - 0x02000000)) & _MASK64
            b.funcdata = op
            b.__class__ = Stub
            yield b
        else:
            data = section[off : off + OOL_STUB_SIZE]
            stub = decode_ool_stub(data, at, byteorder=byteorder)
            if stub.kind is StubKind.UNKNOWN and ool_reserve_marks_only(
                data, off, slot_size=slot_size, byteorder=byteorder
            ):
                stub = replace(stub, kind=StubKind.EMPTY)
            yield stub
        off += OOL_STUB_SIZE
        at += OOL_STUB_SIZE
