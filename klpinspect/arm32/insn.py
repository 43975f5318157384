"""ARM (A32) and Thumb-2 instruction fields for the prologue lint.

Pure integer arithmetic on instruction words, as in :mod:`klpinspect.ppc64.insn`;
capstone is only used for display (:mod:`klpinspect.arm32.disasm`).  Only the
encodings a function prologue is made of are decoded to fields (ARM ARM, ARMv7-A
A5.2-A5.6): data processing with an immediate (the "modified immediate", an
8-bit value rotated right by twice a 4-bit count) or a register, single
load/store with an immediate offset, block load/store (``push`` is ``stmdb
sp!``), VFP block store (``vpush`` is ``vstmdb sp!``), and ``b``/``bl``/
``blx`` with their 24-bit offsets.  Anything else decodes to :attr:`Kind.OTHER`
with its condition still known.  Thumb-2 is only decoded as far as telling
16-bit from 32-bit instructions and finding ``bl``/``blx`` (T1/T2) targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = (
    "COND_AL",
    "COND_NAMES",
    "FP",
    "IP",
    "LR",
    "PC",
    "SP",
    "ArmInsn",
    "DpOp",
    "Kind",
    "arm_branch_target",
    "decode_arm",
    "expand_imm",
    "format_reglist",
    "reg_name",
    "regs_of_mask",
    "sign_extend",
    "thumb_bl_target",
    "thumb_insn_size",
)

SP = 13
FP = 11
IP = 12
LR = 14
PC = 15

COND_AL = 0xE
COND_UNCOND = 0xF  # the "unconditional" space (blx imm, pld, ...)
COND_NAMES = ("eq", "ne", "cs", "cc", "mi", "pl", "vs", "vc",
              "hi", "ls", "ge", "lt", "gt", "le", "", "")

# GNU (and capstone) register names in the kernel's APCS style
_REG_NAMES = ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7",
              "r8", "r9", "sl", "fp", "ip", "sp", "lr", "pc")


class Kind(StrEnum):
    """What an ARM instruction word is, as far as the prologue lint cares."""

    DP_IMM = "dp-imm"  # data processing, modified immediate operand
    DP_REG = "dp-reg"  # data processing, (shifted) register operand
    LDST_IMM = "ldst-imm"  # ldr/str/ldrb/strb with a 12-bit immediate offset
    BLOCK = "block"  # ldm/stm (push/pop)
    VBLOCK = "vblock"  # vldm/vstm (vpush/vpop)
    BRANCH = "branch"  # b/bl (cond) or blx imm
    OTHER = "other"


class DpOp(IntEnum):
    """Data-processing opcodes (bits 24-21)."""

    AND = 0
    EOR = 1
    SUB = 2
    RSB = 3
    ADD = 4
    ADC = 5
    SBC = 6
    RSC = 7
    TST = 8
    TEQ = 9
    CMP = 10
    CMN = 11
    ORR = 12
    MOV = 13
    BIC = 14
    MVN = 15


def sign_extend(value: int, bits: int) -> int:
    """``value`` as a two's complement ``bits``-bit number."""
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def expand_imm(imm12: int) -> int:
    """ARMExpandImm: ``imm12[7:0]`` rotated right by ``2 * imm12[11:8]`` (32 bits)."""
    rot = 2 * ((imm12 >> 8) & 0xF)
    val = imm12 & 0xFF
    return ((val >> rot) | (val << (32 - rot))) & 0xFFFFFFFF if rot else val


def reg_name(reg: int) -> str:
    """``r0``..``r9``, ``sl``, ``fp``, ``ip``, ``sp``, ``lr``, ``pc``."""
    return _REG_NAMES[reg]


def regs_of_mask(mask: int) -> tuple[int, ...]:
    """Register numbers in a 16-bit register-list mask, ascending."""
    return tuple(r for r in range(16) if mask >> r & 1)


