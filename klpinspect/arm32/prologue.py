"""Classify the prologues of an ARM32 kernel's functions for the 2016 livepatch design.

The 2016 ARM livepatch proposal ("arm: Add livepatch support", with an
``ftrace_regs_caller`` for ARM) patches a function by undoing its prologue in
``ftrace_regs_caller`` and jumping to the new function.  That only works when the
code before the ``bl __gnu_mcount_nc`` is exactly the APCS frame (GCC's
``-mapcs-frame``, which the kernel's ``CONFIG_FRAME_POINTER`` selects)::

    mov   ip, sp
    push  {..., fp, ip, lr, pc}       @ stmdb sp!, any list ending fp, ip, lr, pc
    sub   fp, ip, #4
    sub   sp, sp, #N                  @ optional: locals
    push  {lr}                        @ str lr, [sp, #-4]!
    bl    __gnu_mcount_nc

Every function (``STT_FUNC`` symbol; aliases at one address counted once) gets
one :class:`PrologueClass`:

* ``apcs-frame``: exactly that shape; register list and local size read out;
* ``apcs-frame-extra``: the frame (``push`` with fp, ip, lr, pc and
  ``sub fp, ip, #imm``) plus anything else before the call; the first offending
  instruction is named (:class:`Deviation`);
* ``unwind-tables``: an ARM function that calls ``__gnu_mcount_nc`` without an
  APCS frame (``CONFIG_ARM_UNWIND`` kernels); the prologue it has instead is shown;
* ``thumb2``: a Thumb-2 function that calls ``__gnu_mcount_nc``;
* ``no-mcount``: no call (``notrace``, assembler, out-of-line inline copies).

ARM and Thumb code are told apart by the ``$a``/``$t``/``$d`` mapping symbols (ELF
for the ARM Architecture, 5.5.5), the Thumb bit of a function symbol's value being
the fallback.  The call is found in a linked image (vmlinux) as a ``bl``/``blx``
whose target is ``__gnu_mcount_nc``'s address, in a relocatable object (``.ko``) as
an ``R_ARM_CALL``/``R_ARM_JUMP24``/``R_ARM_PC24``/``R_ARM_THM_CALL``/
``R_ARM_THM_JUMP24`` relocation against the undefined ``__gnu_mcount_nc`` (the
instruction's own offset field is then a placeholder).
"""

from __future__ import annotations

import io
import lzma
import mmap
import os
import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from ..errors import KlpError
from ..kofile import elf_image, module_name
from .disasm import disassemble, disassemble_one
from .insn import (
    COND_NAMES,
    FP,
    IP,
    LR,
    PC,
    SP,
    ArmInsn,
    DpOp,
    Kind,
    decode_arm,
    format_reglist,
    sign_extend,
    thumb_bl_target,
    thumb_insn_size,
)

__all__ = (
    "CLASSES",
    "MCOUNT",
    "ArmVerdict",
    "Deviation",
    "FilePrologues",
    "FunctionPrologue",
    "Offender",
    "PrologueClass",
    "classify_arm",
    "lint_prologues",
)

MCOUNT = "__gnu_mcount_nc"

EM_ARM = 40
SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_REL = 9
SHF_EXECINSTR = 0x4
STT_FUNC = 2
STB_GLOBAL = 1
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
# Relocations a call to __gnu_mcount_nc carries (ELF for the ARM Architecture, 5.6.1)
R_ARM_PC24 = 1
R_ARM_THM_CALL = 10
R_ARM_CALL = 28
R_ARM_JUMP24 = 29
R_ARM_THM_JUMP24 = 30
_CALL_RELOCS = frozenset({R_ARM_PC24, R_ARM_THM_CALL, R_ARM_CALL, R_ARM_JUMP24, R_ARM_THM_JUMP24})
# How many instructions a listed prologue shows at most.
_SHOW_MAX = 12

_BAD_INPUT = (ELFError, ELFParseError, ConstructError, struct.error, EOFError, ValueError,
              IndexError, KeyError, lzma.LZMAError, zlib.error, OSError)


