"""Build ARM32 test objects with the real cross toolchain at test time.

Encodings come from binutils and GCC (``arm-linux-gnueabihf-as``/``-ld``/``-gcc``),
never typed in: a ``.s`` under ``tests/asm/`` or a ``.c`` under ``tests/arm32/`` is
assembled or compiled into a relocatable object (a ``.ko`` stand-in: calls to the
undefined ``__gnu_mcount_nc`` carry relocations) and, when asked, linked at a
kernel-like address (a vmlinux stand-in: calls are plain ``bl`` to the symbol).
A missing tool fails the test; it is never a skip.

Debian packages: ``binutils-arm-linux-gnueabihf``, ``gcc-arm-linux-gnueabihf``.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

__all__ = ("ASM_DIR", "C_DIR", "assemble", "compile_c", "link", "objdump", "tool")

ASM_DIR = Path(__file__).resolve().parent / "asm"
C_DIR = Path(__file__).resolve().parent / "arm32"
PREFIX = "arm-linux-gnueabihf-"
_PACKAGE = {"gcc": "gcc-arm-linux-gnueabihf"}
# The flags arch/arm/Makefile uses with CONFIG_FRAME_POINTER + CONFIG_FUNCTION_TRACER
# (GCC): -mapcs -mno-sched-prolog -fno-omit-frame-pointer, and -pg.
KERNEL_FP_CFLAGS = ("-marm", "-pg", "-mapcs-frame", "-fno-omit-frame-pointer", "-O2")

_tmpdir: Path | None = None
_counter = 0


def _workdir() -> Path:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = Path(tempfile.mkdtemp(prefix="klpinspect-arm32-"))
        atexit.register(shutil.rmtree, _tmpdir, True)
    return _tmpdir


def _out(stem: str, suffix: str) -> Path:
    global _counter
    _counter += 1
    return _workdir() / f"{stem}_{_counter}{suffix}"  # a valid module name


def tool(name: str) -> str:
    """Path of ``arm-linux-gnueabihf-<name>``; fails the test if absent."""
    exe = PREFIX + name
    path = shutil.which(exe)
    if path is None:
        pkg = _PACKAGE.get(name, "binutils-arm-linux-gnueabihf")
        pytest.fail(f"{exe} not found: apt-get install {pkg}", pytrace=False)
    return path


def _run(cmd: Sequence[str], what: str) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed:\n{proc.stderr}", pytrace=False)


def assemble(source: str | Path, *, defsyms: Sequence[str] = ()) -> Path:
    """Assemble ``source`` (a path or a name under ``tests/asm/``) into a ``.o``."""
    path = Path(source)
    if not path.is_absolute():
        path = ASM_DIR / path
    obj = _out(path.stem, ".o")
    cmd = [tool("as"), "-march=armv7-a", "-mfpu=vfpv3-d16", "-o", str(obj)]
    for d in defsyms:
        cmd += ["--defsym", d]
    _run([*cmd, str(path)], f"assembling {path.name}")
    return obj


def compile_c(source: str | Path, flags: Sequence[str] = KERNEL_FP_CFLAGS) -> Path:
    """Compile ``source`` (a path or a name under ``tests/arm32/``) with ``-c``."""
    path = Path(source)
    if not path.is_absolute():
        path = C_DIR / path
    obj = _out(path.stem, ".o")
    _run([tool("gcc"), *flags, "-c", "-o", str(obj), str(path)], f"compiling {path.name}")
    return obj


def link(objs: Sequence[Path], *, text: int = 0xC0008000) -> Path:
    """Link ``objs`` into an executable with ``.text`` at ``text`` (no entry point needed)."""
    out = _out(objs[0].stem, ".elf")
    _run([tool("ld"), "-Ttext", f"{text:#x}", "-e", "0", "-o", str(out), *map(str, objs)],
         "linking")
    return out


def objdump(path: Path) -> str:
    """``objdump -d -r`` text of ``path``."""
    proc = subprocess.run([tool("objdump"), "-d", "-r", str(path)], capture_output=True,
                          text=True, check=True)
    return proc.stdout
