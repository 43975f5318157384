"""Power ISA instruction fields and the handful of encodings the kernel uses.

Pure integer arithmetic on 32-bit instruction words; the byte order only
matters when words are read from or written to bytes (:func:`words`,
:func:`to_bytes`).  Encodings follow Power ISA v3.1 and were checked against
binutils 2.40 (tests assemble tests/asm/*.s with it).
"""

from __future__ import annotations

import struct
from functools import lru_cache

__all__ = (
    "BCTR",
    "BCTRL",
    "LD_R2_24_R1",
    "LD_R2_40_R1",
    "MFLR_R0",
    "MTCTR_R12",
    "MTLR_R0",
    "NOP",
    "R2_STACK_OFFSET",
    "STACK_END_MAGIC",
    "STD_R0_16_R1",
    "STD_R2_24_R1",
    "STD_R2_40_R1",
    "STUB_MAGIC",
    "addi",
    "addis",
    "b",
    "bl",
    "branch_target",
    "d_field",
    "ds_field",
    "ha",
    "is_b",
    "is_bl",
    "is_i_form_branch",
    "join_ha_lo",
    "ld",
    "li_field",
    "lo",
    "lk_bit",
    "aa_bit",
    "opcode",
    "ra_field",
    "rt_field",
    "sext",
    "std",
    "to_bytes",
    "toc_restore",
    "toc_save",
    "words",
)

NOP = 0x60000000  # ori r0,r0,0
# R2_STACK_OFFSET (arch/powerpc/kernel/module_64.c): the ABI's TOC save slot,
# where a stub stores the caller's r2 and restore_r2() reloads it: 24(r1) on
# ELFv2, 40(r1) on ELFv1.  The one place this offset is written down.
R2_STACK_OFFSET = {2: 24, 1: 40}
_LD, _STD = 58 << 26, 62 << 26  # DS-form primary opcodes
_R2_R1 = (2 << 21) | (1 << 16)  # RT/RS = r2, RA = r1
LD_R2_24_R1 = _LD | _R2_R1 | R2_STACK_OFFSET[2]  # ld r2,24(r1): ELFv2 TOC restore (0xe8410018)
LD_R2_40_R1 = _LD | _R2_R1 | R2_STACK_OFFSET[1]  # ld r2,40(r1): ELFv1 (0xe8410028)
STD_R2_24_R1 = _STD | _R2_R1 | R2_STACK_OFFSET[2]  # std r2,24(r1): the stub's TOC save
STD_R2_40_R1 = _STD | _R2_R1 | R2_STACK_OFFSET[1]  # std r2,40(r1): ELFv1
STD_R0_16_R1 = 0xF8010010  # std r0,16(r1): gcc 5's -mprofile-kernel prologue
MTCTR_R12 = 0x7D8903A6
BCTR = 0x4E800420
BCTRL = 0x4E800421
MFLR_R0 = 0x7C0802A6
MTLR_R0 = 0x7C0803A6

# struct ppc64_stub_entry.magic since f17c4e01e906 ("powerpc/module: Mark module
# stubs with a magic value", v4.6): "stub" read as a u32.
STUB_MAGIC = 0x73747562
# include/uapi/linux/magic.h; the livepatch stack end marker.
STACK_END_MAGIC = 0x57AC6E9D


def sext(value: int, bits: int) -> int:
    """Sign-extend the low ``bits`` bits of ``value``."""
    value &= (1 << bits) - 1
    sign = 1 << (bits - 1)
    return (value ^ sign) - sign


def opcode(word: int) -> int:
    """Primary opcode (bits 0-5)."""
    return (word >> 26) & 0x3F


def rt_field(word: int) -> int:
    """RT/RS/BO (bits 6-10)."""
    return (word >> 21) & 0x1F


def ra_field(word: int) -> int:
    """RA/BI (bits 11-15)."""
    return (word >> 16) & 0x1F


def d_field(word: int) -> int:
    """Signed 16-bit D field (D-form)."""
    return sext(word & 0xFFFF, 16)


