"""decode_stub / for_each_stub / OOL stubs on bytes made by the real assembler.

Each layout of facts §3 is written symbolically in ``tests/asm/*.s`` (``@ha``/``@l``
on the inputs below, passed with ``--defsym``), assembled at test time, decoded,
and every ``Stub`` field is checked against the inputs.  Where facts §11 has a
vector (verified there with binutils 2.40 and capstone), the assembled words are
also compared with it.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from asmutil import assemble
from hypothesis import given, settings
from hypothesis import strategies as st

from klpinspect.ppc64 import insn
from klpinspect.ppc64.stubs import (
    OOL_STUB_SIZE,
    Stub,
    StubKind,
    decode_ool_stub,
    decode_stub,
    decode_stub_general,
    for_each_ool_stub,
    for_each_stub,
    ool_reserve_marks_only,
    ool_reserved_slots,
    ool_slots,
    sentinel_slot,
    stub_size,
)

MASK64 = (1 << 64) - 1

# facts §11 inputs
TV1 = {"STUB": 0xC008000001A70100, "TOC": 0xC008000001A88000, "TARGET": 0xC000000000AB1230}
TV1B = {"STUB": 0xC00800000A1449A8, "TOC": 0xC00800000A128000, "TARGET": 0xC000000000AB1230}
KTOC_TV3 = 0xC000000001C0B100
FTRACE_CALLER_TV3 = 0xC000000000089B00
MCOUNT_TV3B = 0xC000000000089A00
FTOC = 0xC000000001C0B100  # an ELFv1 descriptor's TOC (any value)


def _doc(words: str) -> tuple[int, ...]:
    return tuple(int(w, 16) for w in words.split())


@dataclass(frozen=True)
class Case:
    """One assembled stub and what decoding it must give."""

    id: str
    source: str
    defsyms: Mapping[str, int]
    address: int
    expect: Mapping[str, Any]  # Stub field -> value; unlisted optional fields must be None
    byteorder: str = "little"
    abi: int = 2
    size: int = 40
    decode: Mapping[str, int] = field(default_factory=dict)  # kernel_toc= / kernelbase=
    doc_words: tuple[int, ...] | None = None  # facts §11, 8 words (jump[] + magic)


def _r2_expect(kind: StubKind, syms: Mapping[str, int], **more: Any) -> dict[str, Any]:
    rel = syms["STUB"] - syms["TOC"]
    return {
        "kind": kind,
        "reladdr": rel,
        "target": syms["TARGET"],
        "implied_toc": syms["TOC"],
        "funcdata": syms["TARGET"],
        "magic_ok": True,
        **more,
    }


def _ftrace_syms(ktoc: int, target: int, pacatoc: int = 16) -> dict[str, int]:
    return {"KTOC": ktoc, "TARGET": target, "PACATOC": pacatoc}


_TV3 = _ftrace_syms(KTOC_TV3, FTRACE_CALLER_TV3)
_TV3_PSERIES_N = _ftrace_syms(0xC000000000BE8000, 0xC00000000006509C, pacatoc=8)
_TV3B = {**TV1, "TARGET": MCOUNT_TV3B}
_TV5 = {"KBASE": 0xC000000000000000, "TARGET": FTRACE_CALLER_TV3, "PACAKB": 16}
_ELFV1 = {**TV1, "FTOC": FTOC}
_R12 = {"STUB": 0xD000000000A01230, "TOC": 0xD000000000A18000, "TARGET": 0xC0000000000ABCDE,
        "FTOC": 0xC000000000E6A000}
_L2016 = {"STUB": 0xD000000000A01230, "TOC": 0xD000000000A09100, "TARGET": 0xC000000000123450}
_L2016P = _ftrace_syms(0xC000000000E6A000, 0xC00000000000A1B0)

CASES = [
    Case("TV1-normal", "stub_normal.s", TV1, TV1["STUB"],
         _r2_expect(StubKind.NORMAL, TV1),
         doc_words=_doc("3d62ffff 396b8100 f8410018 e98b0020 7d8903a6 4e800420 00000000 73747562")),
    Case("TV1b-normal-ha-carry", "stub_normal.s", TV1B, TV1B["STUB"],
         _r2_expect(StubKind.NORMAL, TV1B),
         doc_words=_doc("3d620002 396bc9a8 f8410018 e98b0020 7d8903a6 4e800420 00000000 73747562")),
    Case("TV1-normal-BE-elfv2", "stub_normal.s", TV1, TV1["STUB"],
         _r2_expect(StubKind.NORMAL, TV1), byteorder="big",
         doc_words=_doc("3d62ffff 396b8100 f8410018 e98b0020 7d8903a6 4e800420 00000000 73747562")),
    Case("TV2-normal-elfv1-48", "stub_normal_elfv1.s", _ELFV1, TV1["STUB"],
         _r2_expect(StubKind.NORMAL_ELFV1, TV1, funcdata_toc=FTOC), byteorder="big", abi=1,
         size=48,
         doc_words=_doc("3d62ffff 396b8100 f8410028 e98b0020 e84b0028 7d8903a6 4e800420 73747562")),
    Case("TV2-normal-elfv1-56", "stub_normal_elfv1.s", {**_ELFV1, "FDESC24": 1}, TV1["STUB"],
         _r2_expect(StubKind.NORMAL_ELFV1, TV1, funcdata_toc=FTOC), byteorder="big", abi=1,
         size=56,
         doc_words=_doc("3d62ffff 396b8100 f8410028 e98b0020 e84b0028 7d8903a6 4e800420 73747562")),
    Case("TV10-legacy-elfv1-lwa", "stub_legacy_elfv1_lwa.s", _ELFV1, TV1["STUB"],
         _r2_expect(StubKind.LEGACY_ELFV1_LWA, TV1, funcdata_toc=FTOC, magic_ok=False),
         byteorder="big", abi=1, size=48),
    Case("legacy-r12", "stub_legacy_r12.s", _R12, _R12["STUB"],
         _r2_expect(StubKind.LEGACY_R12, _R12, funcdata_toc=_R12["FTOC"], magic_ok=False),
         byteorder="big", abi=1, size=48),
    Case("TV3-ftrace", "stub_ftrace.s", _TV3, 0xC008000001A70000,
         {"kind": StubKind.FTRACE, "reladdr": FTRACE_CALLER_TV3 - KTOC_TV3,
          "target": FTRACE_CALLER_TV3, "paca_offset": 16, "funcdata": FTRACE_CALLER_TV3,
          "magic_ok": True},
         decode={"kernel_toc": KTOC_TV3},
         doc_words=_doc("e98d0010 3d8cfe48 398cea00 7d8903a6 4e800420 00000000 00000000 73747562")),
    Case("TV3-ftrace-no-kernel-toc", "stub_ftrace.s", _TV3, 0xC008000001A70000,
         {"kind": StubKind.FTRACE, "reladdr": FTRACE_CALLER_TV3 - KTOC_TV3, "target": None,
          "paca_offset": 16, "funcdata": FTRACE_CALLER_TV3, "magic_ok": True}),
    Case("ftrace-pseries-n", "stub_ftrace.s", _TV3_PSERIES_N, 0xC008000000F901F0,
         {"kind": StubKind.FTRACE, "reladdr": 0xC00000000006509C - 0xC000000000BE8000,
          "target": 0xC00000000006509C, "paca_offset": 8, "funcdata": 0xC00000000006509C,
          "magic_ok": True},
         decode={"kernel_toc": 0xC000000000BE8000}),
    Case("ftrace-BE", "stub_ftrace.s", _TV3, 0xC008000001A70000,
         {"kind": StubKind.FTRACE, "reladdr": FTRACE_CALLER_TV3 - KTOC_TV3,
          "target": FTRACE_CALLER_TV3, "paca_offset": 16, "funcdata": FTRACE_CALLER_TV3,
          "magic_ok": True},
         byteorder="big", decode={"kernel_toc": KTOC_TV3},
         doc_words=_doc("e98d0010 3d8cfe48 398cea00 7d8903a6 4e800420 00000000 00000000 73747562")),
    Case("TV3b-legacy-mcount", "stub_legacy_mcount.s", _TV3B, TV1["STUB"],
         _r2_expect(StubKind.LEGACY_MCOUNT, _TV3B),
         doc_words=_doc("3d62ffff 396b8100 60000000 e98b0020 7d8903a6 4e800420 00000000 73747562")),
    Case("TV4-pcrel", "stub_pcrel.s", {"TARGET": 0xC000000000AB1230}, 0xC008000001A70100,
         {"kind": StubKind.PCREL, "reladdr": 32, "target": 0xC000000000AB1230,
          "funcdata": 0xC000000000AB1230, "magic_ok": True},
         doc_words=_doc("04100000 e5800020 7d8903a6 4e800420 00000000 00000000 00000000 73747562")),
    Case("TV5-pcrel-ftrace", "stub_pcrel_ftrace.s", _TV5, 0xC008000001A70100,
         {"kind": StubKind.PCREL_FTRACE, "reladdr": 0x89B00, "target": FTRACE_CALLER_TV3,
          "paca_offset": 16, "funcdata": FTRACE_CALLER_TV3, "magic_ok": True},
         decode={"kernelbase": 0xC000000000000000},
         doc_words=_doc("e98d0010 60000000 06000008 398c9b00 7d8903a6 4e800420 00000000 73747562")),
    Case("pcrel-ftrace-negative", "stub_pcrel_ftrace.s",
         {"KBASE": 0xC000000000000000, "TARGET": 0xBFFFFFFFF0000000, "PACAKB": 8},
         0xC008000001A70100,
         {"kind": StubKind.PCREL_FTRACE, "reladdr": -0x10000000, "target": 0xBFFFFFFFF0000000,
          "paca_offset": 8, "funcdata": 0xBFFFFFFFF0000000, "magic_ok": True},
         decode={"kernelbase": 0xC000000000000000}),
    Case("legacy-2016-normal", "stub_legacy_2016_normal.s", _L2016, _L2016["STUB"],
         _r2_expect(StubKind.LEGACY_2016_NORMAL, _L2016)),
    Case("legacy-2016-profiling", "stub_legacy_2016_profiling.s", _L2016P, 0xD000000000A01258,
         {"kind": StubKind.LEGACY_2016_PROFILING,
          "reladdr": 0xC00000000000A1B0 - 0xC000000000E6A000,
          "target": 0xC00000000000A1B0, "paca_offset": 16, "funcdata": 0xC00000000000A1B0,
          "magic_ok": True},
         decode={"kernel_toc": 0xC000000000E6A000}),
]

OPTIONAL_FIELDS = [
    f.name
    for f in dataclasses.fields(Stub)
    if f.name not in ("address", "kind", "raw", "byteorder")
]


def _slot(case: Case) -> bytes:
    text = assemble(case.source, byteorder=case.byteorder, defsyms=case.defsyms).text
    assert len(text) == case.size, f"{case.source}: {len(text)} bytes"
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decode_assembled(case: Case) -> None:
    data = _slot(case)
    ws = insn.words(data, case.byteorder)
    if case.doc_words is not None:
        assert ws[:8] == case.doc_words  # the assembler agrees with facts §11
    stub = decode_stub(data, case.address, byteorder=case.byteorder, abi=case.abi, **case.decode)
    assert stub.address == case.address
    assert stub.words == ws[:8]
    assert stub.kind == case.expect["kind"]
    for name in OPTIONAL_FIELDS:
        assert getattr(stub, name) == case.expect.get(name), name
    if stub.implied_toc is not None:
        assert stub.reladdr is not None
        assert stub.implied_toc == (case.address - stub.reladdr) & MASK64
    assert stub.kind.r2_relative == (stub.implied_toc is not None)


def test_kinds_are_the_design_values() -> None:
    values = {k.value for k in StubKind}
    base = {"normal", "normal-elfv1", "ftrace", "pcrel", "pcrel-ftrace", "ool-ftrace",
            "empty", "unknown"}
    assert base <= values
    assert all(v.startswith("legacy-") for v in values - base)
    assert {c.expect["kind"] for c in CASES} | {StubKind.OOL_FTRACE, StubKind.EMPTY,
                                                StubKind.UNKNOWN} == set(StubKind)
    assert StubKind.FTRACE.uses_kernel_toc and not StubKind.NORMAL.uses_kernel_toc
    assert StubKind("legacy-mcount") is StubKind.LEGACY_MCOUNT


def test_stub_is_frozen() -> None:
    stub = decode_stub(_slot(CASES[0]), TV1["STUB"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        stub.kind = StubKind.UNKNOWN  # type: ignore[misc]
    # the fast path fills __dict__ directly: it must equal a dataclass built normally
    assert stub == Stub(**{f.name: getattr(stub, f.name) for f in dataclasses.fields(Stub)})
    assert hash(stub) == hash(dataclasses.replace(stub))


def test_legacy_elfv1_lwa_word() -> None:
    """facts TV10: the old tree's 0xe84b0026 is what binutils makes of lwa r2,36(r11)."""
    data = _slot(CASES[5])
    assert insn.words(data, "big")[4] == 0xE84B0026


