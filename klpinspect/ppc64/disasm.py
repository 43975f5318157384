"""Annotated disassembly of stubs and call sites (display only).

capstone (``CS_ARCH_PPC``, 64-bit, either byte order) disassembles word by
word; capstone 5 cannot decode Power10 prefixed instructions (``pld``,
``paddi``, ``pla``) and stops at the first word it cannot decode, so each word
is tried alone and the prefixed forms the kernel uses are decoded here.  A
stub's magic word is shown as data, never as code (it would read
``andi. r20,r27,0x7562``).  Classification never depends on this module.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from .insn import STUB_MAGIC, sext, words
from .stubs import Stub, StubKind

__all__ = ("annotate_stub", "disassemble", "disassemble_word")


@lru_cache(maxsize=2)
def _capstone(byteorder: str) -> Any:
    try:
        import capstone
    except ImportError:  # display falls back to our own decoder
        return None
    mode = capstone.CS_MODE_64 | (
        capstone.CS_MODE_LITTLE_ENDIAN if byteorder == "little" else capstone.CS_MODE_BIG_ENDIAN
    )
    return capstone.Cs(capstone.CS_ARCH_PPC, mode)


def _prefixed(prefix: int, suffix: int, address: int) -> str | None:
    """The prefixed forms of the kernel's stubs (Power ISA 3.1, MLS/8LS)."""
    if prefix >> 26 != 1:
        return None
    r = (prefix >> 20) & 1
    imm = sext(((prefix & 0x3FFFF) << 16) | (suffix & 0xFFFF), 34)
    rt = (suffix >> 21) & 31
    ra = (suffix >> 16) & 31
    kind = (prefix >> 24) & 3
    op = suffix >> 26
    where = f" # {address + imm:#x}" if r else ""
    if kind == 0 and op == 57:  # 8LS: pld
        return f"pld r{rt}, {imm:#x}(r{ra}), {r}{where}"
    if kind == 2 and op == 14:  # MLS: paddi / pla
        if ra == 0 and r:
            return f"pla r{rt}, {imm:#x}{where}"
        return f"paddi r{rt}, r{ra}, {imm:#x}, {r}{where}"
    return None


def disassemble_word(word: int, address: int, byteorder: str = "little") -> str:
    """One instruction word as text; ``.long`` when nothing decodes it."""
    md = _capstone(byteorder)
    if md is not None:
        data = word.to_bytes(4, "little" if byteorder == "little" else "big")
        for insn in md.disasm(data, address, 1):
            return f"{insn.mnemonic} {insn.op_str}".rstrip()
    return f".long {word:#010x}"


def disassemble(data: bytes, address: int, *, byteorder: str = "little") -> list[str]:
    """Disassemble ``data`` at ``address``: one line per word, ``0x…: xxxxxxxx  text``."""
    ws = words(data, byteorder)
    lines: list[str] = []
    i = 0
    while i < len(ws):
        addr = address + 4 * i
        w = ws[i]
        if i + 1 < len(ws):
            text = _prefixed(w, ws[i + 1], addr)
            if text is not None:
                lines.append(f"{addr:#x}: {w:08x} {ws[i + 1]:08x}  {text}")
                i += 2
                continue
        lines.append(f"{addr:#x}: {w:08x}  {disassemble_word(w, addr, byteorder)}")
        i += 1
    return lines


def annotate_stub(stub: Stub, *, byteorder: str = "little") -> list[str]:
    """The stub's words disassembled, the magic shown as data, with a summary line."""
    if stub.kind is StubKind.OOL_FTRACE:
        code = stub.words
        base = stub.address + 8
        head = [f"{stub.address:#x}: ftrace_op = {stub.funcdata or 0:#x}"]
    else:
        code = stub.words[:7]
        base = stub.address
        head = []
    order: Literal["little", "big"] = "little" if byteorder == "little" else "big"
    data = b"".join(w.to_bytes(4, order) for w in code)
    lines = head + disassemble(data, base, byteorder=byteorder)
    if stub.kind is not StubKind.OOL_FTRACE and len(stub.words) >= 8:
        magic = stub.words[7]
        ok = "STUB_MAGIC" if magic == STUB_MAGIC else "not STUB_MAGIC"
        lines.append(f"{stub.address + 28:#x}: {magic:08x}  .long {magic:#x}  # magic: {ok}")
    if stub.funcdata is not None and stub.kind is not StubKind.OOL_FTRACE:
        lines.append(f"{stub.address + 32:#x}: funcdata = {stub.funcdata:#x}")
    summary = f"# {stub.kind.value}"
    if stub.target is not None:
        summary += f" -> {stub.target:#x}"
    if stub.implied_toc is not None:
        summary += f", implied TOC {stub.implied_toc:#x}"
    lines.append(summary)
    return lines