def ds_field(word: int) -> int:
    """Signed DS field of a DS-form (``ld``/``std``), already scaled by 4."""
    return sext(word & 0xFFFC, 16)


def li_field(word: int) -> int:
    """Signed byte displacement of an I-form branch (LI || 0b00)."""
    return sext(word & 0x03FFFFFC, 26)


def aa_bit(word: int) -> bool:
    return bool(word & 2)


def lk_bit(word: int) -> bool:
    return bool(word & 1)


def is_i_form_branch(word: int) -> bool:
    """``b``, ``ba``, ``bl``, ``bla``."""
    return opcode(word) == 18


def is_bl(word: int) -> bool:
    """A relative branch-and-link (``bl``), what ``instr_is_relative_link_branch`` accepts."""
    return opcode(word) == 18 and word & 3 == 1


def is_b(word: int) -> bool:
    """A relative branch without link (``b``): a sibling call or a jump."""
    return opcode(word) == 18 and word & 3 == 0


def branch_target(word: int, address: int) -> int:
    """Target of the I-form branch ``word`` located at ``address`` (64-bit wrap)."""
    disp = li_field(word)
    if aa_bit(word):
        return disp & 0xFFFFFFFFFFFFFFFF
    return (address + disp) & 0xFFFFFFFFFFFFFFFF


def ha(value: int) -> int:
    """``PPC_HA``: the high half, adjusted for the signed low half."""
    return ((value + 0x8000) >> 16) & 0xFFFF


def lo(value: int) -> int:
    """``PPC_LO``: the low 16 bits."""
    return value & 0xFFFF


def join_ha_lo(hi: int, low: int) -> int:
    """Inverse of :func:`ha`/:func:`lo`: ``(sext16(hi) << 16) + sext16(low)``."""
    return (sext(hi, 16) << 16) + sext(low, 16)


def _d_form(op: int, rt: int, ra: int, imm: int) -> int:
    return (op << 26) | ((rt & 31) << 21) | ((ra & 31) << 16) | (imm & 0xFFFF)


def addis(rt: int, ra: int, imm: int) -> int:
    """``addis rt,ra,imm`` (imm is the 16-bit field, signed or not)."""
    return _d_form(15, rt, ra, imm)


def addi(rt: int, ra: int, imm: int) -> int:
    """``addi rt,ra,imm``."""
    return _d_form(14, rt, ra, imm)


def ld(rt: int, ds: int, ra: int) -> int:
    """``ld rt,ds(ra)``."""
    return _d_form(58, rt, ra, ds & 0xFFFC)


def std(rs: int, ds: int, ra: int) -> int:
    """``std rs,ds(ra)``."""
    return _d_form(62, rs, ra, ds & 0xFFFC)


def b(offset: int) -> int:
    """``b .+offset``."""
    return (18 << 26) | (offset & 0x03FFFFFC)


def bl(offset: int) -> int:
    """``bl .+offset``."""
    return b(offset) | 1


def toc_save(abi: int = 2) -> int:
    """``std r2,R2_STACK_OFFSET(r1)`` for the ABI (:data:`R2_STACK_OFFSET`)."""
    return STD_R2_24_R1 if abi == 2 else STD_R2_40_R1


def toc_restore(abi: int = 2) -> int:
    """``ld r2,R2_STACK_OFFSET(r1)``, what ``restore_r2()`` writes after a ``bl``."""
    return LD_R2_24_R1 if abi == 2 else LD_R2_40_R1


@lru_cache(maxsize=64)
def _struct(byteorder: str, count: int) -> struct.Struct:
    return struct.Struct(("<" if byteorder == "little" else ">") + "I" * count)


def words(data: bytes, byteorder: str = "little") -> tuple[int, ...]:
    """Split ``data`` into 32-bit words; trailing bytes that do not fill a word are dropped."""
    count = len(data) // 4
    if count == 0:
        return ()
    return _struct(byteorder, count).unpack_from(data)


def to_bytes(insns: tuple[int, ...] | list[int], byteorder: str = "little") -> bytes:
    """Pack instruction words into bytes."""
    return _struct(byteorder, len(insns)).pack(*insns)
