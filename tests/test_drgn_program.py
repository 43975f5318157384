"""Opening the real ppc64le 6.1 dumps with drgn, and every bad input.

Each dump format opens once per module (``programs``); the open times are
printed (``pytest -s``) and kept in ``OPEN_TIMES``.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import time
from pathlib import Path

import drgn
import pytest
from conftest import lp_fixture
from drgn.helpers.linux.module import find_module, for_each_module
from elftools.elf.elffile import ELFFile

from klpinspect.backends.drgn.debuginfo import (
    SHF_COMPRESSED,
    decompressed_debug_file,
    has_compressed_sections,
    read_build_id,
)
from klpinspect.backends.drgn.program import (
    PAGE_OFFSET,
    find_vmcoreinfo_note,
    open_core,
    open_program,
    read_vmcoreinfo_file,
    translating_program,
    vmcoreinfo_build_id,
)
from klpinspect.errors import TargetError

pytestmark = pytest.mark.dump

OPEN_TIMES: dict[str, float] = {}
FORMATS = ("elf", "kdump", "qemu", "qemu+vmcoreinfo")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("klpcache")


@pytest.fixture(scope="module")
def programs(
    vmcore_elf: Path,
    vmcore_kdump: Path,
    vmcore_qemu_elf: Path,
    vmlinux_debug: Path,
    lp61: Path,
    cache_dir: Path,
) -> dict[str, tuple[drgn.Program, str]]:
    cores = {
        "elf": (vmcore_elf, None),
        "kdump": (vmcore_kdump, None),
        "qemu": (vmcore_qemu_elf, None),
        "qemu+vmcoreinfo": (vmcore_qemu_elf, lp61 / "vmcoreinfo.txt"),
    }
    out = {}
    for name, (core, info) in cores.items():
        t0 = time.perf_counter()
        out[name] = open_program(
            core=str(core),
            symbols=[str(vmlinux_debug)],
            vmcoreinfo=str(info) if info else None,
            cache_dir=str(cache_dir),
        )
        OPEN_TIMES[name] = time.perf_counter() - t0
    print("\nopen times: " + ", ".join(f"{k} {v:.2f} s" for k, v in OPEN_TIMES.items()))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_dump_opens_as_ppc64le_kernel(
    programs: dict[str, tuple[drgn.Program, str]], fmt: str
) -> None:
    prog, kind = programs[fmt]
    assert kind == "vmcore"
    assert prog.platform is not None
    assert prog.platform.arch == drgn.Architecture.PPC64
    assert prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN
    assert prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL
    assert prog["init_uts_ns"].name.release.string_() == b"6.1.192"
    assert sum(1 for _ in for_each_module(prog)) == 40


def _module_bytes(prog: drgn.Program) -> bytes:
    """rk_target's whole core text and the rk_lp .stubs, through the module list."""
    mod = find_module(prog, "rk_target")
    base, size = int(mod.core_layout.base.value_()), int(mod.core_layout.text_size)
    lp = find_module(prog, "rk_lp")
    data: bytes = prog.read(base, size) + prog.read(int(lp.arch.tramp), 80)
    return data


def test_module_memory_identical_in_all_formats(
    programs: dict[str, tuple[drgn.Program, str]],
) -> None:
    ref = _module_bytes(programs["elf"][0])
    assert len(ref) == 0x10000 + 80 and ref.strip(b"\0")
    for fmt in FORMATS[1:]:
        assert _module_bytes(programs[fmt][0]) == ref, fmt


def test_qemu_vmcoreinfo_found_in_memory_equals_given(
    programs: dict[str, tuple[drgn.Program, str]], lp61: Path
) -> None:
    found = programs["qemu"][0]["VMCOREINFO"].to_bytes_().rstrip(b"\0")
    given = read_vmcoreinfo_file(lp61 / "vmcoreinfo.txt")
    assert found == given
    assert vmcoreinfo_build_id(found) == read_build_id(lp61 / "vmlinux")


