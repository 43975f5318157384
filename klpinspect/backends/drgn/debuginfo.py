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
``ELFCOMPRESS_ZSTD`` sections in relocatable files).  Files are mapped, not
read: a ``-s`` vmlinux costs the pages of its headers and notes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from klpinspect.errors import TargetError

__all__ = (
    "debug_cache_dir",
    "decompressed_debug_file",
    "MODULE_DEBUG_PATTERNS",
    "expand_debug_paths",
    "has_compressed_sections",
    "prepare_debug_files",
    "read_build_id",
)

SHT_NULL = 0
SHT_NOTE = 7
SHT_NOBITS = 8
ET_REL = 1
SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB = 1
ELFCOMPRESS_ZSTD = 2
NT_GNU_BUILD_ID = 3
#: Largest decompressed debug section accepted (a corrupt ``ch_size`` is refused,
#: and no section may expand past the size its header declares).
MAX_DECOMPRESSED = 1 << 30


def _bad_elf() -> tuple[type[BaseException], ...]:
    """What pyelftools raises on damaged input (imported late: ~40 ms)."""
    from elftools.common.exceptions import ELFError, ELFParseError
    from elftools.construct import ConstructError

    return (ELFError, ELFParseError, ConstructError, struct.error, EOFError, ValueError,
            IndexError, KeyError, AssertionError)


