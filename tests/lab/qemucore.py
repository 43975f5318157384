"""Fix up a QEMU ``dump-guest-memory`` ELF of a ppc64 pseries guest into a kernel vmcore.

QEMU 7.2 writes a pseries guest's dump with these quirks (see the fixture's
README): big-endian ELF headers and register notes for a little-endian guest
(``cpu_get_dump_info()`` looks at the hypervisor's ILE bit, which a pseries
guest never sets), ``p_vaddr`` 0, ``pr_pid`` 0 in every ``NT_PRSTATUS``,
malformed section headers, and no VMCOREINFO note (pseries has no vmcoreinfo
device).  :func:`fixup_qemu_core` writes a copy that drgn, crash and
makedumpfile take for a Linux kernel core, laid out like the kernel's own
``/proc/vmcore``: program headers right after the ELF header (makedumpfile
1.7.2 reads them there whatever ``e_phoff`` says), one ``PT_NOTE`` holding
QEMU's CPU notes and then the VMCOREINFO note (makedumpfile uses only the
last ``PT_NOTE``), page-aligned ``PT_LOAD`` data with
``p_vaddr = PAGE_OFFSET + p_paddr``.  The memory bytes are copied unchanged;
the input file is never modified.

Standard library only.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = (
    "PAGE_OFFSET",
    "CoreFixup",
    "QemuCoreError",
    "find_vmcoreinfo_note",
    "fixup_qemu_core",
)

PAGE_OFFSET = 0xC000000000000000
PT_LOAD, PT_NOTE = 1, 4
EM_PPC64 = 21
NT_PRSTATUS, NT_PRFPREG = 1, 2
NT_PPC_VMX, NT_PPC_SPE, NT_PPC_VSX = 0x100, 0x101, 0x102

_EHDR = "16sHHIQQQIHHHHHH"
_PHDR = "IIQQQQQQ"
_EHDR_SIZE = struct.calcsize("<" + _EHDR)
_PHDR_SIZE = struct.calcsize("<" + _PHDR)
_NOTE_NEEDLE = b"VMCOREINFO\0\0OSRELEASE="


class QemuCoreError(Exception):
    """The input is not a ppc64 ELF core this module can fix up."""


@dataclass
class CoreFixup:
    """What :func:`fixup_qemu_core` did."""

    output: Path
    was_big_endian: bool
    vmcoreinfo_paddr: int | None
    vmcoreinfo_added: bool
    cpus: int
    loads: int
    vmcoreinfo: bytes


def _align(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def _swap(buf: bytearray, start: int, end: int, size: int) -> None:
    """Byte-swap the *size*-byte elements of ``buf[start:end]`` in place."""
    for o in range(start, min(end, len(buf)) - size + 1, size):
        buf[o : o + size] = buf[o : o + size][::-1]


def _iter_notes(buf: bytes | bytearray, order: str) -> list[tuple[int, int, int, int, int]]:
    """(header offset, namesz, descsz, type, desc offset) of each note in *buf*."""
    out = []
    fmt = (">" if order == "big" else "<") + "III"
    off = 0
    while off + 12 <= len(buf):
        namesz, descsz, ntype = struct.unpack_from(fmt, buf, off)
        if namesz == 0 and descsz == 0:
            break
        d = off + 12 + _align(namesz, 4)
        end = d + _align(descsz, 4)
        if end > len(buf):
            raise QemuCoreError(f"note at {off:#x} runs past its PT_NOTE")
        out.append((off, namesz, descsz, ntype, d))
        off = end
    return out


def _notes_to_little_endian(buf: bytearray) -> None:
    """Convert QEMU's big-endian note headers and register notes, in place."""
    for off, namesz, descsz, ntype, d in _iter_notes(buf, "big"):
        struct.pack_into("<III", buf, off, namesz, descsz, ntype)
        if ntype == NT_PRSTATUS:  # QEMU's PPCElfPrstatus
            _swap(buf, d + 32, d + 36, 4)  # pr_pid
            _swap(buf, d + 112, d + 112 + 44 * 8, 8)  # pr_reg
        elif ntype in (NT_PRFPREG, NT_PPC_VSX):
            _swap(buf, d, d + descsz, 8)
        elif ntype == NT_PPC_VMX:
            _swap(buf, d, d + descsz, 16)
        elif ntype == NT_PPC_SPE:
            _swap(buf, d, d + 128, 4)
            _swap(buf, d + 128, d + 136, 8)
            _swap(buf, d + 136, d + 140, 4)


