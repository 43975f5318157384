"""Hostile files: crafted ``.ko``/``-s`` files, VMCOREINFO and QEMU dumps, and the
decompressed-debug cache under two writers.

Every file here is a real fixture file mutated at known offsets.  Each run
must end with one line on stderr (exit 2), or a report with a finding, in
bounded time (a timeout) and memory (``RLIMIT_AS`` on the child).
"""

from __future__ import annotations

import json
import os
import resource
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from klpinspect.backends.drgn.debuginfo import MAX_DECOMPRESSED, decompressed_debug_file
from klpinspect.errors import TargetError

REPO = Path(__file__).resolve().parent.parent
MEM_LIMIT = 3 << 30
SHF_COMPRESSED = 0x800


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


def cli(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "klpinspect", *map(str, args)], capture_output=True, text=True,
        env=env, timeout=timeout, check=False, preexec_fn=_limits,
    )  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr, proc.stdout[:500])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def ko(modules_dir: Path) -> Path:
    """A fixture module with zlib-compressed debug sections (CONFIG_DEBUG_INFO_COMPRESSED)."""
    path = modules_dir / "rk_lib.ko"
    if not path.exists():
        path = sorted(modules_dir.glob("*.ko"))[0]
    return path


def _shdr(data: bytes, i: int) -> tuple[int, int]:
    """(file offset of section header i, its e_shentsize) of a little-endian ELF64."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize = struct.unpack_from("<H", data, 0x3A)[0]
    return shoff + i * shentsize, shentsize


def _compressed_index(path: Path) -> int:
    """The largest compressed section."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sizes = [(s["sh_size"], i) for i, s in enumerate(elf.iter_sections())
                 if s["sh_flags"] & SHF_COMPRESSED]  # fmt: skip
    assert sizes, f"{path}: no compressed section"
    return max(sizes)[1]


def _mutate(src: Path, dst: Path, edits: list[tuple[int, bytes]]) -> Path:
    data = bytearray(src.read_bytes())
    for off, b in edits:
        data[off : off + len(b)] = b
    dst.write_bytes(bytes(data))
    return dst


def hostile_kos(ko: Path, tmp: Path) -> dict[str, Path]:
    data = ko.read_bytes()
    i = _compressed_index(ko)
    hdr, _ = _shdr(data, i)
    sh_offset = struct.unpack_from("<Q", data, hdr + 0x18)[0]
    out = {
        # sh_offset far past the end of the file
        "offset-past-eof": [(hdr + 0x18, struct.pack("<Q", 1 << 40))],
        # sh_size larger than the file
        "size-past-eof": [(hdr + 0x20, struct.pack("<Q", len(data) * 4))],
        # e_shnum 65535 with the table where it is
        "huge-shnum": [(0x3C, struct.pack("<H", 0xFFFF))],
        # e_shentsize that is not sizeof(Elf64_Shdr)
        "bad-shentsize": [(0x3A, struct.pack("<H", 7))],
        # the compression header declares 16 bytes: the data expand past that
        "expands-past-declared": [(sh_offset + 8, struct.pack("<Q", 16))],
        # the compression header declares an absurd size
        "declares-huge": [(sh_offset + 8, struct.pack("<Q", 1 << 44))],
        # not zlib data at all
        "garbage-stream": [(sh_offset + 24, b"\xff" * 32)],
    }
    return {k: _mutate(ko, tmp / f"{k}.ko", v) for k, v in out.items()}


def test_hostile_ko_in_process(ko: Path, tmp_path: Path) -> None:
    for name, path in hostile_kos(ko, tmp_path).items():
        with pytest.raises(TargetError) as e:
            decompressed_debug_file(path, tmp_path / "cache")
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, (name, msg)
        if name.startswith(("expands", "declares")):
            assert "declare" in msg or "expands past" in msg, (name, msg)


def test_zlib_bomb_is_bounded(ko: Path, tmp_path: Path) -> None:
    """A section whose stream inflates to 16 MiB but declares 4 KiB: refused after
    4 KiB + 1 of output, never inflated whole."""
    data = bytearray(ko.read_bytes())
    i = _compressed_index(ko)
    hdr, _ = _shdr(data, i)
    off, size = struct.unpack_from("<QQ", data, hdr + 0x18)
    bomb = zlib.compress(bytes(16 << 20), 9)
    assert len(bomb) + 24 <= size, "the fixture section is too small for the bomb"
    data[off + 8 : off + 16] = struct.pack("<Q", 4096)
    data[off + 24 : off + 24 + len(bomb)] = bomb
    path = tmp_path / "bomb.ko"
    path.write_bytes(bytes(data))
    with pytest.raises(TargetError, match="expands past its declared size 4096"):
        decompressed_debug_file(path, tmp_path / "cache")
    assert MAX_DECOMPRESSED <= 1 << 30


def test_hostile_ko_cli(ko: Path, tmp_path: Path, vmcore_elf: Path, vmlinux_debug: Path) -> None:
    """Through the CLI: ``-s`` with a hostile .ko is one line; ``ko`` lints it to one
    finding or one line; both within the time and memory limits."""
    kos = hostile_kos(ko, tmp_path)
    env_cache = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    os.environ.update(env_cache)
    try:
        for name in ("offset-past-eof", "huge-shnum", "expands-past-declared", "declares-huge"):
            proc = cli("-c", vmcore_elf, "-s", vmlinux_debug, "-s", kos[name], "stubs", "rk_lib")
            one_line(proc, kos[name].name)
        for name, path in kos.items():
            proc = cli("--format", "json", "ko", path)
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, name
            if proc.returncode == 2:
                one_line(proc)
            else:
                report = json.loads(proc.stdout)
                assert proc.returncode in (0, 1), (name, proc.stderr)
                assert len(proc.stderr.strip().splitlines()) <= 1, (name, proc.stderr)
                assert report["findings"] or proc.returncode == 0, name
    finally:
        for k in env_cache:
            os.environ.pop(k, None)