class PrologueClass(StrEnum):
    """What the 2016 design can do with a function (see the module docstring)."""

    APCS_FRAME = "apcs-frame"
    APCS_FRAME_EXTRA = "apcs-frame-extra"
    UNWIND_TABLES = "unwind-tables"
    THUMB2 = "thumb2"
    NO_MCOUNT = "no-mcount"


CLASSES: tuple[PrologueClass, ...] = tuple(PrologueClass)


class Deviation(StrEnum):
    """The kind of the first instruction that breaks the APCS frame shape."""

    ARG_SPILL = "argument-spill"  # r0-r3 stored to the stack (variadic functions)
    VPUSH = "vpush"  # VFP callee-saved registers
    STACK_REALIGN = "stack-realign"  # bic sp, sp, #N
    SUB_SP_REG = "sub-sp-register"  # sub sp, sp, rN (a frame too big for one immediate)
    SUB_SP_AGAIN = "sub-sp-again"  # a second sub sp, sp, #N after the frame
    ARGS_AREA = "args-area"  # sub sp, sp, #N before the frame push: room for arguments
    CONDITIONAL = "conditional"  # an instruction with a condition code
    FRAME_OFFSET = "frame-offset"  # sub fp, ip, #N with N != 4
    FRAME_PUSH = "frame-push"  # the frame push does not end fp, ip, lr, pc
    NO_PUSH_LR = "no-push-lr"  # the call is not preceded by push {lr}
    OTHER = "other"  # any other instruction


@dataclass(frozen=True, slots=True)
class Offender:
    """The first instruction before the mcount call that the frame shape does not allow."""

    address: int
    word: int
    text: str  # capstone's rendering
    deviation: Deviation

    def to_json(self) -> dict[str, Any]:
        return {"address": f"{self.address:#x}", "word": f"{self.word:08x}",
                "text": self.text, "deviation": self.deviation.value}


@dataclass(frozen=True, slots=True)
class ArmVerdict:
    """The classification of one ARM prologue (the words up to the mcount call)."""

    cls: PrologueClass
    regs: tuple[int, ...] = ()  # the frame push's register list
    locals: int | None = None  # bytes from sub sp, sp, #N before the call
    offender_index: int | None = None  # index of the offending word (== len: the call)
    deviation: Deviation | None = None


@dataclass(frozen=True, slots=True)
class FunctionPrologue:
    """One function: ``address`` is the run-time address in vmlinux, the offset in
    ``section`` in a ``.ko``; ``mcount_call`` likewise."""

    name: str
    section: str
    address: int
    size: int
    thumb: bool
    cls: PrologueClass
    reason: str
    mcount_call: int | None = None
    regs: tuple[int, ...] = ()
    locals: int | None = None
    offender: Offender | None = None
    prologue: tuple[str, ...] = ()

    @property
    def deviation(self) -> Deviation | None:
        return None if self.offender is None else self.offender.deviation

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "section": self.section,
            "address": f"{self.address:#x}",
            "size": self.size,
            "isa": "thumb" if self.thumb else "arm",
            "class": self.cls.value,
            "reason": self.reason,
            "mcount_call": None if self.mcount_call is None else f"{self.mcount_call:#x}",
        }
        if self.regs:
            out["regs"] = format_reglist(self.regs)
        if self.locals is not None:
            out["locals"] = self.locals
        if self.offender is not None:
            out["offender"] = self.offender.to_json()
        if self.prologue:
            out["prologue"] = list(self.prologue)
        return out