def _number_cpus(buf: bytearray) -> int:
    """Set ``pr_pid`` = CPU index + 1 when QEMU left them all 0; return the CPU count.

    QEMU writes the CPU notes in CPU order and does this itself on x86; drgn
    uses it to find a CPU's registers in a dump of a running kernel.
    """
    pids = []
    for _off, namesz, _descsz, ntype, d in _iter_notes(buf, "little"):
        if ntype == NT_PRSTATUS and namesz == 5 and buf[_off + 12 : _off + 16] == b"CORE":
            pids.append(d + 32)
    if pids and all(struct.unpack_from("<I", buf, p)[0] == 0 for p in pids):
        for i, p in enumerate(pids):
            struct.pack_into("<I", buf, p, i + 1)
    return len(pids)


def _vmcoreinfo_in_notes(buf: bytes | bytearray) -> bytes | None:
    for off, namesz, descsz, _t, d in _iter_notes(buf, "little"):
        if buf[off + 12 : off + 12 + namesz].rstrip(b"\0") == b"VMCOREINFO":
            return bytes(buf[d : d + descsz])
    return None


def _read_phys(f: object, loads: list[list[int]], paddr: int, size: int) -> bytes:
    assert hasattr(f, "seek") and hasattr(f, "read")
    for p in loads:
        if p[4] <= paddr and paddr + size <= p[4] + p[5]:
            f.seek(p[2] + paddr - p[4])
            data: bytes = f.read(size)
            return data
    raise QemuCoreError(f"physical range {paddr:#x}+{size:#x} is not in the dump")


def find_vmcoreinfo_note(path: Path | str, scan_chunk: int = 32 << 20) -> int | None:
    """Physical address of the VMCOREINFO ELF note in a (fixed-up or raw) ELF core.

    Scans each ``PT_LOAD`` for the note header (``namesz`` 11, ``type`` 0,
    name ``VMCOREINFO``, text starting ``OSRELEASE=``); little-endian notes only.
    """
    with open(path, "rb") as f:
        _eh, ph, _big = _read_headers(f)
        for p in ph:
            if p[0] != PT_LOAD:
                continue
            pos = 0
            while pos < p[5]:
                f.seek(p[2] + pos)
                data = f.read(min(scan_chunk + 4096, p[5] - pos))
                at = data.find(_NOTE_NEEDLE, 12)
                while at >= 0:
                    namesz, descsz, ntype = struct.unpack_from("<III", data, at - 12)
                    if namesz == 11 and ntype == 0 and 0 < descsz <= 1 << 20:
                        return p[4] + pos + at - 12
                    at = data.find(_NOTE_NEEDLE, at + 1)
                pos += scan_chunk
    return None


def _read_headers(f: object) -> tuple[list[int | bytes], list[list[int]], bool]:
    assert hasattr(f, "seek") and hasattr(f, "read")
    f.seek(0)
    raw = f.read(_EHDR_SIZE)
    if len(raw) < _EHDR_SIZE or raw[:4] != b"\x7fELF" or raw[4] != 2:
        raise QemuCoreError("not an ELF64 file")
    if raw[5] not in (1, 2):
        raise QemuCoreError("bad ELF data encoding")
    big = raw[5] == 2
    bo = ">" if big else "<"
    eh: list[int | bytes] = list(struct.unpack(bo + _EHDR, raw))
    if eh[1] != 4:
        raise QemuCoreError("not an ELF core file (e_type != ET_CORE)")
    if eh[2] != EM_PPC64:
        raise QemuCoreError(f"not a ppc64 core (e_machine {eh[2]!r})")
    phoff, phentsize, phnum = eh[5], eh[9], eh[10]
    assert isinstance(phoff, int) and isinstance(phentsize, int) and isinstance(phnum, int)
    if phentsize < _PHDR_SIZE or phnum == 0:
        raise QemuCoreError("core has no usable program headers")
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    if len(table) != phentsize * phnum:
        raise QemuCoreError("program header table runs past the end of the file")
    ph = [
        list(struct.unpack_from(bo + _PHDR, table, i * phentsize)) for i in range(phnum)
    ]
    return eh, ph, big


def _copy_range(src: object, dst: object, offset: int, size: int) -> None:
    assert hasattr(src, "fileno") and hasattr(dst, "fileno")
    fin, fout = src.fileno(), dst.fileno()
    out_off = os.lseek(fout, 0, os.SEEK_CUR)
    left = size
    in_off = offset
    while left:
        n = os.copy_file_range(fin, fout, min(left, 1 << 30), in_off, out_off)
        if n == 0:
            raise QemuCoreError("core is shorter than its PT_LOADs say")
        in_off += n
        out_off += n
        left -= n
    os.lseek(fout, out_off, os.SEEK_SET)