def test_qemu_vmcoreinfo_through_the_note_pointer(
    vmcore_qemu_elf: Path, vmlinux_debug: Path, lp61: Path, modules_dir: Path, tmp_path: Path
) -> None:
    """``--qemu`` with ``-s``: the VMCOREINFO comes through the kernel's
    ``vmcoreinfo_note`` pointer (two small reads), the text the scan of guest RAM
    finds; a debug file of another build (the 7.2 fixture's) or none: the scan."""
    from qmpdump import QMPDumpServer

    from klpinspect.backends.drgn.qmp import open_qmp, qmp_read_stats

    given = read_vmcoreinfo_file(lp61 / "vmcoreinfo.txt")
    other = lp_fixture("7.2").vmlinux_debug
    ko = str(modules_dir / "dummy.ko")  # no vmcoreinfo_note: the next file is asked
    cases = [([], True), ([str(vmlinux_debug)], False), ([str(other)], True),
             ([ko, str(vmlinux_debug)], False)]
    with QMPDumpServer(vmcore_qemu_elf, tmp_path / "qmp.sock") as qmp:
        for symbols, scanned in cases:
            prog = open_qmp(qmp.path, symbols=symbols)
            try:
                stats = qmp_read_stats(prog)
                assert stats is not None
                assert prog["VMCOREINFO"].to_bytes_().rstrip(b"\0") == given, symbols
                # the scan reads RAM 32 MiB at a time; the pointer, two chunks
                assert (stats.bytes_fetched >= 32 << 20) == scanned, (symbols, stats)
            finally:
                prog.cache["klpinspect.qmp"].close()


