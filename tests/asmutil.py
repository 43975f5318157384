"""Assemble test sources with the real ppc64 cross assembler at test time.

Instruction encodings in the tests come from binutils, never from hand-typed
hex: a ``.s`` file under ``tests/asm/`` is assembled (with ``--defsym`` for its
symbolic inputs) and the section bytes are read back with pyelftools.  A
missing assembler fails the test; it is never a skip.

Debian packages: ``binutils-powerpc64le-linux-gnu`` (little-endian, ELFv2) and
``binutils-powerpc64-linux-gnu`` (big-endian, ELFv1 and BE ELFv2).
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

__all__ = ("ASM_DIR", "Assembled", "assemble", "objdump", "objdump_mnemonics", "tool")

ASM_DIR = Path(__file__).resolve().parent / "asm"

_PREFIX = {"little": "powerpc64le-linux-gnu-", "big": "powerpc64-linux-gnu-"}
_PACKAGE = {"little": "binutils-powerpc64le-linux-gnu", "big": "binutils-powerpc64-linux-gnu"}
# -mpower10 for the prefixed pld/paddi/pla; -mregnames so sources can say r11.
_AS_FLAGS = {
    "little": ["-a64", "-mlittle", "-mpower10", "-mregnames"],
    "big": ["-a64", "-mbig", "-mpower10", "-mregnames"],
}

_tmpdir: Path | None = None
_cache: dict[tuple[str, str, tuple[tuple[str, int], ...]], Assembled] = {}


def _workdir() -> Path:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = Path(tempfile.mkdtemp(prefix="klpinspect-asm-"))
        atexit.register(shutil.rmtree, _tmpdir, True)
    return _tmpdir


def tool(name: str, byteorder: str = "little") -> str:
    """Path of the cross binutils tool ``name`` (``as``, ``objdump``); fails the test if absent."""
    exe = _PREFIX[byteorder] + name
    path = shutil.which(exe)
    if path is None:
        pytest.fail(f"{exe} not found: apt-get install {_PACKAGE[byteorder]}", pytrace=False)
    return path


@dataclass(frozen=True)
class Assembled:
    """An assembled object: its path (kept for objdump) and its sections' bytes."""

    obj: Path
    byteorder: str
    sections: Mapping[str, bytes]

    @property
    def text(self) -> bytes:
        return self.sections[".text"]

    def section(self, name: str) -> bytes:
        return self.sections[name]


def _defsym(name: str, value: int) -> str:
    return f"{name}={value:#x}" if value >= 0 else f"{name}=-{-value:#x}"


def assemble(
    source: str | Path,
    *,
    byteorder: str = "little",
    defsyms: Mapping[str, int] | None = None,
) -> Assembled:
    """Assemble ``source`` (a path, or a file name under ``tests/asm/``).

    :param byteorder: ``"little"`` (powerpc64le-linux-gnu-as) or ``"big"`` (powerpc64-...-as)
    :param defsyms: symbol values passed as ``--defsym NAME=VALUE``
    :returns: the object with every SHT_PROGBITS section's bytes
    """
    path = Path(source)
    if not path.is_absolute() and not path.exists():
        path = ASM_DIR / path
    syms = tuple(sorted((defsyms or {}).items()))
    key = (str(path), byteorder, syms)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    assembler = tool("as", byteorder)
    obj = _workdir() / f"{path.stem}-{byteorder}-{len(_cache)}.o"
    cmd = [assembler, *_AS_FLAGS[byteorder], "-I", str(ASM_DIR), "-o", str(obj)]
    for name, value in syms:
        cmd += ["--defsym", _defsym(name, value)]
    cmd.append(str(path))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"assembling {path.name} failed:\n{proc.stderr}", pytrace=False)
    sections: dict[str, bytes] = {}
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if sec["sh_type"] == "SHT_PROGBITS":
                sections[sec.name] = sec.data()
    result = Assembled(obj, byteorder, sections)
    _cache[key] = result
    return result


def objdump(asm: Assembled, section: str = ".text") -> str:
    """``objdump -d`` of the object (Power10 mnemonics)."""
    exe = tool("objdump", asm.byteorder)
    proc = subprocess.run(
        [exe, "-d", "-z", "-M", "power10", "-j", section, str(asm.obj)],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def objdump_mnemonics(asm: Assembled, section: str = ".text") -> dict[int, str]:
    """Section offset -> objdump's mnemonic, for every line that has one.

    A prefixed instruction's second word is printed on a continuation line without
    a mnemonic; it is left out.
    """
    out: dict[int, str] = {}
    for line in objdump(asm, section).splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().endswith(":"):
            continue
        try:
            offset = int(parts[0].strip()[:-1], 16)
        except ValueError:
            continue
        mnemonic = parts[2].split()[0] if parts[2].split() else ""
        if mnemonic:
            out[offset] = mnemonic
    return out
