"""ARM/Thumb-2 disassembly for display (capstone ``CS_ARCH_ARM``, little-endian).

Classification never depends on this module: :mod:`klpinspect.arm32.insn` decodes
the words.  Without capstone the text falls back to ``.word``/``.short``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ("disassemble", "disassemble_one")


@lru_cache(maxsize=2)
def _capstone(thumb: bool) -> Any:
    try:
        import capstone
    except ImportError:  # display falls back to raw words
        return None
    mode = capstone.CS_MODE_THUMB if thumb else capstone.CS_MODE_ARM
    mode |= capstone.CS_MODE_LITTLE_ENDIAN
    return capstone.Cs(capstone.CS_ARCH_ARM, mode)


def disassemble_one(data: bytes, address: int, *, thumb: bool = False) -> str:
    """The first instruction of ``data`` as ``mnemonic operands``."""
    md = _capstone(thumb)
    if md is not None:
        for insn in md.disasm(data, address, 1):
            return f"{insn.mnemonic} {insn.op_str}".rstrip()
    if thumb or len(data) < 4:
        return f".short {int.from_bytes(data[:2], 'little'):#06x}"
    return f".word {int.from_bytes(data[:4], 'little'):#010x}"


def disassemble(data: bytes, address: int, *, thumb: bool = False) -> list[tuple[int, int, str]]:
    """``(address, size, text)`` for every instruction in ``data``.

    An undecodable word (or halfword in Thumb) is shown as data and skipped.
    """
    out: list[tuple[int, int, str]] = []
    md = _capstone(thumb)
    step = 2 if thumb else 4
    off = 0
    while off < len(data):
        if md is not None:
            for insn in md.disasm(data[off:], address + off):
                out.append((insn.address, insn.size, f"{insn.mnemonic} {insn.op_str}".rstrip()))
                off += insn.size
        if off < len(data):  # capstone stopped at a word it cannot decode
            chunk = data[off : off + step]
            word = int.from_bytes(chunk, "little")
            out.append((address + off, len(chunk),
                        f".short {word:#06x}" if thumb else f".word {word:#010x}"))
            off += len(chunk)
    return out