def test_translating_program_for_drgn_opened_kdump(
    programs: dict[str, tuple[drgn.Program, str]],
    vmcore_kdump: Path,
    vmcore_elf: Path,
    vmlinux_debug: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``drgn -c vmcore.kdump``: libkdumpfile cannot read module memory; the
    program :func:`translating_program` builds from it can.  (The drgn
    plugin's program hook, when installed, fixes the program up itself:
    switched off here; tests/test_drgn_commands.py tests it.)"""
    monkeypatch.setenv("KLPINSPECT_NO_PROGRAM_HOOK", "1")
    progs = []
    for core in (vmcore_kdump, vmcore_elf):
        prog = drgn.Program()
        prog.set_core_dump(str(core))
        prog.load_debug_info([str(vmlinux_debug)], main=True)
        progs.append(prog)
    with pytest.raises(drgn.FaultError):
        _module_bytes(progs[0])
    fixed = translating_program(progs[0])
    assert fixed is not progs[0]
    assert _module_bytes(fixed) == _module_bytes(programs["elf"][0])
    assert translating_program(progs[1]) is progs[1]  # reads modules already


def test_find_vmcoreinfo_note_in_raw_memory(vmcore_qemu_elf: Path) -> None:
    with open(vmcore_qemu_elf, "rb") as f:
        head = f.read(0x4000000)  # the note sits at guest physical 0x3780000
    found = find_vmcoreinfo_note(head)
    assert found is not None
    text, order = found
    assert order == "little" and text.startswith(b"OSRELEASE=6.1.192\n")
    # byte-swapped header: the same note of a big-endian guest
    i = head.find(b"VMCOREINFO\0\0OSRELEASE=")
    swapped = bytearray(head[i - 12 : i + 12 + len(text)])
    for k in range(0, 12, 4):
        swapped[k : k + 4] = swapped[k : k + 4][::-1]
    assert find_vmcoreinfo_note(bytes(swapped)) == (text, "big")
    assert find_vmcoreinfo_note(b"\0" * 4096) is None


def test_module_debug_info_from_compressed_ko(
    vmcore_elf: Path, vmlinux_debug: Path, modules_dir: Path, cache_dir: Path
) -> None:
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in modules_dir.glob("*.ko")}
    prog, _ = open_program(
        core=str(vmcore_elf),
        symbols=[str(vmlinux_debug), str(modules_dir)],
        cache_dir=str(cache_dir),
    )
    mod = prog.linux_kernel_loadable_module(find_module(prog, "rk_lp"))
    assert mod.debug_file_status == drgn.ModuleFileStatus.HAVE
    assert Path(mod.debug_file_path).parent == cache_dir
    # DWARF of the module: the type of a static function of rk_lp
    fn = prog.function("livepatch_rk_target_inner")
    assert int(fn.address_) == 0xC008000000F90008
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in modules_dir.glob("*.ko")}
    assert before == after  # the user's files are never modified


def test_decompressed_ko_matches_objcopy(modules_dir: Path, tmp_path: Path) -> None:
    ko = modules_dir / "rk_lp.ko"
    assert has_compressed_sections(ko)
    copy = decompressed_debug_file(ko, tmp_path)
    assert copy != ko and not has_compressed_sections(copy)
    ref = tmp_path / "objcopy.ko"
    subprocess.run(
        ["powerpc64le-linux-gnu-objcopy", "--decompress-debug-sections", str(ko), str(ref)],
        check=True,
    )
    with open(copy, "rb") as a, open(ref, "rb") as b:
        ea, eb = ELFFile(a), ELFFile(b)
        names = [s.name for s in ea.iter_sections()]
        assert names == [s.name for s in eb.iter_sections()]
        for name in names:
            sa, sb = ea.get_section_by_name(name), eb.get_section_by_name(name)
            assert sa is not None and sb is not None
            assert not sa["sh_flags"] & SHF_COMPRESSED
            assert sa.data() == sb.data(), name
    # cached: the same path again, not rewritten
    mtime = copy.stat().st_mtime_ns
    assert decompressed_debug_file(ko, tmp_path) == copy
    assert copy.stat().st_mtime_ns == mtime
    # executables with compressed DWARF load as they are
    assert decompressed_debug_file(modules_dir.parent / "vmlinux.debug", tmp_path) == (
        modules_dir.parent / "vmlinux.debug"
    )


# --- bad input ---------------------------------------------------------------------


def _target_error(**kwargs: object) -> str:
    with pytest.raises(TargetError) as exc:
        open_program(**kwargs)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_missing_core(tmp_path: Path, vmlinux_debug: Path) -> None:
    msg = _target_error(core=str(tmp_path / "nope"), symbols=[str(vmlinux_debug)])
    assert msg.endswith("nope: no such file")


def test_not_a_core(tmp_path: Path, vmlinux: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert "not a vmcore" in _target_error(core=str(text))
    assert "not a core dump" in _target_error(core=str(vmlinux))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert "not a vmcore" in _target_error(core=str(empty))


def _fake_core(
    path: Path, *, machine: int, order: str = "<", load: bytes = b"", vmcoreinfo: bytes = b""
) -> Path:
    """A minimal ELF64 core: one PT_NOTE (optional VMCOREINFO), one PT_LOAD."""
    note = b""
    if vmcoreinfo:
        name = b"VMCOREINFO\0\0"
        desc = vmcoreinfo + bytes(-len(vmcoreinfo) % 4)
        note = struct.pack(order + "III", 11, len(vmcoreinfo), 0) + name + desc
    phoff, phnum = 64, 2
    note_off = phoff + phnum * 56
    load_off = note_off + len(note)
    ehdr = struct.pack(
        order + "16sHHIQQQIHHHHHH",
        b"\x7fELF\x02" + (b"\x01" if order == "<" else b"\x02") + b"\x01" + bytes(9),
        4,  # ET_CORE
        machine,
        1,
        0,
        phoff,
        0,
        0,
        64,
        56,
        phnum,
        64,
        0,
        0,
    )
    phdrs = struct.pack(order + "IIQQQQQQ", 4, 0, note_off, 0, 0, len(note), len(note), 0)
    phdrs += struct.pack(order + "IIQQQQQQ", 1, 7, load_off, 0, 0, len(load), len(load), 0)
    path.write_bytes(ehdr + phdrs + note + load)
    return path


def test_x86_64_core(tmp_path: Path) -> None:
    core = _fake_core(tmp_path / "x86.core", machine=62, load=bytes(4096))
    assert "x86_64 core dump, not ppc64" in _target_error(core=str(core))


def test_qemu_dump_without_vmcoreinfo(tmp_path: Path, vmlinux_debug: Path) -> None:
    # QEMU style: big-endian headers, p_vaddr 0, no note, memory without one
    core = _fake_core(tmp_path / "qemu.core", machine=21, order=">", load=bytes(1 << 20))
    msg = _target_error(core=str(core), symbols=[str(vmlinux_debug)])
    assert msg.endswith(
        "no VMCOREINFO in this ppc64 QEMU dump and none given; pass --vmcoreinfo FILE"
    )


def test_truncated_qemu_dump(tmp_path: Path, lp61: Path) -> None:
    core = _fake_core(tmp_path / "qemu.core", machine=21, order=">", load=bytes(1 << 20))
    data = core.read_bytes()
    core.write_bytes(data[: len(data) - (1 << 19)])  # the second half of RAM is missing
    prog = open_core(core, read_vmcoreinfo_file(lp61 / "vmcoreinfo.txt"))
    assert prog.read(PAGE_OFFSET + 0x1000, 8) == bytes(8)
    assert prog.read(0x2000, 8, True) == bytes(8)
    with pytest.raises(drgn.FaultError, match="truncated"):
        prog.read(PAGE_OFFSET + (1 << 19) + 0x100, 8)


def test_no_debug_info_found(
    vmcore_elf: Path, lp61: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With its BTF and kallsyms the kernel needs no -s (tests/test_btf_dump.py);
    # a VMCOREINFO without kallsyms (before 6.0) leaves neither.
    monkeypatch.setenv("DEBUGINFOD_URLS", "")
    info = tmp_path / "vmcoreinfo"
    lines = (lp61 / "vmcoreinfo.txt").read_text().splitlines()
    info.write_text("".join(ln + "\n" for ln in lines if "kallsyms" not in ln))
    msg = _target_error(core=str(vmcore_elf), vmcoreinfo=str(info))
    assert msg.startswith("no debug info for the kernel 6.1.192 (build ID 080a10f9")
    assert "no kallsyms in its VMCOREINFO" in msg
    assert msg.endswith("pass -s VMLINUX (or its .debug file)")


def test_bad_vmcoreinfo_file(tmp_path: Path, vmcore_qemu_elf: Path) -> None:
    msg = _target_error(core=str(vmcore_qemu_elf), vmcoreinfo=str(tmp_path / "vi"))
    assert msg.endswith("vi: no such file")
    sysfs = tmp_path / "sysfs"
    sysfs.write_text("3780000 10024\n")
    msg = _target_error(core=str(vmcore_qemu_elf), vmcoreinfo=str(sysfs))
    assert "/sys/kernel/vmcoreinfo" in msg
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    assert "no OSRELEASE= line" in _target_error(core=str(vmcore_qemu_elf), vmcoreinfo=str(junk))


def _patch_build_id(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` with every byte of its GNU build ID inverted."""
    shutil.copyfile(src, dst)
    build_id = read_build_id(src)
    assert build_id
    raw = bytes.fromhex(build_id)
    data = bytearray(dst.read_bytes())
    i = data.find(b"GNU\0" + raw)
    assert i > 0
    data[i + 4 : i + 4 + len(raw)] = bytes(b ^ 0xFF for b in raw)
    dst.write_bytes(bytes(data))
    return bytes(b ^ 0xFF for b in raw).hex()


def test_debug_info_of_another_build(
    tmp_path: Path, vmcore_elf: Path, vmlinux_debug: Path
) -> None:
    other = tmp_path / "vmlinux.debug"
    other_id = _patch_build_id(vmlinux_debug, other)
    assert read_build_id(other) == other_id
    msg = _target_error(core=str(vmcore_elf), symbols=[str(other)])
    assert "debug info for another kernel build" in msg and other_id in msg


def test_missing_or_bad_symbol_files(tmp_path: Path, vmcore_elf: Path, vmlinux: Path) -> None:
    assert _target_error(core=str(vmcore_elf), symbols=[str(tmp_path / "x")]).endswith(
        "x: no such file"
    )
    text = tmp_path / "t.ko"
    text.write_text("no elf")
    assert "not an ELF file" in _target_error(core=str(vmcore_elf), symbols=[str(text)])
    # stripped vmlinux: symbols but no DWARF
    msg = _target_error(core=str(vmcore_elf), symbols=[str(vmlinux)])
    assert msg.startswith("no debug info for the kernel 6.1.192")


def test_target_selection_and_live() -> None:
    assert "exactly one target" in _target_error()
    assert "exactly one target" in _target_error(core="x", live=True)
    machine = __import__("platform").machine()
    if not machine.startswith("ppc64"):
        assert f"this machine is {machine}, not ppc64" in _target_error(live=True)