def _write_core(
    f: object,
    tmp: Path,
    eh: list[int | bytes],
    newph: list[list[int]],
    notes: bytearray,
    loads: list[list[int]],
) -> None:
    with open(tmp, "wb") as o:
        o.write(struct.pack("<" + _EHDR, *eh))
        for q in newph:
            o.write(struct.pack("<" + _PHDR, *q))
        o.write(notes)
        for p, q in zip(loads, newph[1:], strict=True):
            o.write(b"\0" * (q[2] - o.tell()))
            o.flush()
            _copy_range(f, o, p[2], p[5])
        end = newph[-1][2] + newph[-1][5]
        o.truncate(end)


def fixup_qemu_core(
    src: Path | str,
    dst: Path | str,
    vmcoreinfo_paddr: int | None = None,
    vmcoreinfo_size: int | None = None,
    page_offset: int = PAGE_OFFSET,
    align: int = 0x10000,
) -> CoreFixup:
    """Write a fixed-up copy of QEMU's ppc64 ELF dump *src* to *dst*.

    :param vmcoreinfo_paddr: physical address of the VMCOREINFO note, as the
        guest's ``/sys/kernel/vmcoreinfo`` says; ``None``: search the dump
    :param vmcoreinfo_size: bytes there (default: the note's own size)
    :raises QemuCoreError: not a ppc64 ELF core, or no VMCOREINFO to be found
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise QemuCoreError("refusing to overwrite the input dump")
    with open(src, "rb") as f:
        eh, ph, big = _read_headers(f)
        bo = "big" if big else "little"
        notes = bytearray()
        for p in ph:
            if p[0] == PT_NOTE:
                f.seek(p[2])
                buf = bytearray(f.read(p[5]))
                if big:
                    _notes_to_little_endian(buf)
                else:
                    _iter_notes(buf, bo)  # validates
                notes += buf
        cpus = _number_cpus(notes)
        loads = [p for p in ph if p[0] == PT_LOAD]
        if not loads:
            raise QemuCoreError("core has no PT_LOAD")
        for p in loads:
            if p[3] == 0 and page_offset:
                p[3] = page_offset + p[4]
        info = _vmcoreinfo_in_notes(notes)
        added = False
        if info is None:
            if vmcoreinfo_paddr is None:
                vmcoreinfo_paddr = find_vmcoreinfo_note(src)
                if vmcoreinfo_paddr is None:
                    raise QemuCoreError("no VMCOREINFO note in the dump's memory")
            hdr = _read_phys(f, loads, vmcoreinfo_paddr, 12)
            namesz, descsz, ntype = struct.unpack("<III", hdr)
            size = 12 + _align(namesz, 4) + _align(descsz, 4)
            if vmcoreinfo_size is not None:
                size = min(size, vmcoreinfo_size)
            raw = _read_phys(f, loads, vmcoreinfo_paddr, size)
            found = _vmcoreinfo_in_notes(raw)
            if found is None or not found.startswith(b"OSRELEASE="):
                raise QemuCoreError(f"no VMCOREINFO note at physical {vmcoreinfo_paddr:#x}")
            info = found
            notes += raw[: 12 + _align(namesz, 4) + _align(descsz, 4)]
            added = True

        eh[0] = bytes(eh[0][:5]) + b"\x01" + bytes(eh[0][6:])  # type: ignore[index]
        note_off = _EHDR_SIZE + (1 + len(loads)) * _PHDR_SIZE
        off = _align(note_off + len(notes), align)
        newph = [[PT_NOTE, 0, note_off, 0, 0, len(notes), len(notes), 0]]
        for p in loads:
            newph.append([p[0], p[1], off, *p[3:]])
            off += _align(p[5], align)
        eh[5], eh[6], eh[8], eh[9], eh[10] = _EHDR_SIZE, 0, _EHDR_SIZE, _PHDR_SIZE, len(newph)
        eh[11], eh[12], eh[13] = 0, 0, 0
        tmp = dst.with_name(dst.name + ".part")
        try:
            _write_core(f, tmp, eh, newph, notes, loads)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dst)
    return CoreFixup(
        output=dst,
        was_big_endian=big,
        vmcoreinfo_paddr=vmcoreinfo_paddr,
        vmcoreinfo_added=added,
        cpus=cpus,
        loads=len(loads),
        vmcoreinfo=info.split(b"\0", 1)[0],
    )