def format_reglist(regs: tuple[int, ...]) -> str:
    """``{r4-r9, sl, fp, ip, lr, pc}``: runs of three or more of r0-r9 collapsed."""
    parts: list[str] = []
    i = 0
    while i < len(regs):
        j = i
        while j + 1 < len(regs) and regs[j + 1] == regs[j] + 1 and regs[j + 1] <= 9:
            j += 1
        if j - i >= 2:
            parts.append(f"{reg_name(regs[i])}-{reg_name(regs[j])}")
        else:
            parts.extend(reg_name(r) for r in regs[i : j + 1])
        i = j + 1
    return "{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class ArmInsn:
    """One decoded A32 word.

    ``op``/``s`` are the data-processing opcode and S bit; ``rd``/``rn``/``rm`` the
    register fields (``rd`` is Rt for loads/stores); ``imm`` the expanded immediate
    (data processing), the signed byte offset (load/store: negative when U=0), or
    the branch offset in bytes (relative to the instruction's address + 8);
    ``regs`` the register list (block transfers) or, for VFP blocks, the first
    register and the count (``vregs``).  ``pre``/``up``/``wback``/``load`` are the
    P, U, W and L bits; ``link`` is set for ``bl``/``blx``.
    """

    word: int
    kind: Kind
    cond: int
    op: int = -1
    s: bool = False
    rd: int = -1
    rn: int = -1
    rm: int = -1
    imm: int = 0
    shifted: bool = False
    regs: tuple[int, ...] = ()
    vfirst: int = -1
    vcount: int = 0
    vdouble: bool = False
    pre: bool = False
    up: bool = False
    wback: bool = False
    load: bool = False
    byte: bool = False
    link: bool = False
    exchange: bool = False

    @property
    def conditional(self) -> bool:
        """Executed only under a condition (not AL, not the unconditional space)."""
        return self.cond not in (COND_AL, COND_UNCOND)

    # -- the prologue's pieces ------------------------------------------------
    def is_mov_reg(self, rd: int, rm: int) -> bool:
        """``mov rd, rm`` (no shift, no S)."""
        return (self.kind is Kind.DP_REG and self.op == DpOp.MOV and not self.s
                and not self.shifted and self.rd == rd and self.rm == rm)

    def is_dp_imm(self, op: int, rd: int, rn: int) -> bool:
        """``<op> rd, rn, #imm`` without S."""
        return (self.kind is Kind.DP_IMM and self.op == op and not self.s
                and self.rd == rd and self.rn == rn)

    @property
    def is_push(self) -> bool:
        """``push {...}``: ``stmdb sp!, {...}`` or, for one register, ``str rX, [sp, #-4]!``."""
        if self.kind is Kind.BLOCK:
            return (self.rn == SP and self.pre and not self.up and self.wback
                    and not self.load and not self.s)
        if self.kind is Kind.LDST_IMM:
            return (self.rn == SP and self.pre and self.wback and not self.load
                    and not self.byte and self.imm == -4)
        return False

    @property
    def pushed(self) -> tuple[int, ...]:
        """The registers a push stores."""
        if self.kind is Kind.LDST_IMM:
            return (self.rd,)
        return self.regs

    @property
    def is_vpush(self) -> bool:
        """``vpush {...}``: ``vstmdb sp!, {...}``."""
        return (self.kind is Kind.VBLOCK and self.rn == SP and self.pre and not self.up
                and self.wback and not self.load)

    def writes(self, reg: int) -> bool:
        """Whether the instruction (as far as decoded) writes ``reg``."""
        if self.kind in (Kind.DP_IMM, Kind.DP_REG):
            return self.rd == reg and not DpOp.TST <= self.op <= DpOp.CMN
        if self.kind in (Kind.BLOCK, Kind.LDST_IMM, Kind.VBLOCK):
            if self.wback and self.rn == reg:
                return True
            if self.load:
                return reg in self.regs if self.kind is Kind.BLOCK else self.rd == reg
        return False


def _decode_dp(word: int, cond: int, imm_form: bool) -> ArmInsn | None:
    op = (word >> 21) & 0xF
    s = bool(word >> 20 & 1)
    if DpOp.TST <= op <= DpOp.CMN and not s:
        return None  # movw/movt/msr/hints and the misc space, not data processing
    rn = (word >> 16) & 0xF
    rd = (word >> 12) & 0xF
    if imm_form:
        return ArmInsn(word, Kind.DP_IMM, cond, op=op, s=s, rd=rd, rn=rn,
                       imm=expand_imm(word & 0xFFF))
    if word >> 4 & 1 and word >> 7 & 1:
        return None  # multiplies, extra loads/stores (strd, ldrh ...)
    shifted = bool(word & 0xFF0)  # a shift amount, a shift type or a shift by register
    return ArmInsn(word, Kind.DP_REG, cond, op=op, s=s, rd=rd, rn=rn, rm=word & 0xF,
                   shifted=shifted)


