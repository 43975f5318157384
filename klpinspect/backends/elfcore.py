"""ELF core files (vmcores) as the kernel, makedumpfile and QEMU write them.

Pure helpers for both back ends: the program headers and notes of a core
(``PT_LOAD`` ranges, the VMCOREINFO note, the CPU's MSR), and whether the
file is shorter than its program headers say (a truncated dump is reported,
not refused).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from klpinspect.errors import TargetError

__all__ = (
    "EM_PPC64",
    "MSR_LE",
    "ElfCore",
    "ElfLoad",
    "core_file_truncation",
    "read_elf_core",
)

EM_PPC64 = 21
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
NT_PRSTATUS = 1
MSR_LE = 1
# offsetof(struct elf_prstatus, pr_reg) + 33 * 8 (gpr[32], nip, msr) on ppc64
_PRSTATUS_MSR = 112 + 33 * 8

_MACHINES = {
    2: "SPARC",
    3: "i386",
    8: "MIPS",
    20: "ppc (32-bit)",
    22: "s390",
    40: "ARM",
    43: "SPARC64",
    62: "x86_64",
    183: "aarch64",
    243: "RISC-V",
    258: "LoongArch",
}


def _machine_name(e_machine: int) -> str:
    return _MACHINES.get(e_machine, f"e_machine {e_machine}")


@dataclass(frozen=True)
class ElfLoad:
    offset: int
    paddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class ElfCore:
    byteorder: str
    loads: tuple[ElfLoad, ...]
    vmcoreinfo: bytes | None
    all_vaddr_zero: bool
    msr: int | None
    size: int = 0  # bytes in the file
    needed: int = 0  # bytes its program headers describe

    @property
    def truncated(self) -> str | None:
        if self.size >= self.needed:
            return None
        return (
            f"core file truncated: {self.size:,} of the {self.needed:,} bytes its program "
            "headers describe; memory past the cut is unreadable"
        )


def _parse_notes(data: bytes, end: str) -> tuple[bytes | None, int | None]:
    vmcoreinfo, msr = None, None
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(end + "III", data, pos)
        name = data[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        desc_off = pos + 12 + ((namesz + 3) & ~3)
        desc = data[desc_off : desc_off + descsz]
        if name == b"VMCOREINFO" and vmcoreinfo is None:
            vmcoreinfo = desc.rstrip(b"\0")
        elif name == b"CORE" and ntype == NT_PRSTATUS and msr is None:
            if len(desc) >= _PRSTATUS_MSR + 8:
                (msr,) = struct.unpack_from(end + "Q", desc, _PRSTATUS_MSR)
        nxt = desc_off + ((descsz + 3) & ~3)
        if nxt <= pos:
            break
        pos = nxt
    return vmcoreinfo, msr


def read_elf_core(path: str | os.PathLike[str], f: BinaryIO, head: bytes) -> ElfCore:
    """Parse an ELF core's header, program headers and notes (never sections)."""
    if head[4] != 2:
        raise TargetError(f"{path}: 32-bit ELF file; klpinspect reads ppc64 kernel dumps")
    end = "<" if head[5] == 1 else ">"
    (e_type, e_machine) = struct.unpack_from(end + "HH", head, 16)
    if e_type != ET_CORE:
        raise TargetError(f"{path}: ELF file but not a core dump (e_type {e_type})")
    if e_machine != EM_PPC64:
        raise TargetError(
            f"{path}: {_machine_name(e_machine)} core dump, not ppc64; "
            "klpinspect reads ppc64 kernels only"
        )
    (e_phoff,) = struct.unpack_from(end + "Q", head, 32)
    e_phentsize, e_phnum = struct.unpack_from(end + "HH", head, 54)
    f.seek(e_phoff)
    phdrs = f.read(e_phentsize * e_phnum)
    if e_phnum == 0 or len(phdrs) < e_phentsize * e_phnum or e_phentsize < 56:
        raise TargetError(f"{path}: truncated or malformed ELF core (program headers)")
    loads = []
    vmcoreinfo, msr = None, None
    all_vaddr_zero = True
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from(
            end + "IIQQQQQ", phdrs, i * e_phentsize
        )
        if p_type == PT_LOAD:
            loads.append(ElfLoad(p_offset, p_paddr, p_filesz, p_memsz))
            all_vaddr_zero &= p_vaddr == 0
        elif p_type == PT_NOTE and p_filesz < 1 << 24:
            f.seek(p_offset)
            v, m = _parse_notes(f.read(p_filesz), end)
            vmcoreinfo = vmcoreinfo or v
            msr = m if msr is None else msr
    if not loads:
        raise TargetError(f"{path}: ELF core without memory (no PT_LOAD)")
    return ElfCore(
        "little" if end == "<" else "big", tuple(loads), vmcoreinfo, all_vaddr_zero, msr,
        size=os.fstat(f.fileno()).st_size,
        needed=max(ld.offset + ld.filesz for ld in loads),
    )


def core_file_truncation(path: str | os.PathLike[str]) -> str | None:
    """``"<path>: core file truncated: ..."`` if the ELF core at ``path`` is cut short."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                return None
            core = read_elf_core(path, f, head)
    except (OSError, TargetError):
        return None
    if not core.truncated:
        return None
    from pathlib import Path  # only here: the gdb front end's audit does without it

    return f"{Path(path)}: {core.truncated}"
