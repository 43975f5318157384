"""Module files as they ship: compressed images and the module's own name.

Shared by the ppc64 ``.ko`` lint (:mod:`klpinspect.ko`) and the ARM32
prologue lint (:mod:`klpinspect.arm32.prologue`).  Pure: bytes and paths in.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib

from .errors import KlpError

__all__ = ("decompress_module", "elf_image", "module_name")


def decompress_module(data: bytes) -> bytes:
    """A ``.ko.xz``/``.ko.gz``/``.ko.bz2`` image decompressed (by magic), else as is.

    :raises KlpError: for a zstd-compressed image (no zstd in the standard library)
    """
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        raise KlpError("zstd-compressed module: decompress it first (zstd -d)")
    return data


def elf_image(data: bytes) -> bytes:
    """``data`` decompressed (:func:`decompress_module`) and checked to be an ELF file.

    :raises KlpError: ``cannot decompress: ...`` or ``not an ELF file``
    """
    try:
        raw = decompress_module(data)
    except (lzma.LZMAError, zlib.error, EOFError, OSError) as e:
        raise KlpError(f"cannot decompress: {e}") from e
    if raw[:4] != b"\x7fELF":
        raise KlpError("not an ELF file")
    return raw


def module_name(path: str, modinfo: bytes | None) -> str:
    """``name=`` from ``.modinfo`` (modpost writes it), else the file's stem
    (``-`` as ``_``, as the kernel names modules)."""
    for entry in (modinfo or b"").split(b"\0"):
        if entry.startswith(b"name="):
            return entry[5:].decode("utf-8", "replace")
    base = os.path.basename(path)
    for suffix in (".xz", ".gz", ".bz2", ".zst"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").removesuffix(".o").replace("-", "_")