def test_pcrel_tramp_tv9_is_not_a_stub() -> None:
    """The kernel's PCREL tramp (vmlinux, no magic, no funcdata) decodes as unknown."""
    data = assemble("tramp_pcrel.s", defsyms={"REL": 0x1234560}).text
    assert insn.words(data) == _doc("06100123 39804560 7d8903a6 4e800420")
    stub = decode_stub(data, 0xC000000000070000)
    assert stub.kind is StubKind.UNKNOWN and stub.words == insn.words(data)


def test_normal_stub_hi_lo_halves() -> None:
    """HA and LO of facts TV1b: HA = 2, LO = 0xc9a8 (negative)."""
    stub = decode_stub(_slot(CASES[1]), TV1B["STUB"])
    assert stub.words[0] & 0xFFFF == 2 and stub.words[1] & 0xFFFF == 0xC9A8
    assert stub.reladdr == 0x1C9A8


# --- OOL stubs (facts §3.4, TV6) ------------------------------------------------

OOL_BASE = 0xC008000001A60000
OOL_SYMS = {
    "BASE": OOL_BASE, "TOC": 0xC008000001A88000, "KTOC": KTOC_TV3, "PACATOC": 16,
    "FC": FTRACE_CALLER_TV3, "FRC": 0xC000000000089C00, "CALLEE": 0xC000000000AB1230,
    "OP0": 0xC000000002000000, "OP1": 0xC000000002000100, "OP2": 0xC000000002000200,
}
STUBS = OOL_BASE + 0x10000  # .stubs
OOL_AREA = STUBS + 2 * 40  # mod->arch.ool_stubs, after tramp and tramp_regs