def decode_arm(word: int) -> ArmInsn:
    """Decode one A32 instruction word (the fields above; else :attr:`Kind.OTHER`)."""
    cond = word >> 28
    top = (word >> 25) & 0x7
    if cond == COND_UNCOND:
        if top == 0b101:  # blx imm: H bit gives the halfword
            off = (sign_extend(word & 0xFFFFFF, 24) << 2) | ((word >> 23) & 2)
            return ArmInsn(word, Kind.BRANCH, cond, imm=off, link=True, exchange=True)
        return ArmInsn(word, Kind.OTHER, cond)
    if top in (0b000, 0b001):
        insn = _decode_dp(word, cond, top == 0b001)
        return insn if insn is not None else ArmInsn(word, Kind.OTHER, cond)
    if top == 0b010:
        off = word & 0xFFF
        up = bool(word >> 23 & 1)
        return ArmInsn(word, Kind.LDST_IMM, cond, rn=(word >> 16) & 0xF, rd=(word >> 12) & 0xF,
                       imm=off if up else -off, pre=bool(word >> 24 & 1), up=up,
                       byte=bool(word >> 22 & 1), wback=bool(word >> 21 & 1),
                       load=bool(word >> 20 & 1))
    if top == 0b100:
        return ArmInsn(word, Kind.BLOCK, cond, rn=(word >> 16) & 0xF,
                       regs=regs_of_mask(word & 0xFFFF), pre=bool(word >> 24 & 1),
                       up=bool(word >> 23 & 1), s=bool(word >> 22 & 1),
                       wback=bool(word >> 21 & 1), load=bool(word >> 20 & 1))
    if top == 0b101:
        return ArmInsn(word, Kind.BRANCH, cond, imm=sign_extend(word & 0xFFFFFF, 24) << 2,
                       link=bool(word >> 24 & 1))
    if top == 0b110 and (word >> 9) & 0x7 == 0b101:  # cp10/cp11: VFP/Advanced SIMD
        p, u, w = word >> 24 & 1, word >> 23 & 1, word >> 21 & 1
        if p != u and not (p and not w):  # vstm/vldm (not vstr/vldr, not 64-bit moves)
            double = bool(word >> 8 & 1)
            vd = (word >> 12) & 0xF
            d = (word >> 22) & 1
            imm8 = word & 0xFF
            first = (d << 4 | vd) if double else (vd << 1 | d)
            return ArmInsn(word, Kind.VBLOCK, cond, rn=(word >> 16) & 0xF, vfirst=first,
                           vcount=imm8 // 2 if double else imm8, vdouble=double,
                           pre=bool(p), up=bool(u), wback=bool(w),
                           load=bool(word >> 20 & 1))
    return ArmInsn(word, Kind.OTHER, cond)


def arm_branch_target(insn: ArmInsn, address: int) -> int:
    """Target of a decoded ``b``/``bl``/``blx`` at ``address`` (PC reads as address + 8)."""
    return (address + 8 + insn.imm) & 0xFFFFFFFF


def thumb_insn_size(first_halfword: int) -> int:
    """2 or 4: a Thumb halfword whose top five bits are 0b11101/0b11110/0b11111 starts a
    32-bit instruction."""
    return 4 if (first_halfword >> 11) in (0b11101, 0b11110, 0b11111) else 2


def thumb_bl_target(hw1: int, hw2: int, address: int) -> tuple[int, bool] | None:
    """``(target, exchange)`` for a Thumb-2 ``bl`` (T1) or ``blx`` (T2) at ``address``.

    ``I1 = NOT(J1 XOR S)``, ``I2 = NOT(J2 XOR S)``, offset ``S:I1:I2:imm10:imm11:0``
    from ``address + 4`` (``blx`` lands word-aligned in ARM code).  ``None`` when the
    pair is not one of those two.
    """
    if hw1 >> 11 != 0b11110 or hw2 >> 14 != 0b11:
        return None
    link_form = (hw2 >> 12) & 1  # 1: bl, 0: blx
    if not link_form and hw2 & 1:
        return None  # blx with H set is undefined
    s = (hw1 >> 10) & 1
    j1 = (hw2 >> 13) & 1
    j2 = (hw2 >> 11) & 1
    i1 = 1 - (j1 ^ s)
    i2 = 1 - (j2 ^ s)
    off = (s << 24) | (i1 << 23) | (i2 << 22) | ((hw1 & 0x3FF) << 12) | ((hw2 & 0x7FF) << 1)
    off = sign_extend(off, 25)
    if link_form:
        return (address + 4 + off) & 0xFFFFFFFF, False
    return (((address + 4) & ~3) + off) & 0xFFFFFFFF, True
