"""The kernel's VMCOREINFO text: read from a file, found in raw memory, parsed.

Pure helpers (no drgn, no gdb) for the back ends: a dump without a
VMCOREINFO note (QEMU's own) is opened with ``--vmcoreinfo FILE``, a QEMU
guest's note is found by scanning its RAM, and ``OSRELEASE``/``BUILD-ID``/
``PAGESIZE`` tell whether the debug info and the addresses fit.
"""

from __future__ import annotations

import mmap
import os
import re
import struct

from klpinspect.errors import TargetError

__all__ = (
    "find_vmcoreinfo_note",
    "read_vmcoreinfo_file",
    "vmcoreinfo_build_id",
    "vmcoreinfo_value",
)


def read_vmcoreinfo_file(path: str | os.PathLike[str]) -> bytes:
    """The VMCOREINFO text of a ``--vmcoreinfo`` file.

    The file holds the text of the kernel's VMCOREINFO note (``OSRELEASE=...``
    lines), as in the note's descriptor.

    :raises TargetError: if the file is missing or holds something else
    """
    try:
        with open(path, "rb") as f:  # not pathlib: the gdb front end never imports it
            data = f.read()
    except FileNotFoundError:
        raise TargetError(f"{path}: no such file") from None
    except OSError as e:
        raise TargetError(f"{path}: {e.strerror}") from None
    data = data.rstrip(b"\0")
    if b"OSRELEASE=" not in data:
        if re.fullmatch(rb"\s*[0-9a-fA-F]+\s+[0-9a-fA-F]+\s*", data):
            raise TargetError(
                f"{path}: this is /sys/kernel/vmcoreinfo (address and size of the note); "
                "give the note's text instead"
            )
        raise TargetError(f"{path}: not VMCOREINFO text (no OSRELEASE= line)")
    return data


def vmcoreinfo_build_id(vmcoreinfo: bytes | str) -> str | None:
    """``BUILD-ID=`` of a VMCOREINFO text, lower-case hex."""
    text = vmcoreinfo.decode("ascii", "replace") if isinstance(vmcoreinfo, bytes) else vmcoreinfo
    m = re.search(r"^BUILD-ID=([0-9A-Fa-f]+)\s*$", text, re.M)
    return m.group(1).lower() if m else None


_NOTE_NEEDLE = b"VMCOREINFO\0\0OSRELEASE="


def find_vmcoreinfo_note(memory: bytes | mmap.mmap, start: int = 0) -> tuple[bytes, str] | None:
    """Find the kernel's VMCOREINFO ELF note in raw memory.

    The kernel keeps it (``vmcoreinfo_note``, exported to kdump through
    ``/sys/kernel/vmcoreinfo``) as an ELF note: ``namesz`` 11, ``descsz``,
    type 0, ``"VMCOREINFO\\0"`` padded to 12, then ``OSRELEASE=...``.  The note
    header's byte order is the guest's.

    :returns: ``(descriptor text, "little" or "big")`` or ``None``
    """
    pos = start
    while True:
        i = memory.find(_NOTE_NEEDLE, pos)
        if i < 0:
            return None
        pos = i + 1
        if i < 12:
            continue
        hdr = bytes(memory[i - 12 : i])
        for order, fmt in (("little", "<III"), ("big", ">III")):
            namesz, descsz, ntype = struct.unpack(fmt, hdr)
            if namesz == 11 and ntype == 0 and 0 < descsz <= 1 << 20:
                desc = bytes(memory[i + 12 : i + 12 + descsz]).split(b"\0", 1)[0]
                if b"\nPAGESIZE=" in desc or b"\nSYMBOL(" in desc:
                    return desc, order
    return None


def vmcoreinfo_value(vmcoreinfo: bytes | str, key: str) -> str | None:
    """The value of ``KEY=value`` in a VMCOREINFO text (``OSRELEASE``, ``PAGESIZE`` ...)."""
    text = vmcoreinfo.decode("utf-8", "replace") if isinstance(vmcoreinfo, bytes) else vmcoreinfo
    m = re.search(rf"^{re.escape(key)}=(.*)$", text, re.M)
    return m.group(1).strip() if m else None
