"""The ELF64 records klpinspect reads by hand, each laid out once.

``Elf64_Sym`` (``.symtab`` of vmlinux and of ``.ko`` files, a module's
kallsyms in memory), ``Elf64_Shdr`` (a livepatch module's ``klp_info``
section headers) and ``Elf64_Rela``: format strings for :mod:`struct`, in
either byte order (include/uapi/linux/elf.h).
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Iterator
from functools import lru_cache

__all__ = (
    "ELF64_RELA_SIZE",
    "ELF64_SHDR_SIZE",
    "ELF64_SYM_SIZE",
    "iter_syms",
    "rela_struct",
    "shdr_struct",
    "sym_struct",
    "sym_words",
)

# st_name, st_info, st_other, st_shndx, st_value, st_size
_SYM = "IBBHQQ"
ELF64_SYM_SIZE = 24
# sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
# sh_addralign, sh_entsize
_SHDR = "IIQQQQIIQQ"
ELF64_SHDR_SIZE = 64
# r_offset, r_info, r_addend
_RELA = "QQq"
ELF64_RELA_SIZE = 24


def _prefix(byteorder: str) -> str:
    return "<" if byteorder == "little" else ">"


@lru_cache(maxsize=4)
def sym_struct(byteorder: str) -> struct.Struct:
    """``Elf64_Sym``: ``(st_name, st_info, st_other, st_shndx, st_value, st_size)``."""
    return struct.Struct(_prefix(byteorder) + _SYM)


@lru_cache(maxsize=4)
def shdr_struct(byteorder: str) -> struct.Struct:
    """``Elf64_Shdr``: ``(sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, ...)``."""
    return struct.Struct(_prefix(byteorder) + _SHDR)


@lru_cache(maxsize=4)
def rela_struct(byteorder: str) -> struct.Struct:
    """``Elf64_Rela``: ``(r_offset, r_info, r_addend)``."""
    return struct.Struct(_prefix(byteorder) + _RELA)


def iter_syms(symtab: bytes, byteorder: str) -> Iterator[tuple[int, int, int, int, int, int]]:
    """Every whole ``Elf64_Sym`` of ``symtab`` (a trailing partial record is ignored)."""
    whole = len(symtab) // ELF64_SYM_SIZE * ELF64_SYM_SIZE
    return sym_struct(byteorder).iter_unpack(symtab[:whole])


def sym_words(symtab: bytes, byteorder: str) -> tuple[array.array[int], ...]:
    """Every whole ``Elf64_Sym`` of ``symtab`` as three columns of 64-bit words,
    unpacked in C (no Python call a symbol): ``(heads, st_value, st_size)``.

    A head word holds ``st_name, st_info, st_other, st_shndx``: in a
    little-endian file ``st_name`` is bits 0-31, ``st_info`` 32-39, ``st_shndx``
    48-63; in a big-endian one ``st_name`` is bits 32-63, ``st_info`` 24-31,
    ``st_shndx`` 0-15.
    """
    words = array.array("Q")
    words.frombytes(memoryview(symtab)[: len(symtab) // ELF64_SYM_SIZE * ELF64_SYM_SIZE])
    if byteorder != sys.byteorder:
        words.byteswap()
    return words[0::3], words[1::3], words[2::3]