@dataclass
class FilePrologues:
    """Every function of one file, classified."""

    path: str
    name: str  # "vmlinux" or the module name
    linked: bool  # ET_EXEC/ET_DYN (addresses) rather than ET_REL (section offsets)
    functions: list[FunctionPrologue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    orphan_calls: int = 0  # mcount calls outside every function symbol (not classified)

    @property
    def counts(self) -> dict[PrologueClass, int]:
        out = dict.fromkeys(CLASSES, 0)
        for f in self.functions:
            out[f.cls] += 1
        return out

    @property
    def traced(self) -> int:
        """Functions that call ``__gnu_mcount_nc``."""
        return sum(1 for f in self.functions if f.cls is not PrologueClass.NO_MCOUNT)

    def to_json(self, *, listing: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "name": self.name,
            "kind": "vmlinux" if self.linked else "module",
            "functions": len(self.functions),
            "traced": self.traced,
            "counts": {c.value: n for c, n in self.counts.items()},
            "orphan_calls": self.orphan_calls,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if listing:
            out["list"] = [f.to_json() for f in self.functions
                           if f.cls is not PrologueClass.NO_MCOUNT]
        return out


# -- the shape ---------------------------------------------------------------------------

def _is_frame_push(insn: ArmInsn) -> bool:
    return insn.is_push and insn.kind is Kind.BLOCK and insn.regs[-4:] == (FP, IP, LR, PC)


def _is_push_lr(insn: ArmInsn) -> bool:
    return insn.is_push and insn.pushed == (LR,)


def _deviation(insn: ArmInsn, before_frame: bool) -> Deviation:
    """What kind of extra instruction ``insn`` is (``before_frame``: it comes before the
    frame push)."""
    if insn.conditional:
        return Deviation.CONDITIONAL
    if insn.is_vpush:
        return Deviation.VPUSH
    if insn.kind in (Kind.BLOCK, Kind.LDST_IMM) and not insn.load:
        stored = insn.pushed if insn.is_push else (insn.regs if insn.kind is Kind.BLOCK
                                                   else (insn.rd,))
        if stored and all(r <= 3 for r in stored):
            return Deviation.ARG_SPILL
        if insn.is_push and FP in stored:
            return Deviation.FRAME_PUSH
    if insn.kind is Kind.DP_IMM and insn.rd == SP and insn.rn == SP:
        if insn.op == DpOp.BIC:
            return Deviation.STACK_REALIGN
        if insn.op == DpOp.SUB:
            # Before the push: GCC's "pretend args" room, where an argument passed
            # partly in r0-r3 and partly on the stack is stored after the call.
            return Deviation.ARGS_AREA if before_frame else Deviation.SUB_SP_AGAIN
    if insn.kind is Kind.DP_REG and insn.rd == SP and insn.rn == SP and insn.op == DpOp.SUB:
        return Deviation.SUB_SP_REG
    if insn.is_dp_imm(DpOp.SUB, FP, IP):
        return Deviation.FRAME_OFFSET
    return Deviation.OTHER


def classify_arm(words: Sequence[int]) -> ArmVerdict:
    """Classify the ARM words from a function's start up to (not including) its
    ``bl __gnu_mcount_nc``."""
    insns = [decode_arm(w) for w in words]
    # The strict shape, step by step; the first word that fits no step is the offender.
    step = 0
    offender: int | None = None
    locals_ = None
    for i, insn in enumerate(insns):
        ok = False
        if not insn.conditional:
            if step == 0 and insn.is_mov_reg(IP, SP):
                ok, step = True, 1
            elif step == 1 and _is_frame_push(insn):
                ok, step = True, 2
            elif step == 2 and insn.is_dp_imm(DpOp.SUB, FP, IP) and insn.imm == 4:
                ok, step = True, 3
            elif step == 3 and insn.is_dp_imm(DpOp.SUB, SP, SP):
                ok, step, locals_ = True, 4, insn.imm
            elif step in (3, 4) and _is_push_lr(insn):
                ok, step = True, 5
        if not ok:
            offender = i
            break
    if offender is None and step != 5:
        offender = len(insns)  # the call itself: push {lr} is missing
    if offender is None:
        frame = next(x for x in insns if _is_frame_push(x))
        return ArmVerdict(PrologueClass.APCS_FRAME, frame.regs, locals_)
    # Not the exact shape: is there an APCS frame at all?
    push = next((x for x in insns if _is_frame_push(x) and not x.conditional), None)
    has_fp = any(x.is_dp_imm(DpOp.SUB, FP, IP) for x in insns)
    if push is None or not has_fp:
        return ArmVerdict(PrologueClass.UNWIND_TABLES)
    after = insns[insns.index(push) + 1 :]
    total = sum(x.imm for x in after if x.is_dp_imm(DpOp.SUB, SP, SP) and not x.conditional)
    if offender == len(insns):
        dev = Deviation.NO_PUSH_LR
    else:
        dev = _deviation(insns[offender], before_frame=step < 2)
    return ArmVerdict(PrologueClass.APCS_FRAME_EXTRA, push.regs, total or None, offender, dev)


# -- reading the ELF file -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Sec:
    index: int
    name: str
    base: int  # address of the first byte (0 in an ET_REL object)
    data: bytes


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "replace")


def _section_bytes(elf: ELFFile, index: int, file_size: int) -> bytes:
    sec = elf.get_section(index)
    off, size = sec["sh_offset"], sec["sh_size"]
    if off + size > file_size:
        raise KlpError(f"truncated: section {sec.name or index} ends past the end of the file")
    data: bytes = sec.data()
    return data




def _open(path: str) -> tuple[BinaryIO, int]:
    """The (decompressed) file as a seekable stream, and its size."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise KlpError(f"cannot read: {e.strerror or e}") from e
    with f:
        head = f.read(6)
        if head[:4] == b"\x7fELF":
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise KlpError("empty file")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return m, size  # type: ignore[return-value]  # mmap reads like a file
        f.seek(0)
        raw = f.read()
    raw = elf_image(raw)
    return io.BytesIO(raw), len(raw)


class _Mapping:
    """A section's mapping symbols: ``$a`` ARM, ``$t`` Thumb, ``$d`` data, by offset."""

    def __init__(self, marks: list[tuple[int, str]]) -> None:
        marks.sort()
        self.offsets = [m[0] for m in marks]
        self.kinds = [m[1] for m in marks]

    def state_at(self, offset: int) -> str | None:
        i = bisect_right(self.offsets, offset) - 1
        return self.kinds[i] if i >= 0 else None

    def runs(self, start: int, end: int, default: str) -> Iterator[tuple[int, int, str]]:
        """``(start, end, kind)`` runs covering ``[start, end)``."""
        kind = self.state_at(start) or default
        i = bisect_right(self.offsets, start)
        pos = start
        while i < len(self.offsets) and self.offsets[i] < end:
            if self.offsets[i] > pos:
                yield pos, self.offsets[i], kind
                pos = self.offsets[i]
            kind = self.kinds[i]
            i += 1
        if pos < end:
            yield pos, end, kind


def _words(data: bytes) -> array[int]:
    a = array("I")
    a.frombytes(data[: len(data) // 4 * 4])
    if a.itemsize != 4:  # pragma: no cover - every CPython has a 4-byte "I"
        raise KlpError("no 32-bit array type")
    import sys

    if sys.byteorder != "little":
        a.byteswap()
    return a


def lint_prologues(path: str) -> FilePrologues:
    """Classify every function of one ARM32 little-endian ELF file (vmlinux or ``.ko``).

    :raises KlpError: the file cannot be used (one-line reason: not ELF, not ARM32
        little-endian, truncated, no symbol table)
    """
    stream, size = _open(path)
    try:
        try:
            return _lint(path, stream, size)
        except _BAD_INPUT as e:
            raise KlpError(f"damaged ELF file: {e}") from e
    finally:
        stream.close()


def _lint(path: str, stream: BinaryIO, file_size: int) -> FilePrologues:
    if file_size < 52:  # sizeof(Elf32_Ehdr)
        raise KlpError("truncated: the ELF header ends past the end of the file")
    elf = ELFFile(stream)
    machine = elf.header["e_machine"]
    if machine != "EM_ARM" or elf.elfclass != 32 or not elf.little_endian:
        order = "little" if elf.little_endian else "big"
        raise KlpError(f"not a 32-bit little-endian ARM ELF file "
                       f"(e_machine {machine}, {elf.elfclass}-bit, {order}-endian)")
    etype = elf.header["e_type"]
    if etype not in ("ET_EXEC", "ET_DYN", "ET_REL"):
        raise KlpError(f"not a kernel image or module: e_type {etype}")
    if elf.header["e_shoff"] + elf.header["e_shnum"] * elf.header["e_shentsize"] > file_size:
        raise KlpError("truncated: the section header table ends past the end of the file")
    linked = etype != "ET_REL"
    heads = [(s.name, s.header) for s in elf.iter_sections()]
    symtab_index = next((i for i, (_n, h) in enumerate(heads) if h["sh_type"] == "SHT_SYMTAB"),
                        None)
    if symtab_index is None:
        raise KlpError("no symbol table (stripped?)")
    symtab = _section_bytes(elf, symtab_index, file_size)
    strtab = _section_bytes(elf, heads[symtab_index][1]["sh_link"], file_size)
    # Elf32_Sym: st_name, st_value, st_size, st_info, st_other, st_shndx
    syms = list(struct.iter_unpack("<IIIBBH", symtab[: len(symtab) // 16 * 16]))

    code: dict[int, _Sec] = {}
    for i, (name, h) in enumerate(heads):
        if h["sh_type"] == "SHT_PROGBITS" and h["sh_flags"] & SHF_EXECINSTR and h["sh_size"]:
            code[i] = _Sec(i, name, h["sh_addr"] if linked else 0,
                           _section_bytes(elf, i, file_size))

    marks: dict[int, list[tuple[int, str]]] = {i: [] for i in code}
    funcs: dict[tuple[int, int], tuple[str, int, int, bool]] = {}
    mcount_addr: int | None = None
    mcount_index: int | None = None
    for index, (st_name, value, sz, info, _other, shndx) in enumerate(syms):
        if shndx == SHN_UNDEF or shndx >= SHN_LORESERVE:
            if shndx == SHN_UNDEF and st_name and _cstr(strtab, st_name) == MCOUNT:
                mcount_index = index
            continue
        stype = info & 0xF
        if stype == STT_FUNC and shndx in code:
            name = _cstr(strtab, st_name)
            if name == MCOUNT:
                mcount_addr = value & ~1
            key = (shndx, (value & ~1) - code[shndx].base)
            prev = funcs.get(key)
            # aliases: one function; prefer a global name and the larger size
            glob = info >> 4 == STB_GLOBAL
            if prev is None or (glob, prev[0]) > (prev[3], name):
                funcs[key] = (name, sz or (prev[1] if prev else 0), value & 1, glob)
        elif stype == 0 and shndx in code and st_name:
            name = _cstr(strtab, st_name)
            if name[:1] == "$" and name[1:2] in ("a", "t", "d") and name[2:3] in ("", "."):
                marks[shndx].append(((value & ~1) - code[shndx].base, name[1]))
        elif linked and stype == STT_FUNC and _cstr(strtab, st_name) == MCOUNT:
            mcount_addr = value & ~1

    mapping = {i: _Mapping(m) for i, m in marks.items()}
    out = FilePrologues(path, "vmlinux" if linked else "", linked)
    if not linked:
        mi = next((i for i, (n, _h) in enumerate(heads) if n == ".modinfo"), None)
        out.name = module_name(path, None if mi is None else _section_bytes(elf, mi, file_size))
    else:
        out.name = os.path.basename(path)

    # the calls to __gnu_mcount_nc of an ET_REL object: relocation offsets per section
    calls: dict[int, list[int]] = {}
    if not linked:
        if mcount_index is None:
            out.notes.append(f"no undefined {MCOUNT}: built without -pg")
        else:
            for i, (_name, h) in enumerate(heads):
                if h["sh_type"] not in ("SHT_REL", "SHT_RELA") or h["sh_info"] not in code:
                    continue
                if h["sh_link"] != symtab_index:
                    continue
                data = _section_bytes(elf, i, file_size)
                # Elf32_Rel (r_offset, r_info) or Elf32_Rela (+ r_addend)
                ent = 8 if h["sh_type"] == "SHT_REL" else 12
                fmt = "<II" if ent == 8 else "<IIi"
                hits = calls.setdefault(h["sh_info"], [])
                for rec in struct.iter_unpack(fmt, data[: len(data) // ent * ent]):
                    r_offset, r_info = rec[0], rec[1]
                    if r_info >> 8 == mcount_index and r_info & 0xFF in _CALL_RELOCS:
                        hits.append(r_offset)
            for hits in calls.values():
                hits.sort()
    elif mcount_addr is None:
        out.notes.append(f"no {MCOUNT} symbol: built without CONFIG_FUNCTION_TRACER")

    words_cache: dict[int, array[int]] = {}
    for shndx in sorted(code):
        sec = code[shndx]
        starts = sorted(off for (s, off) in funcs if s == shndx)
        covered = 0  # end of the code the functions so far cover
        for n, start in enumerate(starts):
            name, sz, thumb_bit, _g = funcs[(shndx, start)]
            end = start + sz if sz else (starts[n + 1] if n + 1 < len(starts) else len(sec.data))
            end = min(end, len(sec.data))
            if start >= end:
                continue
            out.orphan_calls += _count_calls(sec, mapping[shndx], covered, start, linked,
                                             mcount_addr, calls.get(shndx), words_cache)
            covered = max(covered, end)
            state = mapping[shndx].state_at(start)
            thumb = state == "t" if state in ("a", "t") else bool(thumb_bit)
            out.functions.append(_classify(
                sec, mapping[shndx], name, start, end, thumb,
                linked, mcount_addr, calls.get(shndx), words_cache))
        out.orphan_calls += _count_calls(sec, mapping[shndx], covered, len(sec.data), linked,
                                         mcount_addr, calls.get(shndx), words_cache)
    if out.orphan_calls:
        out.notes.append(f"{out.orphan_calls} call(s) to {MCOUNT} outside every function "
                         "symbol (code without a symbol, e.g. an overridden __weak "
                         "definition): not classified")
    return out


def _count_calls(sec: _Sec, mapping: _Mapping, start: int, end: int, linked: bool,
                 mcount: int | None, hits: list[int] | None,
                 words_cache: dict[int, array[int]]) -> int:
    """How many mcount calls ``[start, end)`` (code outside the function symbols) holds."""
    count = 0
    pos = start
    while pos < end:
        if linked:
            if mcount is None:
                return 0
            call = _find_call_linked(sec, mapping, pos, end, False, mcount, words_cache)
        else:
            call = _find_call_rel(mapping, hits, pos, end)
        if call is None:
            break
        count += 1
        pos = call + 2
    return count


def _find_call_linked(sec: _Sec, mapping: _Mapping, start: int, end: int, thumb: bool,
                      mcount: int, words_cache: dict[int, array[int]]) -> int | None:
    """Offset of the first ``bl``/``blx`` to ``mcount`` in ``[start, end)``."""
    for lo, hi, kind in mapping.runs(start, end, "t" if thumb else "a"):
        if kind == "a":
            words = words_cache.get(sec.index)
            if words is None:
                words = words_cache[sec.index] = _words(sec.data)
            first = (lo + 3) // 4
            for k in range(first, hi // 4):
                w = words[k]
                if (w >> 25) & 7 != 0b101:
                    continue
                cond = w >> 28
                if cond == 0xF:  # blx imm
                    off = (sign_extend(w & 0xFFFFFF, 24) << 2) | ((w >> 23) & 2)
                elif w >> 24 & 1:  # bl
                    off = sign_extend(w & 0xFFFFFF, 24) << 2
                else:
                    continue
                if (sec.base + 4 * k + 8 + off) & 0xFFFFFFFF == mcount:
                    return 4 * k
        elif kind == "t":
            data = sec.data
            pos = lo
            while pos + 2 <= hi:
                hw1 = data[pos] | data[pos + 1] << 8
                if thumb_insn_size(hw1) == 4:
                    if pos + 4 > hi:
                        break
                    hw2 = data[pos + 2] | data[pos + 3] << 8
                    hit = thumb_bl_target(hw1, hw2, sec.base + pos)
                    if hit is not None and hit[0] & ~1 == mcount:
                        return pos
                    pos += 4
                else:
                    pos += 2
    return None


def _find_call_rel(mapping: _Mapping, hits: list[int] | None, start: int, end: int
                   ) -> int | None:
    if not hits:
        return None
    i = bisect_left(hits, start)
    while i < len(hits) and hits[i] < end:
        if mapping.state_at(hits[i]) != "d":
            return hits[i]
        i += 1
    return None


def _shown(sec: _Sec, start: int, stop: int, thumb: bool) -> tuple[str, ...]:
    """capstone text of ``[start, stop)``, at most ``_SHOW_MAX`` instructions."""
    lines = disassemble(sec.data[start:stop], sec.base + start, thumb=thumb)
    texts = tuple(t for _a, _s, t in lines[:_SHOW_MAX])
    if len(lines) > _SHOW_MAX:
        texts += (f"... ({len(lines) - _SHOW_MAX} more)",)
    return texts


def _classify(sec: _Sec, mapping: _Mapping, name: str, start: int, end: int, thumb: bool,
              linked: bool, mcount: int | None, hits: list[int] | None,
              words_cache: dict[int, array[int]]) -> FunctionPrologue:
    if linked:
        call = None if mcount is None else _find_call_linked(
            sec, mapping, start, end, thumb, mcount, words_cache)
    else:
        call = _find_call_rel(mapping, hits, start, end)
    address = sec.base + start
    common: dict[str, Any] = {"name": name, "section": sec.name, "address": address,
                              "size": end - start, "thumb": thumb}
    if call is None:
        return FunctionPrologue(cls=PrologueClass.NO_MCOUNT,
                                reason=f"no call to {MCOUNT}", **common)
    call_addr = sec.base + call
    shown = _shown(sec, start, call, thumb)
    if thumb:
        return FunctionPrologue(cls=PrologueClass.THUMB2, mcount_call=call_addr,
                                reason="Thumb-2: " + ("; ".join(shown) or "call first"),
                                prologue=shown, **common)
    if call % 4 or start % 4:
        return FunctionPrologue(cls=PrologueClass.UNWIND_TABLES, mcount_call=call_addr,
                                reason="misaligned ARM code", **common)
    words = struct.unpack_from(f"<{(call - start) // 4}I", sec.data, start)
    v = classify_arm(words)
    if v.cls is PrologueClass.APCS_FRAME:
        reason = f"push {format_reglist(v.regs)}"
        reason += f", {v.locals} bytes of locals" if v.locals else ", no locals"
        return FunctionPrologue(cls=v.cls, mcount_call=call_addr, reason=reason, regs=v.regs,
                                locals=v.locals, **common)
    if v.cls is PrologueClass.UNWIND_TABLES:
        body = shown[:-1] if shown and _is_push_lr(decode_arm(words[-1])) else shown
        text = "; ".join(body) if body else "nothing saved before the call"
        return FunctionPrologue(cls=v.cls, mcount_call=call_addr, reason=f"no APCS frame: {text}",
                                prologue=shown, **common)
    assert v.offender_index is not None and v.deviation is not None
    off = start + 4 * v.offender_index
    word = int.from_bytes(sec.data[off : off + 4], "little")
    dev = v.deviation
    if dev is Deviation.NO_PUSH_LR:
        text = f"bl {MCOUNT} without push {{lr}} before it"
    else:
        text = disassemble_one(sec.data[off : off + 4], sec.base + off)
    where = "the call" if v.offender_index == len(words) else f"+{4 * v.offender_index:#x}"
    cond = ""
    if dev is Deviation.CONDITIONAL:
        cond = f" (condition {COND_NAMES[word >> 28]})"
    reason = f"{dev.value} at {where}: {text}{cond}"
    return FunctionPrologue(cls=v.cls, mcount_call=call_addr, reason=reason, regs=v.regs,
                            locals=v.locals, offender=Offender(sec.base + off, word, text, dev),
                            prologue=shown, **common)