def debug_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/klpinspect`` (default ``~/.cache/klpinspect``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "klpinspect"


class _Elf:
    """The ELF header and section headers of a mapped file (``Elf64_Ehdr``,
    ``Elf64_Shdr``, or their 32-bit forms): what learning a file's type, build ID
    and compressed sections needs, without pyelftools (~40 ms to import)."""

    def __init__(self, path: Path, mm: mmap.mmap) -> None:
        try:
            ident = mm[:16]
            self.is64 = ident[4] == 2
            self.little = ident[5] == 1
            e = "<" if self.little else ">"
            if self.is64:
                (self.e_type, _m, _v, _entry, _phoff, shoff, _fl, _eh, _phes, _phn, shentsize,
                 shnum, _shstrndx) = struct.unpack_from(e + "HHIQQQIHHHHHH", mm, 16)
                fmt = struct.Struct(e + "IIQQQQIIQQ")
            else:
                (self.e_type, _m, _v, _entry, _phoff, shoff, _fl, _eh, _phes, _phn, shentsize,
                 shnum, _shstrndx) = struct.unpack_from(e + "HHIIIIIHHHHHH", mm, 16)
                fmt = struct.Struct(e + "IIIIIIIIII")
            # A hostile file must not make us read or allocate without bound: the
            # table past the end of the file, an odd entry size, contents (other
            # than SHT_NOBITS) past the end are refused before anything is read.
            if shoff and shnum and shentsize != fmt.size:
                raise ValueError(f"section header size {shentsize}, not {fmt.size}")
            if shoff and shoff + shnum * shentsize > len(mm):
                raise ValueError(
                    f"{shnum} section headers at {shoff:#x} extend past the end of the "
                    f"file ({len(mm)} bytes)"
                )
            # (sh_type, sh_flags, sh_offset, sh_size)
            self.sections = [
                (h[1], h[2], h[4], h[5])
                for h in (fmt.unpack_from(mm, shoff + i * shentsize) for i in range(shnum))
            ] if shoff else []
            for i, (sh_type, _flags, sh_offset, sh_size) in enumerate(self.sections):
                if sh_type not in (SHT_NULL, SHT_NOBITS) and sh_offset + sh_size > len(mm):
                    raise ValueError(
                        f"section {i} ({sh_size} bytes at {sh_offset:#x}) extends past "
                        "the end of the file"
                    )
        except (struct.error, ValueError, IndexError) as err:
            raise TargetError(f"{path}: malformed ELF file: {err}") from None
        self.path = path
        self.mm = mm

    @property
    def relocatable(self) -> bool:
        return bool(self.e_type == ET_REL)

    def has_compressed(self) -> bool:
        return any(flags & SHF_COMPRESSED for _t, flags, _o, _s in self.sections)

    def build_id(self) -> str | None:
        """The ``NT_GNU_BUILD_ID`` note's descriptor, from the ``SHT_NOTE`` sections."""
        e = "<" if self.little else ">"
        for sh_type, _flags, off, size in self.sections:
            if sh_type != SHT_NOTE:
                continue
            end = off + size
            if end > len(self.mm):
                raise TargetError(f"{self.path}: malformed ELF file: note past the end")
            pos = off
            while pos + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from(e + "III", self.mm, pos)
                name_at = pos + 12
                desc_at = name_at + (namesz + 3) // 4 * 4
                nxt = desc_at + (descsz + 3) // 4 * 4
                if nxt > end:
                    break
                if ntype == NT_GNU_BUILD_ID and self.mm[name_at : name_at + namesz] == b"GNU\0":
                    return bytes(self.mm[desc_at : desc_at + descsz]).hex()
                pos = nxt
        return None


@contextlib.contextmanager
def _open_elf(path: Path) -> Iterator[_Elf]:
    """The ELF file at ``path``, mapped, not read: learning its type, build ID or
    whether it has compressed sections reads its headers and notes only (a
    distribution's debug vmlinux is 300-400 MB)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below, after the mapping)
    except FileNotFoundError:
        raise TargetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TargetError(f"{path}: is a directory") from None
    except OSError as e:
        raise TargetError(f"{path}: {e.strerror}") from None
    with f:
        try:
            magic = f.read(4)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if magic else None
        except (OSError, ValueError) as e:
            raise TargetError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
        if mm is None or magic != b"\x7fELF":
            if mm is not None:
                mm.close()
            raise TargetError(
                f"{path}: not an ELF file (expected a vmlinux or .ko with debug info)"
            )
        with mm:
            yield _Elf(path, mm)


def has_compressed_sections(path: str | os.PathLike[str]) -> bool:
    """Whether the ELF file has any ``SHF_COMPRESSED`` section."""
    with _open_elf(Path(path)) as elf:
        return elf.has_compressed()


def read_build_id(path: str | os.PathLike[str]) -> str | None:
    """The GNU build ID (``NT_GNU_BUILD_ID`` note) of an ELF file as lower-case hex."""
    with _open_elf(Path(path)) as elf:
        return elf.build_id()


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
            import io

            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw))
            zout: bytes = reader.read(ch_size + 1)
        except zstandard.ZstdError as e:
            raise TargetError(f"{path}: cannot decompress section {name}: {e}") from None
        if len(zout) > ch_size:
            raise TargetError(f"{path}: section {name} expands past its declared size "
                              f"{ch_size}")
        return zout
    raise TargetError(f"{path}: section {name} has unknown compression type {ch_type}")


def _write_decompressed(path: Path, data: bytes | mmap.mmap, elf: Any, out: Path) -> None:
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
    import tempfile  # only to write a decompressed .ko (tempfile imports random, shutil)

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
    with _open_elf(src) as elf:
        return _decompressed(elf, cache_dir)


def _decompressed(elf: _Elf, cache_dir: str | os.PathLike[str] | None) -> Path:
    src = elf.path
    if not elf.relocatable or not elf.has_compressed():
        return src
    import hashlib

    digest = hashlib.sha256(elf.mm).hexdigest()[:24]
    out = Path(cache_dir) if cache_dir is not None else debug_cache_dir() / "debuginfo"
    out = out / f"{digest}-{src.name}"
    if not out.exists():
        from elftools.elf.elffile import ELFFile

        try:
            parsed = ELFFile(elf.mm)  # type: ignore[arg-type]  # a stream: read/seek/tell
            _write_decompressed(src, elf.mm, parsed, out)
        except _bad_elf() as e:
            raise TargetError(f"{src}: malformed ELF file: {e}") from None
        except OSError as e:
            raise TargetError(f"{out}: cannot write decompressed copy of {src}: {e}") from None
    return out


# Module debug files as distributions and kernel builds leave them: the .ko
# itself (make modules_install, INSTALL_MOD_STRIP unset) or its split debug
# file under /usr/lib/debug/lib/modules/RELEASE/ (Fedora/RHEL .ko.debug).
# Build-ID trees (.build-id/xx/yyyy.debug) are left to drgn's own search.
MODULE_DEBUG_PATTERNS = ("*.ko", "*.ko.debug")


def expand_debug_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Each path, with a directory replaced by the module debug files below it
    (:data:`MODULE_DEBUG_PATTERNS`, outside ``.build-id``)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = {
                f for pattern in MODULE_DEBUG_PATTERNS for f in path.rglob(pattern)
                if ".build-id" not in f.relative_to(path).parts and f.is_file()
            }
            yield from sorted(found)
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
        with _open_elf(path) as elf:
            rel = elf.relocatable
            build_id = None if rel else elf.build_id()
            out.append((path, _decompressed(elf, cache_dir), build_id, rel))
    return out