def _ool_text() -> bytes:
    return assemble("ool.s", defsyms=OOL_SYMS).text


def test_ool_tv6() -> None:
    text = _ool_text()
    first = OOL_AREA - OOL_BASE
    stub = decode_ool_stub(text[first : first + OOL_STUB_SIZE], OOL_AREA)
    assert stub.words == _doc("7c0802a6 4bffffa5 7c0803a6 4bff03a8")  # facts TV6
    assert stub.kind is StubKind.OOL_FTRACE
    assert stub.address == OOL_AREA == 0xC008000001A70050
    assert stub.funcdata == OOL_SYMS["OP0"]
    assert stub.target == STUBS  # bl mod->arch.tramp
    assert stub.site == OOL_BASE + 0x408
    assert stub.reladdr is stub.implied_toc is stub.paca_offset is stub.magic_ok is None
    # the enabled call site: b ool_stub (&insn[0]), facts TV6 "function word"
    site_word = insn.words(text[0x408:0x40C])[0]
    assert site_word == 0x4800FC50
    assert insn.branch_target(site_word, stub.site) == OOL_AREA + 8


@pytest.mark.parametrize("order", ["little", "big"])
def test_for_each_ool_stub(order: str) -> None:
    text = assemble("ool.s", byteorder=order, defsyms=OOL_SYMS).text
    section = text[0x10000:]
    ools = list(for_each_ool_stub(section, STUBS, OOL_AREA, 3, byteorder=order))
    assert [s.kind for s in ools] == [StubKind.OOL_FTRACE] * 3
    assert [s.address for s in ools] == [OOL_AREA + 24 * i for i in range(3)]
    assert [s.site for s in ools] == [OOL_BASE + 0x408, OOL_BASE + 0x508, OOL_BASE + 0x608]
    assert [s.funcdata for s in ools] == [OOL_SYMS[f"OP{i}"] for i in range(3)]
    assert {s.target for s in ools} == {STUBS}
    # a count beyond the section stops at its end, never raises
    assert len(list(for_each_ool_stub(section, STUBS, OOL_AREA, 10_000, byteorder=order))) == (
        len(section) - (OOL_AREA - STUBS)
    ) // 24
    assert list(for_each_ool_stub(section, STUBS, STUBS - 24, 1)) == []


