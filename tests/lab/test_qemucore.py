"""The lab's fix-up of QEMU's ppc64 dumps, against the fixture's own pair of files.

``vmcore.qemu.elf`` is what QEMU 7.2 wrote; ``vmcore.elf`` is the fixed-up
copy the fixture was published with (sha256 in its README).  Our fix-up of
the first must give the second, byte for byte.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest
from qemucore import QemuCoreError, find_vmcoreinfo_note, fixup_qemu_core

pytestmark = pytest.mark.dump

FIXED_SHA256 = "e5b67190eb34883e207a9b744ecdac895ace929864ae2311739cf3955235c298"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def test_fixup_gives_the_fixture_vmcore(vmcore_qemu_elf: Path, lp61: Path, tmp_path: Path
                                        ) -> None:
    m = re.search(r"RK-VMCOREINFO (0x[0-9a-f]+) (\d+)", (lp61 / "console.log").read_text())
    assert m
    paddr, size = int(m.group(1), 16), int(m.group(2), 16)
    before = vmcore_qemu_elf.stat().st_mtime_ns
    out = tmp_path / "vmcore.elf"
    r = fixup_qemu_core(vmcore_qemu_elf, out, paddr, size)
    assert vmcore_qemu_elf.stat().st_mtime_ns == before  # input untouched
    assert r.was_big_endian and r.vmcoreinfo_added and r.cpus == 2 and r.loads == 1
    assert r.vmcoreinfo == (lp61 / "vmcoreinfo.txt").read_bytes().rstrip(b"\0")
    assert _sha256(out) == FIXED_SHA256
    # a fixed-up core is left as it is, apart from the layout
    again = fixup_qemu_core(out, tmp_path / "again.elf")
    assert not again.was_big_endian and not again.vmcoreinfo_added
    assert _sha256(tmp_path / "again.elf") == FIXED_SHA256


def test_vmcoreinfo_found_without_the_console(vmcore_qemu_elf: Path) -> None:
    # the guest printed "RK-VMCOREINFO 0x0000000003780000 10024"
    assert find_vmcoreinfo_note(vmcore_qemu_elf) == 0x3780000


def _core(tmp_path: Path, machine: int) -> Path:
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 4, machine, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 0, 0x1000, 0, 0, 0x1000, 0x1000, 0)
    p = tmp_path / "core"
    p.write_bytes(ehdr + phdr + bytes(0x1000 - 120) + bytes(0x1000))
    return p


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(QemuCoreError, match="not a ppc64 core"):
        fixup_qemu_core(_core(tmp_path, 62), tmp_path / "out")
    with pytest.raises(QemuCoreError, match="no VMCOREINFO"):
        fixup_qemu_core(_core(tmp_path, 21), tmp_path / "out")
    text = tmp_path / "text"
    text.write_text("hello\n")
    with pytest.raises(QemuCoreError, match="not an ELF64"):
        fixup_qemu_core(text, tmp_path / "out")
    core = _core(tmp_path, 21)
    with pytest.raises(QemuCoreError, match="refusing to overwrite"):
        fixup_qemu_core(core, core)
    assert not (tmp_path / "out").exists()