def test_garbage_vmcoreinfo(vmcore_qemu_elf: Path, vmlinux_debug: Path, lp61: Path,
                            tmp_path: Path) -> None:
    """VMCOREINFO whose values are garbage: one line each, never a traceback."""
    text = (lp61 / "vmcoreinfo.txt").read_text()
    variants = {
        "pagesize": text.replace("PAGESIZE=65536", "PAGESIZE=zzz"),
        "pagesize0": text.replace("PAGESIZE=65536", "PAGESIZE=0"),
        "swapper": text.replace("SYMBOL(swapper_pg_dir)=c0000000014d0000",
                                "SYMBOL(swapper_pg_dir)=ffffffffffffffff"),
        "kerneloffset": text.replace("KERNELOFFSET=0", "KERNELOFFSET=not-hex"),
        "binary": "OSRELEASE=6.1.192\nPAGESIZE=65536\n" + "\x01\xff" * 2000,
    }  # fmt: skip
    for name, body in variants.items():
        info = tmp_path / f"{name}.txt"
        info.write_text(body, errors="surrogateescape")
        proc = cli("-c", vmcore_qemu_elf, "--vmcoreinfo", info, "-s", vmlinux_debug,
                   "--format", "json", "stubs")  # fmt: skip
        if proc.returncode == 2:
            one_line(proc)
        else:  # survived: a report, findings for what it could not read
            assert proc.returncode in (0, 1), (name, proc.stderr)
            json.loads(proc.stdout)
            assert "Traceback" not in proc.stderr, proc.stderr


def _qemu_headers(src: Path, dst: Path, edit: str) -> Path:
    """The first 1 MiB of QEMU's own dump (big-endian ELF64: headers, notes, the
    start of RAM), with its program headers made to lie."""
    with open(src, "rb") as f:
        data = bytearray(f.read(1 << 20))
    phoff = struct.unpack_from(">Q", data, 0x20)[0]
    phnum = struct.unpack_from(">H", data, 0x38)[0]
    loads = [phoff + 56 * i for i in range(phnum) if struct.unpack_from(">I", data,
                                                                          phoff + 56 * i)[0] == 1]
    notes = [phoff + 56 * i for i in range(phnum) if struct.unpack_from(">I", data,
                                                                          phoff + 56 * i)[0] == 4]
    if edit == "load-offset-past-eof":
        struct.pack_into(">Q", data, loads[0] + 8, 1 << 50)
    elif edit == "load-filesz-huge":
        struct.pack_into(">Q", data, loads[0] + 32, 1 << 62)
    elif edit == "phnum-huge":
        struct.pack_into(">H", data, 0x38, 0xFFFF)
    elif edit == "note-size-huge":
        struct.pack_into(">Q", data, notes[0] + 32, 1 << 40)
    elif edit == "truncated":
        pass  # 1 MiB of a 512 MiB dump
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("edit", ["load-offset-past-eof", "load-filesz-huge", "phnum-huge",
                                  "note-size-huge", "truncated"])
def test_lying_qemu_dump(vmcore_qemu_elf: Path, vmlinux_debug: Path, lp61: Path,
                         tmp_path: Path, edit: str) -> None:
    core = _qemu_headers(vmcore_qemu_elf, tmp_path / "core", edit)
    proc = cli("-c", core, "--vmcoreinfo", lp61 / "vmcoreinfo.txt", "-s", vmlinux_debug,
               "--format", "json", "audit")  # fmt: skip
    if proc.returncode == 2:
        one_line(proc)
    else:
        assert proc.returncode in (0, 1), proc.stderr
        assert json.loads(proc.stdout)["findings"], "damage must show as a finding"


# ---- the decompressed-debug cache


FILL = """
import sys
from klpinspect.backends.drgn.debuginfo import decompressed_debug_file
for _ in range(int(sys.argv[3])):
    print(decompressed_debug_file(sys.argv[1], sys.argv[2]))
"""


def test_cache_two_writers(ko: Path, tmp_path: Path) -> None:
    """Two processes fill an empty cache at once: both get the same complete file,
    no temporary file is left, and the cache is private (0700 directory, 0600 files)."""
    cache = tmp_path / "cache" / "debuginfo"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen([sys.executable, "-c", FILL, str(ko), str(cache), "3"],
                         stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    paths = {Path(x) for o in outs for x in o}
    assert len(paths) == 1
    (out,) = paths
    assert out.parent == cache and sorted(os.listdir(cache)) == [out.name]  # no .tmp left
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_REL"
        assert not any(s["sh_flags"] & SHF_COMPRESSED for s in elf.iter_sections())
        # content-keyed: the name starts with the SHA-256 of the source
        import hashlib

        assert out.name.startswith(hashlib.sha256(ko.read_bytes()).hexdigest()[:24])
    # a changed source gets another entry, never the old one
    other = tmp_path / ko.name
    other.write_bytes(ko.read_bytes() + b"\0" * 8)
    assert decompressed_debug_file(other, cache) != out