def _ool_one_by_one(
    section: bytes, address: int, ool: int, count: int, order: str
) -> list[Stub]:
    """What for_each_ool_stub documents: decode_ool_stub per whole stub in the section,
    an UNKNOWN one holding only reserve marks EMPTY."""
    out = []
    for i in range(count):
        off = ool - address + i * OOL_STUB_SIZE
        if off < 0 or off + OOL_STUB_SIZE > len(section):
            break
        data = section[off : off + OOL_STUB_SIZE]
        stub = decode_ool_stub(data, address + off, byteorder=order)
        if stub.kind is StubKind.UNKNOWN and ool_reserve_marks_only(data, off, byteorder=order):
            stub = dataclasses.replace(stub, kind=StubKind.EMPTY)
        out.append(stub)
    return out


def _ool_sections(order: str) -> list[bytes]:
    """.stubs of ool.s (3 stubs, then normal stubs) and ool_index.s (2 stubs, reserve
    marks, a stray normal stub over the unused ones), as assembled."""
    idx = {**{k: OOL_SYMS[k] for k in ("BASE", "TOC", "KTOC", "PACATOC", "FC", "FRC",
                                       "CALLEE", "OP0", "OP1")}}
    return [assemble("ool.s", byteorder=order, defsyms=OOL_SYMS).text[0x10000:],
            *(assemble("ool_index.s", byteorder=order, defsyms={**idx, "STRAY": stray}
                       ).text[0x10000:] for stray in (0, 1))]


@pytest.mark.parametrize("order", ["little", "big"])
def test_for_each_ool_stub_is_decode_ool_stub(order: str) -> None:
    """The bulk walk gives, stub for stub, what decode_ool_stub gives (every field)."""
    for section in _ool_sections(order):
        for count in (0, 1, 3, 5, 9, 10_000):
            for ool in (OOL_AREA, OOL_AREA + 4, STUBS, STUBS - 24):
                got = list(for_each_ool_stub(section, STUBS, ool, count, byteorder=order))
                assert got == _ool_one_by_one(section, STUBS, ool, count, order)
                assert [s.__class__ for s in got] == [Stub] * len(got)


