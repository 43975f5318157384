"""Offline ``.ko`` lint on real objects.

* the fixture kernel's 40 modules, livepatch modules included, which loaded
  fine on the real 6.1 kernel: no error finding;
* objects built here with the Debian cross compilers and assemblers from
  ``tests/ko/``: gcc output as kernel modules are built, turned into a
  livepatch object the way kpatch does it (symbol renamed to
  ``.klp.sym.<obj>.<name>,<pos>`` with ``SHN_LIVEPATCH``, relocation section
  renamed to ``.klp.rela.<obj>.<sec>`` with ``SHF_RELA_LIVEPATCH``), and
  hand-written ELFv2/ELFv1 code with each bad pattern;
* bad input: one line per file, the others still linted.

Needs ``gcc-powerpc64le-linux-gnu``, ``gcc-powerpc64-linux-gnu`` and both
binutils; a missing tool fails the test.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from asmutil import assemble, tool
from elftools.elf.elffile import ELFFile

from klpinspect.ko import lint_files, lint_ko, parse_klp_sym
from klpinspect.ppc64.insn import NOP
from klpinspect.report import Finding, Severity, render

KO_SRC = Path(__file__).resolve().parent / "ko"
# How kbuild compiles a ppc64le module (arch/powerpc/Makefile, CC_FLAGS_FTRACE),
# plus kpatch's -ffunction-sections.
KERNEL_CFLAGS = [
    "-O2",
    "-mcmodel=medium",
    "-fno-common",
    "-mno-pointers-to-nested-functions",
    "-ffunction-sections",
]
SHN_LIVEPATCH = 0xFF20
SHF_RELA_LIVEPATCH = 0x00100000


def _gcc(byteorder: str) -> str:
    exe = {"little": "powerpc64le-linux-gnu-gcc", "big": "powerpc64-linux-gnu-gcc"}[byteorder]
    path = shutil.which(exe)
    if path is None:
        pkg = {"little": "gcc-powerpc64le-linux-gnu", "big": "gcc-powerpc64-linux-gnu"}
        pytest.fail(f"{exe} not found: apt-get install {pkg[byteorder]}", pytrace=False)
    return path


def compile_c(src: Path, out: Path, byteorder: str = "little") -> Path:
    ftrace = ["-pg", "-mprofile-kernel"] if byteorder == "little" else ["-pg"]
    cmd = [_gcc(byteorder), "-c", *KERNEL_CFLAGS, *ftrace, "-o", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"compiling {src.name} failed:\n{proc.stderr}", pytrace=False)
    return out


def klp_convert(
    src: Path,
    dst: Path,
    *,
    symbols: dict[str, str],
    rela_sections: dict[str, str] | None = None,
) -> Path:
    """Make a livepatch object out of ``src`` the way kpatch's create-klp-module does.

    Each symbol in ``symbols`` is renamed (objcopy) and becomes ``SHN_LIVEPATCH``
    with value and size 0, keeping its binding; each relocation section in
    ``rela_sections`` gets its new name and ``SHF_RELA_LIVEPATCH``.
    """
    cmd = [tool("objcopy")]
    for old, new in symbols.items():
        cmd += ["--redefine-sym", f"{old}={new}"]
    subprocess.run([*cmd, str(src), str(dst)], check=True, capture_output=True)
    data = bytearray(dst.read_bytes())
    with open(dst, "rb") as f:
        elf = ELFFile(f)
        e = "<" if elf.little_endian else ">"
        symtab = elf.get_section_by_name(".symtab")
        symoff = symtab["sh_offset"]
        wanted = set(symbols.values())
        for i, sym in enumerate(symtab.iter_symbols()):
            if sym.name in wanted:
                # st_shndx at +6, st_value at +8, st_size at +16 of Elf64_Sym
                struct.pack_into(e + "HQQ", data, symoff + 24 * i + 6, SHN_LIVEPATCH, 0, 0)
        shoff = elf.header["e_shoff"]
        shstrndx = elf.header["e_shstrndx"]
        names = {s.name: i for i, s in enumerate(elf.iter_sections())}
        shstr = elf.get_section(shstrndx).data()
    if rela_sections:
        new_shstr = bytearray(shstr)
        for old, new in rela_sections.items():
            idx = names[old]
            name_off = len(new_shstr)
            new_shstr += new.encode() + b"\0"
            hdr = shoff + 64 * idx
            (flags,) = struct.unpack_from(e + "Q", data, hdr + 8)
            struct.pack_into(e + "I", data, hdr, name_off)
            struct.pack_into(e + "Q", data, hdr + 8, flags | SHF_RELA_LIVEPATCH)
        # The grown .shstrtab goes at the end of the file.
        while len(data) % 8:
            data.append(0)
        hdr = shoff + 64 * shstrndx
        struct.pack_into(e + "QQ", data, hdr + 24, len(data), len(new_shstr))
        data += new_shstr
    dst.write_bytes(bytes(data))
    return dst


def _by_site(findings: list[Finding]) -> dict[tuple[str | None, str | None], set[str]]:
    out: dict[tuple[str | None, str | None], set[str]] = {}
    for f in findings:
        out.setdefault((f.section, f.symbol), set()).add(f.code)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ko")
    out = {
        "calls_le": compile_c(KO_SRC / "calls.c", d / "calls_le.o"),
        "calls_be": compile_c(KO_SRC / "calls.c", d / "calls_be.o", "big"),
        "v2": assemble(KO_SRC / "calls_elfv2.s").obj,
        "v1": assemble(KO_SRC / "calls_elfv1.s", byteorder="big").obj,
    }
    out["klp"] = klp_convert(
        out["calls_le"],
        d / "livepatch-meminfo.ko",
        symbols={"show_val_kb": ".klp.sym.vmlinux.show_val_kb,0"},
        rela_sections={
            ".rela.text.meminfo_proc_show": ".klp.rela.vmlinux..text.meminfo_proc_show",
        },
    )
    out["klp_global"] = klp_convert(
        out["calls_le"],
        d / "klp-global.ko",
        symbols={
            "ext_other": ".klp.sym.vmlinux.ext_other,0",
            "ext_func": ".klp.sym.vmlinux.ext_func,2",
        },
    )
    return out


def test_fixture_modules_have_no_error(modules_dir: Path) -> None:
    paths = sorted(str(p) for p in modules_dir.glob("*.ko"))
    assert len(paths) == 40
    report, status = lint_files(paths)
    assert status == 0
    assert [f for f in report.findings if f.level is Severity.ERROR] == []
    assert report.notes == ["40 of 40 files linted"]


@pytest.mark.parametrize(
    "name",
    ["rk_lp", "livepatch-sample", "livepatch-shadow-fix1", "test_klp_livepatch"],
)
def test_fixture_livepatch_modules_clean(modules_dir: Path, name: str) -> None:
    assert lint_ko(str(modules_dir / f"{name}.ko")) == []


def test_mutated_fixture_call_needs_nop(modules_dir: Path, tmp_path: Path) -> None:
    """rk_lp's "bl rk_lib_sleep; nop" with the nop swapped for the next real word."""
    src = modules_dir / "rk_lp.ko"
    data = bytearray(src.read_bytes())
    with open(src, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        base = text["sh_offset"]
        words = text.data()
    assert struct.unpack_from("<I", words, 0x4C)[0] == NOP
    data[base + 0x4C : base + 0x50], data[base + 0x50 : base + 0x54] = (
        data[base + 0x50 : base + 0x54],
        data[base + 0x4C : base + 0x50],
    )
    bad = tmp_path / "rk_lp.ko"
    bad.write_bytes(bytes(data))
    (f,) = lint_ko(str(bad))
    assert f.code == "KO_CALL_NEEDS_NOP"
    assert (f.module, f.section, f.address) == ("rk_lp", ".text", 0x48)
    assert f.symbol == "livepatch_rk_target_inner+0x40"
    assert "rk_lib_sleep" in f.message
    assert f.file == str(bad)


def test_compressed_module(modules_dir: Path, tmp_path: Path) -> None:
    xz = tmp_path / "rk_lp.ko.xz"
    xz.write_bytes(lzma.compress((modules_dir / "rk_lp.ko").read_bytes()))
    assert lint_ko(str(xz)) == []


def test_gcc_module_code_is_clean(built: dict[str, Path]) -> None:
    """As compiled (before klp conversion) the kernel would load both objects."""
    assert lint_ko(str(built["calls_le"])) == []
    assert lint_ko(str(built["calls_be"])) == []


def test_livepatch_local_call_becomes_global(built: dict[str, Path]) -> None:
    """The seed case: meminfo_proc_show calling the static show_val_kb, livepatched."""
    findings = lint_ko(str(built["klp"]))
    sites = _by_site(findings)
    rela = ".text.meminfo_proc_show"
    assert sites == {
        (rela, "meminfo_proc_show+0x24"): {"KO_CALL_NEEDS_NOP", "KO_LOCAL_CALL_BECOMES_GLOBAL"},
        (rela, "meminfo_proc_show+0x38"): {"KO_CALL_NEEDS_NOP", "KO_LOCAL_CALL_BECOMES_GLOBAL"},
        (".text.tail_local", "tail_local+0x18"): {
            "KO_SIBLING_CALL",
            "KO_LOCAL_CALL_BECOMES_GLOBAL",
        },
    }
    local = [f for f in findings if f.code == "KO_LOCAL_CALL_BECOMES_GLOBAL"]
    assert all("vmlinux:show_val_kb,0" in f.message for f in local)
    assert all(f.level is Severity.WARNING for f in local)
    assert all(f.module == "livepatch_meminfo" for f in findings)
    report, status = lint_files([str(built["klp"])])
    assert status == 1
    assert "KO_CALL_NEEDS_NOP" in render(report, "table")


def test_livepatch_global_symbols(built: dict[str, Path]) -> None:
    """klp relocations to globals called with "bl; nop": fine; sympos 2 proves a static."""
    findings = lint_ko(str(built["klp_global"]))
    assert {f.code for f in findings} == {"KO_LOCAL_CALL_BECOMES_GLOBAL"}
    assert sorted(f.symbol or "" for f in findings) == ["good_call+0x1c", "sibling_call+0x1c"]
    assert all("sympos 2" in f.message for f in findings)


def test_handwritten_elfv2(built: dict[str, Path]) -> None:
    findings = lint_ko(str(built["v2"]))
    got = {(f.symbol, f.code) for f in findings}
    assert got == {
        ("asm_tail+0x14", "KO_SIBLING_CALL"),
        ("asm_calls+0x24", "KO_CALL_NEEDS_NOP"),
        ("asm_calls+0x2c", "KO_CALL_NEEDS_NOP"),
        ("asm_last+0x0", "KO_CALL_NEEDS_NOP"),
    }
    assert all(f.section == ".text" for f in findings)
    assert {f.address for f in findings} == {0x14, 0x3C, 0x44, 0x78}


def test_handwritten_elfv1_big_endian(built: dict[str, Path]) -> None:
    findings = lint_ko(str(built["v1"]))
    got = {(f.symbol, f.code) for f in findings}
    assert got == {
        ("v1_calls+0x24", "KO_CALL_NEEDS_NOP"),
        ("v1_calls+0x2c", "KO_CALL_NEEDS_NOP"),
        ("v1_calls+0x40", "KO_SIBLING_CALL"),
    }
    sib = next(f for f in findings if f.code == "KO_SIBLING_CALL")
    assert "std r2,40(r1)" in sib.message
    # restore_r2() accepts sibling calls deliberately: a warning that names the fix
    assert sib.level is Severity.WARNING
    assert '__attribute__((optimize("-fno-optimize-sibling-calls")))' in sib.message


def test_parse_klp_sym() -> None:
    k = parse_klp_sym(".klp.sym.vmlinux.show_val_kb.constprop.0,3")
    assert k is not None
    assert (k.objname, k.name, k.sympos) == ("vmlinux", "show_val_kb.constprop.0", 3)
    assert parse_klp_sym("show_val_kb") is None
    assert parse_klp_sym(".klp.sym.vmlinux.x") is None


def test_bad_input_one_line_each(built: dict[str, Path], tmp_path: Path) -> None:
    good = str(built["v2"])
    text = tmp_path / "notes.txt"
    text.write_text("not an object\n")
    truncated = tmp_path / "truncated.ko"
    truncated.write_bytes(Path(good).read_bytes()[:400])
    x86 = shutil.which("ls") or "/bin/ls"
    norel = assemble(KO_SRC / "norelocs.s").obj
    paths = [str(text), str(truncated), x86, good, str(norel), str(tmp_path / "missing.ko")]
    report, status = lint_files(paths)
    assert status == 1  # v2 has errors
    by_file: dict[str | None, list[Finding]] = {}
    for f in report.findings:
        by_file.setdefault(f.file, []).append(f)
    for bad in (str(text), str(truncated), x86, str(tmp_path / "missing.ko")):
        (f,) = by_file[bad]
        assert f.code == "KO_UNREADABLE"
        assert "\n" not in f.message
    assert "not an ELF" in by_file[str(text)][0].message
    assert "ppc64" in by_file[x86][0].message
    ((f,)) = by_file[str(norel)]
    assert (f.code, f.level) == ("KO_NO_RELOCATIONS", Severity.INFO)
    assert len(by_file[good]) == 4

    only_bad = [str(text), str(truncated), x86]
    report, status = lint_files(only_bad)
    assert status == 2
    assert len(report.findings) == 3
    report, status = lint_files([str(norel), str(text)])
    assert status == 0


def test_truncated_everywhere_never_raises(modules_dir: Path, tmp_path: Path) -> None:
    """Cut a real module at many lengths: always findings, never an exception."""
    data = (modules_dir / "rk_lp.ko").read_bytes()
    path = tmp_path / "cut.ko"
    for cut in list(range(0, 128, 7)) + list(range(128, len(data), len(data) // 40)):
        path.write_bytes(data[:cut])
        findings = lint_ko(str(path))
        assert all(f.code in ("KO_UNREADABLE", "KO_NO_RELOCATIONS") for f in findings), cut


def test_json_fields(built: dict[str, Path]) -> None:
    report, _ = lint_files([str(built["v1"])])
    out = report.to_json()
    f = out["findings"][0]
    assert f["address"].startswith("0x") and f["section"] == ".text"
    assert f["file"] == str(built["v1"]) and f["symbol"].startswith("v1_calls+")


def test_corrupted_bytes_never_raise(built: dict[str, Path], tmp_path: Path) -> None:
    """Random byte damage anywhere in an object: findings, never an exception."""
    import random

    rng = random.Random(7)
    for key in ("v2", "v1", "klp"):
        data = built[key].read_bytes()
        path = tmp_path / f"{key}.ko"
        for _ in range(150):
            bad = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            path.write_bytes(bytes(bad))
            assert isinstance(lint_ko(str(path)), list)
