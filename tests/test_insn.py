"""klpinspect.ppc64.insn against binutils: constants, encoders and field extraction.

Every expected encoding comes from ``tests/asm/insn.s`` assembled at test time,
both byte orders.
"""

from __future__ import annotations

import pytest
from asmutil import assemble
from hypothesis import given
from hypothesis import strategies as st

from klpinspect.ppc64 import insn

BYTEORDERS = ("little", "big")


@pytest.fixture(scope="module", params=BYTEORDERS)
def asm_words(request: pytest.FixtureRequest) -> tuple[int, ...]:
    order: str = request.param
    return insn.words(assemble("insn.s", byteorder=order).text, order)


def test_both_byte_orders_give_the_same_words() -> None:
    le = insn.words(assemble("insn.s", byteorder="little").text, "little")
    be = insn.words(assemble("insn.s", byteorder="big").text, "big")
    assert le == be
    assert insn.words(assemble("insn.s", byteorder="little").text, "big") != le


def test_constants(asm_words: tuple[int, ...]) -> None:
    w = asm_words
    assert w[0] == insn.NOP
    assert w[1] == insn.LD_R2_24_R1 == insn.toc_restore(2)
    assert w[2] == insn.LD_R2_40_R1 == insn.toc_restore(1)
    assert w[3] == insn.STD_R2_24_R1 == insn.toc_save(2)
    assert w[4] == insn.STD_R2_40_R1 == insn.toc_save(1)
    assert w[5] == insn.STD_R0_16_R1
    assert w[6] == insn.MTCTR_R12
    assert w[7] == insn.BCTR
    assert w[8] == insn.BCTRL
    assert w[9] == insn.MFLR_R0
    assert w[10] == insn.MTLR_R0
    assert w[11] == insn.STUB_MAGIC
    assert (w[12] & 0xFFFF) << 16 | (w[13] & 0xFFFF) == insn.STACK_END_MAGIC


def test_encoders(asm_words: tuple[int, ...]) -> None:
    w = asm_words
    assert insn.addis(11, 2, 0xFFFF) == w[14]
    assert insn.addis(11, 2, -1) == w[14]
    assert insn.addi(11, 11, 0x8100) == w[15]
    assert insn.addi(11, 11, -32512) == w[15]
    assert insn.addis(12, 12, 0x7FFF) == w[16]
    assert insn.addi(12, 12, 0x7FFF) == w[17]
    assert insn.ld(12, 32, 11) == w[18]
    assert insn.ld(12, -8, 13) == w[19]
    assert insn.std(31, -16, 1) == w[20]
    assert insn.std(2, 24, 1) == insn.STD_R2_24_R1
    assert insn.ld(2, 40, 1) == insn.LD_R2_40_R1
    assert insn.bl(0x1000) == w[21]
    assert insn.b(-0x10000) == w[22]
    assert insn.bl(0x1FFFFFC) == w[23]
    assert insn.b(-0x2000000) == w[24]
    assert insn.addi(12, 11, 0) == w[28]


def test_fields(asm_words: tuple[int, ...]) -> None:
    w = asm_words
    assert insn.opcode(w[14]) == 15 and insn.opcode(w[15]) == 14
    assert insn.rt_field(w[14]) == 11 and insn.ra_field(w[14]) == 2
    assert insn.d_field(w[14]) == -1
    assert insn.d_field(w[15]) == -32512
    assert insn.d_field(w[17]) == 0x7FFF
    assert insn.opcode(w[18]) == 58
    assert insn.rt_field(w[18]) == 12 and insn.ra_field(w[18]) == 11
    assert insn.ds_field(w[18]) == 32
    assert insn.ds_field(w[19]) == -8
    assert insn.ds_field(w[20]) == -16 and insn.rt_field(w[20]) == 31
    # the legacy lwa word (facts TV10): DS-form, opcode 58, XO 2
    assert w[27] == 0xE84B0026
    assert insn.opcode(w[27]) == 58 and w[27] & 3 == 2 and insn.ds_field(w[27]) == 36


def test_branches(asm_words: tuple[int, ...]) -> None:
    w = asm_words
    # bl at 0x54, b at 0x58, bl at 0x5c, b at 0x60, ba at 0x64, bla at 0x68
    assert insn.is_bl(w[21]) and not insn.is_b(w[21]) and insn.lk_bit(w[21])
    assert insn.is_b(w[22]) and not insn.is_bl(w[22]) and not insn.lk_bit(w[22])
    assert insn.li_field(w[21]) == 0x1000
    assert insn.li_field(w[22]) == -0x10000
    assert insn.li_field(w[23]) == 0x1FFFFFC
    assert insn.li_field(w[24]) == -0x2000000
    base = 0xC008000001A60000
    assert insn.branch_target(w[21], base + 0x54) == base + 0x54 + 0x1000
    assert insn.branch_target(w[22], base + 0x58) == base + 0x58 - 0x10000
    assert insn.branch_target(w[24], 0x1000) == (0x1000 - 0x2000000) & 0xFFFFFFFFFFFFFFFF
    for i in (25, 26):
        assert insn.is_i_form_branch(w[i]) and insn.aa_bit(w[i])
        assert not insn.is_b(w[i]) and not insn.is_bl(w[i])
    assert insn.branch_target(w[25], base) == 0x100
    assert insn.branch_target(w[26], base) == 0x200
    for i in (0, 6, 7, 14):
        assert not insn.is_i_form_branch(w[i])


@pytest.mark.parametrize("order", BYTEORDERS)
def test_words_and_to_bytes(order: str) -> None:
    text = assemble("insn.s", byteorder=order).text
    ws = insn.words(text, order)
    assert insn.to_bytes(ws, order) == text
    assert insn.words(text + b"\x01\x02\x03", order) == ws  # trailing partial word dropped
    assert insn.words(b"", order) == ()
    assert insn.words(b"\x00\x00\x00", order) == ()


@given(st.integers(-(1 << 31), (1 << 31) - 1))
def test_join_ha_lo_signed_32(v: int) -> None:
    # PPC_HA/PPC_LO reach [-0x80008000, 0x7fff7fff]; above that (HA = 0x8000) the pair
    # wraps by 2**32, the range create_stub() never hands out for a module area.
    joined = insn.join_ha_lo(insn.ha(v), insn.lo(v))
    assert joined % (1 << 32) == v % (1 << 32)
    if v <= 0x7FFF7FFF:
        assert joined == v
    assert 0 <= insn.ha(v) <= 0xFFFF and 0 <= insn.lo(v) <= 0xFFFF


def test_join_ha_lo_edges() -> None:
    for v in (0, 1, -1, 0x7FFF, 0x8000, -0x8000, -0x8001, 0x7FFF7FFF, -(1 << 31), -0x17F00):
        assert insn.join_ha_lo(insn.ha(v), insn.lo(v)) == v
    assert insn.join_ha_lo(insn.ha(0x7FFF8000), insn.lo(0x7FFF8000)) == 0x7FFF8000 - (1 << 32)


@given(st.integers(0, (1 << 64) - 1), st.integers(1, 64))
def test_sext(value: int, bits: int) -> None:
    r = insn.sext(value, bits)
    assert -(1 << (bits - 1)) <= r < (1 << (bits - 1))
    assert r % (1 << bits) == value % (1 << bits)