@settings(max_examples=300, deadline=None)
@given(order=st.sampled_from(["little", "big"]), which=st.integers(0, 2),
       word=st.integers(0, 5 * OOL_STUB_SIZE // 4 - 1), xor=st.integers(1, 0xFFFFFFFF))
def test_for_each_ool_stub_damaged(order: str, which: int, word: int, xor: int) -> None:
    """One word of the assembled area changed (any bits): still decode_ool_stub's answer."""
    section = bytearray(_OOL_SECTIONS[order][which])
    at = OOL_AREA - STUBS + 4 * word
    value = int.from_bytes(section[at : at + 4], order)  # type: ignore[arg-type]
    section[at : at + 4] = (value ^ xor).to_bytes(4, order)  # type: ignore[arg-type]
    got = list(for_each_ool_stub(bytes(section), STUBS, OOL_AREA, 5, byteorder=order))
    assert got == _ool_one_by_one(bytes(section), STUBS, OOL_AREA, 5, order)


_OOL_SECTIONS = {order: _ool_sections(order) for order in ("little", "big")}


def test_decode_ool_stub_bad_input() -> None:
    assert decode_ool_stub(b"", 0x100).kind is StubKind.EMPTY
    assert decode_ool_stub(bytes(24), 0x100).kind is StubKind.EMPTY
    normal = _slot(CASES[0])
    bad = decode_ool_stub(normal[:24], 0x100)
    assert bad.kind is StubKind.UNKNOWN and bad.words == insn.words(normal[8:24])


def test_ool_reserved_slots() -> None:
    # get_stubs_size(): roundup(count * sizeof(struct ftrace_ool_stub), sizeof(entry)) / sizeof
    for count in range(0, 200):
        for size in (40, 48, 56):
            expect = -(-(count * 24) // size)
            assert ool_reserved_slots(count, size) == expect
    assert ool_reserved_slots(3) == 2 and ool_reserved_slots(5) == 3


@pytest.mark.parametrize("order", ["little", "big"])
def test_for_each_stub_skips_ool_area(order: str) -> None:
    section = assemble("ool.s", byteorder=order, defsyms=OOL_SYMS).text[0x10000:]
    # sentinel era (6.13 .. 7.1): the walk passes the reserved slots, stops at slot 5
    stubs = list(for_each_stub(section, STUBS, ool=(OOL_AREA, 3), kernel_toc=KTOC_TV3,
                               byteorder=order))
    assert [s.address for s in stubs] == [STUBS, STUBS + 40, STUBS + 160]
    assert [s.kind for s in stubs] == [StubKind.FTRACE, StubKind.FTRACE, StubKind.NORMAL]
    assert [s.target for s in stubs] == [OOL_SYMS["FC"], OOL_SYMS["FRC"], OOL_SYMS["CALLEE"]]
    assert stubs[2].implied_toc == OOL_SYMS["TOC"]
    # 7.2+: exactly stub_count slots
    counted = list(for_each_stub(section, STUBS, count=5, ool=(OOL_AREA, 3), byteorder=order))
    assert [s.address for s in counted] == [s.address for s in stubs]
    # without the OOL area, its slots are no stub layout
    raw = list(for_each_stub(section, STUBS, count=5, byteorder=order))
    assert [s.kind for s in raw[2:4]] == [StubKind.UNKNOWN, StubKind.UNKNOWN]
    # ool with no stubs / null pointer changes nothing
    assert list(for_each_stub(section, STUBS, count=2, ool=(0, 0), byteorder=order)) == counted[:2]


# --- for_each_stub --------------------------------------------------------------

WALK = {
    "SBASE": 0xC008000000F90128, "TOC": 0xC008000000FB8000, "KTOC": 0xC000000000BE8000,
    "PACATOC": 16, "T0": 0xC000000000123450, "T1": 0xC008000000EF0008,
    "T2": 0xC000000000223340, "T3": 0xC000000000777770, "FC": 0xC00000000006509C,
    "FRC": 0xC000000000064F08,
}


@pytest.mark.parametrize("order", ["little", "big"])
def test_for_each_stub_sentinel(order: str) -> None:
    section = assemble("stubs_walk.s", byteorder=order, defsyms=WALK).text
    assert len(section) == 8 * 40
    base = WALK["SBASE"]
    stubs = list(for_each_stub(section, base, kernel_toc=WALK["KTOC"], byteorder=order))
    assert [s.address for s in stubs] == [base + 40 * i for i in range(5)]
    assert [s.kind for s in stubs] == [StubKind.NORMAL] * 2 + [StubKind.FTRACE] * 2 + [
        StubKind.NORMAL
    ]
    assert [s.target for s in stubs] == [WALK[k] for k in ("T0", "T1", "FC", "FRC", "T2")]
    assert {s.implied_toc for s in stubs if s.kind is StubKind.NORMAL} == {WALK["TOC"]}
    assert all(s.magic_ok for s in stubs)
    # each yielded stub equals decoding its slot alone
    for s in stubs:
        off = s.address - base
        assert s == decode_stub(section[off : off + 40], s.address, kernel_toc=WALK["KTOC"],
                                byteorder=order)


@pytest.mark.parametrize("order", ["little", "big"])
def test_for_each_stub_count(order: str) -> None:
    """7.2+ (stub_count): exactly count slots, zero funcdata or not."""
    section = assemble("stubs_walk.s", byteorder=order, defsyms=WALK).text
    base = WALK["SBASE"]
    kinds = [s.kind for s in for_each_stub(section, base, count=7, byteorder=order)]
    assert kinds == [StubKind.NORMAL] * 2 + [StubKind.FTRACE] * 2 + [
        StubKind.NORMAL, StubKind.EMPTY, StubKind.NORMAL
    ]
    assert len(list(for_each_stub(section, base, count=3, byteorder=order))) == 3
    assert list(for_each_stub(section, base, count=0)) == []
    assert list(for_each_stub(section, base, count=-1)) == []
    assert len(list(for_each_stub(section, base, count=100, byteorder=order))) == 8
    # a section cut mid-slot walks whole slots only
    assert len(list(for_each_stub(section[:130], base, count=100, byteorder=order))) == 3
    assert list(for_each_stub(b"", base)) == []


@pytest.mark.parametrize("slot", [48, 56])
def test_for_each_stub_elfv1(slot: int) -> None:
    syms = {"SLOT": slot, "SBASE": 0xD000000000A01230, "TOC": 0xD000000000A18000,
            "T0": 0xC000000000010000, "T1": 0xC000000000020000, "T2": 0xC000000000030000,
            "FTOC": 0xC000000000E6A000}
    section = assemble("stubs_walk_elfv1.s", byteorder="big", defsyms=syms).text
    assert stub_size(1, 16 if slot == 48 else 24) == slot
    stubs = list(for_each_stub(section, syms["SBASE"], byteorder="big", abi=1,
                               func_desc_size=16 if slot == 48 else None))
    assert [s.address for s in stubs] == [syms["SBASE"] + slot * i for i in range(3)]
    assert {s.kind for s in stubs} == {StubKind.NORMAL_ELFV1}
    assert [s.target for s in stubs] == [syms["T0"], syms["T1"], syms["T2"]]
    assert {s.funcdata_toc for s in stubs} == {syms["FTOC"]}
    assert {s.implied_toc for s in stubs} == {syms["TOC"]}


def test_stub_size() -> None:
    assert stub_size() == 40 == stub_size(2)
    assert stub_size(1) == 56
    assert stub_size(1, 16) == 48


# --- bad input ------------------------------------------------------------------


def _check_raw_words(stub: Stub, data: bytes, order: str) -> None:
    n = min(len(data) // 4, 8)
    assert stub.words == struct.unpack(("<" if order == "little" else ">") + "I" * n, data[: 4 * n])


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 20, 23, 24, 31, 32, 39, 40, 41, 47, 48, 56, 57])
def test_zero_bytes_are_empty(order: str, length: int) -> None:
    data = bytes(length)
    stub = decode_stub(data, 0xC008000000F90128, byteorder=order)
    assert stub.kind is StubKind.EMPTY
    _check_raw_words(stub, data, order)


@pytest.mark.parametrize("order", ["little", "big"])
def test_short_and_misaligned(order: str) -> None:
    good = _slot(CASES[0]) if order == "little" else _slot(CASES[2])
    for length in (1, 3, 5, 19, 21, 23):
        stub = decode_stub(good[:length], TV1["STUB"], byteorder=order)
        assert stub.kind is StubKind.UNKNOWN, length
        _check_raw_words(stub, good[:length], order)
    # six whole words still decode; the odd tail is ignored, the missing magic is "unknown"
    for length in (24, 25, 27, 31):
        stub = decode_stub(good[:length], TV1["STUB"], byteorder=order)
        assert stub.kind is StubKind.NORMAL and stub.magic_ok is None and stub.target is None
        _check_raw_words(stub, good[:length], order)
    for length in (39, 41, 43):
        data = (good + b"\x01\x02\x03")[:length]
        stub = decode_stub(data, TV1["STUB"], byteorder=order)
        assert stub.kind is StubKind.NORMAL and stub.reladdr == TV1["STUB"] - TV1["TOC"]
        _check_raw_words(stub, data, order)


def test_garbage_is_unknown() -> None:
    for data in (b"\xff" * 40, bytes(range(40)), b"\x00" * 39 + b"\x01", b"x" * 40):
        stub = decode_stub(data, 0x1000)
        assert stub.kind is StubKind.UNKNOWN
        _check_raw_words(stub, data, "little")
    # a normal stub read in the wrong byte order
    data = _slot(CASES[0])
    stub = decode_stub(data, TV1["STUB"], byteorder="big")
    assert stub.kind is StubKind.UNKNOWN and stub.reladdr is None
    # a damaged word in an otherwise good stub
    for i in range(6):
        bad = bytearray(data)
        bad[4 * i] ^= 0x10
        bad[4 * i + 3] ^= 0x01
        assert decode_stub(bytes(bad), TV1["STUB"]).kind is StubKind.UNKNOWN, i
    # a wrong magic is still a normal stub, flagged
    bad = bytearray(data)
    bad[28] ^= 0xFF
    stub = decode_stub(bytes(bad), TV1["STUB"])
    assert stub.kind is StubKind.NORMAL and stub.magic_ok is False


def test_unknown_byteorder_is_little() -> None:
    data = _slot(CASES[0])
    assert decode_stub(data, TV1["STUB"], byteorder="middle") == decode_stub(data, TV1["STUB"])


# --- properties -----------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=100),
    address=st.integers(0, MASK64),
    order=st.sampled_from(["little", "big"]),
    abi=st.sampled_from([1, 2]),
    kernel_toc=st.none() | st.integers(0, MASK64),
    kernelbase=st.none() | st.integers(0, MASK64),
)
def test_decode_never_raises(
    data: bytes, address: int, order: str, abi: int, kernel_toc: int | None,
    kernelbase: int | None,
) -> None:
    stub = decode_stub(data, address, kernel_toc=kernel_toc, byteorder=order, abi=abi,
                       kernelbase=kernelbase)
    assert isinstance(stub.kind, StubKind)
    assert stub.address == address
    _check_raw_words(stub, data, order)
    for name in ("target", "implied_toc", "funcdata", "funcdata_toc"):
        value = getattr(stub, name)
        assert value is None or 0 <= value <= MASK64
    ool = decode_ool_stub(data, address, byteorder=order)
    assert isinstance(ool.kind, StubKind)


# Prefixes of real stubs with random tails: exercise every matcher's partial matches.
_PREFIX_WORDS = [0x3D62FFFF, 0x396B8100, 0xF8410018, 0xE98B0020, 0x7D8903A6, 0x4E800420,
                 0xE98D0010, 0x3D8CFE48, 0x398CEA00, 0x60000000, 0x04100000, 0xE5800020,
                 0x06000008, 0x398C9B00, 0xF8410028, 0xE84B0028, 0xE84B0026, 0x3D82FFFF,
                 0x398C8100, 0xE96C0020, 0xE84C0028, 0x7D6903A6, 0x3D6CFE48, 0x396BEA00,
                 0x398B0000, insn.STUB_MAGIC, 0]


@settings(max_examples=400, deadline=None)
@given(
    ws=st.lists(st.sampled_from(_PREFIX_WORDS) | st.integers(0, 0xFFFFFFFF), max_size=14),
    tail=st.binary(max_size=3),
    order=st.sampled_from(["little", "big"]),
)
def test_decode_never_raises_on_near_stubs(ws: list[int], tail: bytes, order: str) -> None:
    data = insn.to_bytes(ws, order) + tail
    stub = decode_stub(data, 0xC008000000F90128, kernel_toc=1, kernelbase=2, byteorder=order)
    _check_raw_words(stub, data, order)


@settings(max_examples=300, deadline=None)
@given(
    rel=st.integers(-(1 << 31), 0x7FFF7FFF),
    toc=st.integers(1 << 63, MASK64 - (1 << 32)),
    target=st.integers(0, MASK64),
    order=st.sampled_from(["little", "big"]),
)
def test_ha_lo_roundtrip_through_normal_stub(rel: int, toc: int, target: int, order: str) -> None:
    address = (toc + rel) & MASK64
    ws = [insn.addis(11, 2, insn.ha(rel)), insn.addi(11, 11, insn.lo(rel)), insn.STD_R2_24_R1,
          insn.ld(12, 32, 11), insn.MTCTR_R12, insn.BCTR, 0, insn.STUB_MAGIC]
    data = insn.to_bytes(ws, order) + target.to_bytes(8, order)  # type: ignore[arg-type]
    stub = decode_stub(data, address, byteorder=order)
    assert stub.kind is StubKind.NORMAL
    assert stub.reladdr == rel
    assert stub.implied_toc == toc
    assert stub.target == target and stub.magic_ok


@settings(max_examples=300, deadline=None)
@given(rel=st.integers(-(1 << 31), 0x7FFF7FFF), ktoc=st.integers(1 << 63, MASK64 - (1 << 32)))
def test_ha_lo_roundtrip_through_ftrace_stub(rel: int, ktoc: int) -> None:
    ws = [insn.ld(12, 16, 13), insn.addis(12, 12, insn.ha(rel)), insn.addi(12, 12, insn.lo(rel)),
          insn.MTCTR_R12, insn.BCTR, 0, 0, insn.STUB_MAGIC]
    data = insn.to_bytes(ws) + ((ktoc + rel) & MASK64).to_bytes(8, "little")
    stub = decode_stub(data, 0xC008000000F90128, kernel_toc=ktoc)
    assert stub.kind is StubKind.FTRACE
    assert stub.reladdr == rel and stub.target == (ktoc + rel) & MASK64 == stub.funcdata


# -- the fast path of decode_stub gives what the general path gives -------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fast_path_agrees_on_every_kind(case: Case) -> None:
    """Every assembled stub kind (both byte orders, both ABIs), through both paths."""
    data = _slot(case)
    opts: dict[str, Any] = {"byteorder": case.byteorder, "abi": case.abi, **case.decode}
    assert decode_stub(data, case.address, **opts) == decode_stub_general(
        data, case.address, **opts
    )


@settings(max_examples=400, deadline=None)
@given(
    ws=st.lists(st.sampled_from(_PREFIX_WORDS) | st.integers(0, 0xFFFFFFFF), min_size=8,
                max_size=14),
    funcdata=st.integers(0, MASK64),
    address=st.integers(0, MASK64),
    order=st.sampled_from(["little", "big", "pdp"]),
    abi=st.sampled_from([1, 2]),
    kernel_toc=st.none() | st.integers(0, MASK64),
)
def test_fast_path_agrees_on_random_words(
    ws: list[int], funcdata: int, address: int, order: str, abi: int, kernel_toc: int | None
) -> None:
    """Random words, many of them real stub words, so both fast-path kinds and their
    near misses are reached; also an unknown byte order (read as little-endian)."""
    pack = "little" if order == "pdp" else order
    data = insn.to_bytes(ws[:8], pack) + funcdata.to_bytes(8, pack)  # type: ignore[arg-type]
    data += insn.to_bytes(ws[8:], pack)
    opts: dict[str, Any] = {"byteorder": order, "abi": abi, "kernel_toc": kernel_toc,
                            "kernelbase": 3}
    assert decode_stub(data, address, **opts) == decode_stub_general(data, address, **opts)


@settings(max_examples=400, deadline=None)
@given(
    ftrace=st.booleans(),
    rel=st.integers(-(1 << 31), 0x7FFF7FFF),
    mutate=st.none() | st.tuples(st.integers(0, 8), st.integers(0, 0xFFFFFFFF)),
    magic=st.sampled_from([insn.STUB_MAGIC, 0, 0x12345678]),
    order=st.sampled_from(["little", "big"]),
)
def test_fast_path_agrees_near_its_two_kinds(
    ftrace: bool, rel: int, mutate: tuple[int, int] | None, magic: int, order: str
) -> None:
    """The two kinds the fast path takes (ELFv2 normal, paca ftrace), whole or with one
    word changed: fast-path hits and near misses both."""
    if ftrace:
        ws = [insn.ld(12, 16, 13), insn.addis(12, 12, insn.ha(rel)),
              insn.addi(12, 12, insn.lo(rel)), insn.MTCTR_R12, insn.BCTR, 0, 0, magic]
    else:
        ws = [insn.addis(11, 2, insn.ha(rel)), insn.addi(11, 11, insn.lo(rel)),
              insn.STD_R2_24_R1, insn.ld(12, 32, 11), insn.MTCTR_R12, insn.BCTR, 0, magic]
    ws.append(0)  # funcdata, low half
    if mutate is not None:
        ws[mutate[0]] = mutate[1]
    data = insn.to_bytes(ws, order) + b"\0" * 4
    for ktoc in (None, 0xC000000000BE8000):
        opts: dict[str, Any] = {"byteorder": order, "kernel_toc": ktoc}
        assert decode_stub(data, 0xC008000000F90128, **opts) == decode_stub_general(
            data, 0xC008000000F90128, **opts
        )


# -- the batch walk gives what decoding slot by slot gives ----------------------------


@cache
def _assembled_pool(byteorder: str, size: int) -> tuple[bytes, ...]:
    return tuple(_slot(c) for c in CASES if c.byteorder == byteorder and c.size == size)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    layout=st.sampled_from([("little", 40, 2), ("big", 40, 2), ("big", 48, 1), ("big", 56, 1)]),
    first=st.integers(-3, 12),
    ool_count=st.integers(0, 5),
    count=st.none() | st.integers(-1, 14),
)
def test_for_each_stub_agrees_with_decoding_slot_by_slot(
    data: st.DataObject, layout: tuple[str, int, int], first: int, ool_count: int,
    count: int | None,
) -> None:
    """Assembled stubs, empty slots (the sentinel) and random bytes, with an OOL area
    anywhere (before, inside, across the end of the section): :func:`for_each_stub`
    walks and decodes exactly like a slot-by-slot loop over :func:`decode_stub_general`."""
    order, size, abi = layout
    pool = (*_assembled_pool(order, size), bytes(size))
    slots = data.draw(st.lists(st.sampled_from(pool) | st.binary(min_size=size, max_size=size),
                               max_size=12))
    section = b"".join(slots) + data.draw(st.binary(max_size=size - 1))  # a partial tail
    address = 0xC008000000F90000
    ool = (address + first * size, ool_count) if ool_count else None
    opts: dict[str, Any] = {"kernel_toc": KTOC_TV3, "kernelbase": 0xC000000000000000,
                            "byteorder": order, "abi": abi}
    got = list(for_each_stub(section, address, count=count, ool=ool,
                             func_desc_size=size - 32 if abi == 1 else None, **opts))

    skip = ool_slots(address, ool, size)
    n = len(slots)
    if count is not None:
        n = min(n, max(count, 0))
    else:
        fd = [struct.unpack_from("<Q", s, 32)[0] for s in slots]
        n = next((i for i in range(n) if fd[i] == 0 and i not in skip), n)
    want = [decode_stub_general(slots[i], address + i * size, **opts)
            for i in range(n) if i not in skip]
    assert got == want


@pytest.mark.parametrize("size", [40, 48, 56])
@pytest.mark.parametrize("used,skip,want", [
    (0, range(0), 0),         # nothing used: slot 0 ends the list
    (2, range(0), 2),
    (2, range(2, 4), 4),      # zeros in the OOL area never end it: the first after it does
    (2, range(1, 3), 3),
    (0, range(-2, 1), 1),     # an OOL area starting before .stubs (damaged pointer)
    (2, range(5, 9), 2),
    (6, range(0), None),      # no zero funcdata at all
])
def test_sentinel_slot_skips_the_ool_area(size: int, used: int, skip: range,
                                          want: int | None) -> None:
    """``used`` slots with a non-zero funcdata, then zeros: the first zero outside ``skip``."""
    full = struct.pack("<32xQ", 0xC000000000AB1230) + bytes(size - 40)
    section = full * used + bytes(size) * (6 - used)
    assert sentinel_slot(section, size, skip) == want
