"""Debug info files as users have them: build IDs and compressed ``.ko`` files.

drgn 0.3.0 (its bundled elfutils) rejects relocatable ELF files whose debug
sections are ``SHF_COMPRESSED`` -- what ``CONFIG_DEBUG_INFO_COMPRESSED`` makes
of every ``.ko`` -- with "libelf error: section does not contain compressed
data".  :func:`decompressed_debug_file` writes a copy of such a file with the
sections decompressed (what ``objcopy --decompress-debug-sections`` does) into
a cache directory and returns its path; the user's file is never touched.
Executables (``vmlinux``, ``vmlinux.debug``) with compressed sections load fine
and are passed through.

Everything here is pure Python (pyelftools, zlib; ``zstandard`` only for
``ELFCOMPRESS_ZSTD`` sections in relocatable files).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection

from klpinspect.errors import TargetError

__all__ = (
    "debug_cache_dir",
    "decompressed_debug_file",
    "expand_debug_paths",
    "has_compressed_sections",
    "prepare_debug_files",
    "read_build_id",
)

SHT_NULL = 0
SHT_NOBITS = 8
SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB = 1
ELFCOMPRESS_ZSTD = 2
NT_GNU_BUILD_ID = 3
#: Largest decompressed debug section accepted (a corrupt ``ch_size`` is refused,
#: and no section may expand past the size its header declares).
MAX_DECOMPRESSED = 1 << 30
# What pyelftools raises on damaged input.
_BAD_ELF = (ELFError, ELFParseError, ConstructError, struct.error, EOFError, ValueError,
            IndexError, KeyError, AssertionError)


def debug_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/klpinspect`` (default ``~/.cache/klpinspect``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "klpinspect"


def _open_elf(path: Path) -> tuple[bytes, ELFFile]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TargetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TargetError(f"{path}: is a directory") from None
    except OSError as e:
        raise TargetError(f"{path}: {e.strerror}") from None
    if data[:4] != b"\x7fELF":
        raise TargetError(f"{path}: not an ELF file (expected a vmlinux or .ko with debug info)")
    try:
        elf = ELFFile(io.BytesIO(data))
        _check_tables(path, data, elf)
        return data, elf
    except _BAD_ELF as e:
        raise TargetError(f"{path}: malformed ELF file: {e}") from None


def _check_tables(path: Path, data: bytes, elf: ELFFile) -> None:
    """Refuse section headers a hostile file uses to make us read or allocate
    without bound: a table past the end of the file, an odd entry size, a
    section (other than ``SHT_NOBITS``) whose contents lie past the end."""
    shoff, shnum, shentsize = elf["e_shoff"], elf.num_sections(), elf["e_shentsize"]
    want = 64 if elf.elfclass == 64 else 40
    if shnum and shentsize != want:
        raise TargetError(f"{path}: malformed ELF file: section header size {shentsize}, "
                          f"not {want}")
    if shoff + shnum * shentsize > len(data):
        raise TargetError(f"{path}: malformed ELF file: {shnum} section headers at {shoff:#x} "
                          f"extend past the end of the file ({len(data)} bytes)")
    end = "<" if elf.little_endian else ">"
    fmt = struct.Struct(end + ("IIQQQQIIQQ" if elf.elfclass == 64 else "IIIIIIIIII"))
    for i in range(shnum):
        hdr = fmt.unpack_from(data, shoff + i * shentsize)
        sh_type, sh_offset, sh_size = hdr[1], hdr[4], hdr[5]
        if sh_type not in (SHT_NULL, SHT_NOBITS) and sh_offset + sh_size > len(data):
            raise TargetError(f"{path}: malformed ELF file: section {i} ({sh_size} bytes at "
                              f"{sh_offset:#x}) extends past the end of the file")


def has_compressed_sections(path: str | os.PathLike[str]) -> bool:
    """Whether the ELF file has any ``SHF_COMPRESSED`` section."""
    _, elf = _open_elf(Path(path))
    return any(s["sh_flags"] & SHF_COMPRESSED for s in elf.iter_sections())


def read_build_id(path: str | os.PathLike[str]) -> str | None:
    """The GNU build ID (``NT_GNU_BUILD_ID`` note) of an ELF file as lower-case hex."""
    return _build_id(_open_elf(Path(path))[1])


def _build_id(elf: ELFFile) -> str | None:
    for sec in elf.iter_sections():
        if not isinstance(sec, NoteSection):
            continue
        for note in sec.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                return str(note["n_desc"]).lower()
    return None


def _decompress(path: Path, name: str, raw: bytes, ch_type: int, ch_size: int) -> bytes:
    """Decompress one section, never to more than ``ch_size`` (+1 to notice) bytes."""
    if ch_size > MAX_DECOMPRESSED:
        raise TargetError(f"{path}: section {name} declares {ch_size} decompressed bytes "
                          f"(more than {MAX_DECOMPRESSED})")
    if ch_type == ELFCOMPRESS_ZLIB:
        d = zlib.decompressobj()
        out = d.decompress(raw, ch_size + 1)
        if len(out) > ch_size:
            raise TargetError(f"{path}: section {name} expands past its declared size "
                              f"{ch_size}")
        return out
    if ch_type == ELFCOMPRESS_ZSTD:
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise TargetError(
                f"{path}: section {name} is zstd-compressed; install the 'zstandard' "
                "Python package to read it"
            ) from None
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw))
            zout: bytes = reader.read(ch_size + 1)
        except zstandard.ZstdError as e:
            raise TargetError(f"{path}: cannot decompress section {name}: {e}") from None
        if len(zout) > ch_size:
            raise TargetError(f"{path}: section {name} expands past its declared size "
                              f"{ch_size}")
        return zout
    raise TargetError(f"{path}: section {name} has unknown compression type {ch_type}")


def _write_decompressed(path: Path, data: bytes, elf: ELFFile, out: Path) -> None:
    """Write ``data`` (the ELF ``path``) to ``out`` with every section decompressed.

    Section indices, names, links and order stay the same; only contents,
    ``sh_flags``, ``sh_size``, ``sh_addralign`` and file offsets change.
    """
    end = "<" if elf.little_endian else ">"
    is64 = elf.elfclass == 64
    shdr_fmt = struct.Struct(end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII"))
    chdr_fmt = struct.Struct(end + ("IIQQ" if is64 else "III"))
    raw_shdrs = []
    shoff, shentsize = elf["e_shoff"], elf["e_shentsize"]
    for i in range(elf.num_sections()):
        raw_shdrs.append(list(shdr_fmt.unpack_from(data, shoff + i * shentsize)))
    names = [s.name for s in elf.iter_sections()]

    contents: list[bytes] = []
    for hdr, name in zip(raw_shdrs, names, strict=True):
        sh_type, sh_flags, sh_offset, sh_size = hdr[1], hdr[2], hdr[4], hdr[5]
        if sh_type in (SHT_NULL, SHT_NOBITS):
            contents.append(b"")
            continue
        body = data[sh_offset : sh_offset + sh_size]
        if sh_flags & SHF_COMPRESSED:
            if len(body) < chdr_fmt.size:
                raise TargetError(f"{path}: section {name}: truncated compression header")
            if is64:
                ch_type, _, ch_size, ch_align = chdr_fmt.unpack_from(body)
            else:
                ch_type, ch_size, ch_align = chdr_fmt.unpack_from(body)
            try:
                body = _decompress(path, name, body[chdr_fmt.size :], ch_type, ch_size)
            except zlib.error as e:
                raise TargetError(f"{path}: cannot decompress section {name}: {e}") from None
            if len(body) != ch_size:
                raise TargetError(f"{path}: section {name}: decompressed size mismatch")
            hdr[2] = sh_flags & ~SHF_COMPRESSED
            hdr[8] = ch_align
        contents.append(body)

    ehsize = elf["e_ehsize"]
    buf = bytearray(data[:ehsize])
    # Lay the sections out in their original file order.
    order = sorted(range(len(raw_shdrs)), key=lambda i: raw_shdrs[i][4])
    for i in order:
        hdr = raw_shdrs[i]
        if hdr[1] == SHT_NULL:
            continue
        align = max(hdr[8], 1)
        off = (len(buf) + align - 1) // align * align
        buf += bytes(off - len(buf))
        hdr[4] = off
        if hdr[1] != SHT_NOBITS:
            hdr[5] = len(contents[i])
            buf += contents[i]
    new_shoff = (len(buf) + 7) // 8 * 8
    buf += bytes(new_shoff - len(buf))
    for hdr in raw_shdrs:
        buf += shdr_fmt.pack(*hdr)
    struct.pack_into(end + ("Q" if is64 else "I"), buf, 0x28 if is64 else 0x20, new_shoff)
    struct.pack_into(end + "H", buf, 0x3A if is64 else 0x2E, shdr_fmt.size)

    _private_dir(out.parent)
    # A private (0600) temporary file in the same directory, renamed into place:
    # a reader sees the whole file or none; two writers race harmlessly (same
    # content, keyed by the source's SHA-256).
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) as 0700; an existing one is made 0700 if it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)


def decompressed_debug_file(
    path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A path drgn 0.3.0 can load for the debug info file ``path``.

    A relocatable ELF file (``.ko``) with ``SHF_COMPRESSED`` sections is
    decompressed once into ``cache_dir`` (default :func:`debug_cache_dir`),
    keyed by the SHA-256 of its contents; any other file is returned as is.

    :raises TargetError: if the file is missing or not ELF
    """
    src = Path(path)
    data, elf = _open_elf(src)
    try:
        compressed = any(s["sh_flags"] & SHF_COMPRESSED for s in elf.iter_sections())
    except _BAD_ELF as e:
        raise TargetError(f"{src}: malformed ELF file: {e}") from None
    if elf["e_type"] != "ET_REL" or not compressed:
        return src
    digest = hashlib.sha256(data).hexdigest()[:24]
    out = Path(cache_dir) if cache_dir is not None else debug_cache_dir() / "debuginfo"
    out = out / f"{digest}-{src.name}"
    if not out.exists():
        try:
            _write_decompressed(src, data, elf, out)
        except _BAD_ELF as e:
            raise TargetError(f"{src}: malformed ELF file: {e}") from None
        except OSError as e:
            raise TargetError(f"{out}: cannot write decompressed copy of {src}: {e}") from None
    return out


def expand_debug_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Each path, with a directory replaced by the ``*.ko`` files below it."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(path.rglob("*.ko"))
        else:
            yield path


def prepare_debug_files(
    paths: Iterable[str | os.PathLike[str]], cache_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, Path, str | None, bool]]:
    """Check and prepare ``-s`` files for drgn.

    :returns: per file ``(original, path to load, build ID, is_relocatable)``
    :raises TargetError: for a missing or non-ELF file
    """
    out = []
    for path in expand_debug_paths(paths):
        _, elf = _open_elf(path)
        rel = elf["e_type"] == "ET_REL"
        try:
            build_id = None if rel else _build_id(elf)
        except _BAD_ELF as e:
            raise TargetError(f"{path}: malformed ELF file: {e}") from None
        out.append((path, decompressed_debug_file(path, cache_dir), build_id, rel))
    return out
