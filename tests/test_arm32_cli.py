"""``klpinspect prologue``: the summary, --list, JSON and bad files, on assembled vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from arm32util import assemble, link

from klpinspect.cli import main

REPO = Path(__file__).resolve().parent.parent
VECTORS = "arm32_prologues.s"
CLASSES = ["apcs-frame", "apcs-frame-extra", "unwind-tables", "thumb2", "no-mcount"]


@pytest.fixture(scope="module")
def objs() -> tuple[Path, Path]:
    return assemble(VECTORS), link([assemble(VECTORS, defsyms=["LINKED=1"])])


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_summary(objs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rel, exe = objs
    status, out, err = _run(["prologue", str(rel), str(exe)], capsys)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["file", "functions", "traced"]
    assert lines[0].split()[3:] == CLASSES
    rows = {ln.split()[0]: ln for ln in lines[2:5]}
    # the object: 20 functions (one alias pair), 17 call __gnu_mcount_nc
    assert rows[rel.stem].split()[1:3] == ["20", "17"]
    assert "4 (23.5%)" in rows[rel.stem]  # apcs-frame: 4 of 17 traced
    assert "9 (52.9%)" in rows[rel.stem]  # apcs-frame-extra
    assert "3 (15.0%)" in rows[rel.stem]  # no-mcount: 3 of all 20
    assert rows[exe.name].split()[1:3] == ["21", "17"]  # + __gnu_mcount_nc itself
    assert rows["total"].split()[1:5] == ["(2", "files)", "41", "34"]
    assert "first deviation" in out and "argument-spill" in out
    assert "extra_vpush" not in out  # no list without --list
    assert f"note: {rel.stem}: 1 call(s) to __gnu_mcount_nc outside every function" in out


def test_list(objs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rel, _exe = objs
    status, out, _err = _run(["prologue", "--list", str(rel)], capsys)
    assert status == 0
    listed = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith(rel.stem + " ")}
    assert "notrace_frame" not in listed and "thumb_notrace" not in listed  # counted only
    assert "vpush at +0xc: vpush {d8, d9}" in listed["extra_vpush"]
    assert ".text+0x" in listed["extra_vpush"] and "apcs-frame-extra" in listed["extra_vpush"]
    assert "push {r4-r9, sl, fp, ip, lr, pc}, 100 bytes of locals" in listed["apcs_locals"]
    assert "no APCS frame: push {r4, r5, lr}" in listed["unwind_push"]
    assert "thumb2" in listed["thumb_traced"]


def test_json(objs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rel, exe = objs
    status, out, _err = _run(["--format", "json", "prologue", "--list", str(rel), str(exe)],
                             capsys)
    assert status == 0
    doc = json.loads(out)
    assert doc["schema"] == "klpinspect/1" and doc["findings"] == []
    pro = doc["prologues"]
    assert pro["classes"] == CLASSES and pro["errors"] == []
    f_rel, f_exe = pro["files"]
    assert f_rel["kind"] == "module" and f_exe["kind"] == "vmlinux"
    assert sum(f_rel["counts"].values()) == f_rel["functions"] == 20
    assert pro["total"]["counts"]["apcs-frame-extra"] == 18
    assert f_rel["deviations"]["argument-spill"] == 2
    assert f_rel["orphan_calls"] == f_exe["orphan_calls"] == 1
    by_name = {e["name"]: e for e in f_exe["list"]}
    vp = by_name["extra_vpush"]
    assert vp["class"] == "apcs-frame-extra" and vp["offender"]["deviation"] == "vpush"
    assert int(vp["offender"]["address"], 16) == int(vp["address"], 16) + 12
    assert by_name["apcs_rotated"]["locals"] == 0x10400
    assert by_name["apcs_rotated"]["regs"] == "{r4, fp, ip, lr, pc}"
    assert all(e["class"] != "no-mcount" for e in f_exe["list"])
    # without --list: counts only; the subcommand's own --format works too
    status, out, _err = _run(["prologue", "--format", "json", str(rel)], capsys)
    assert "list" not in json.loads(out)["prologues"]["files"][0]


def _bad_files(tmp: Path, rel: Path) -> dict[str, Path]:
    data = rel.read_bytes()
    files = {
        "not ELF": tmp / "text.ko",
        "wrong arch": Path(sys.executable).resolve(),
        "truncated": tmp / "cut.ko",
        "short": tmp / "short.ko",
    }
    files["not ELF"].write_text("hello\n")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["short"].write_bytes(data[:10])
    return files


def test_bad_files(objs: tuple[Path, Path], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    rel, _exe = objs
    for what, path in _bad_files(tmp_path, rel).items():
        status, out, err = _run(["prologue", str(path)], capsys)
        assert status == 2, what
        assert out == "", what
        assert len(err.splitlines()) == 1 and err.startswith(f"klpinspect: {path}: "), err
        assert "Traceback" not in err
    # a bad file among good ones: the good ones are still reported, the status is 2
    status, out, err = _run(["prologue", str(tmp_path / "text.ko"), str(rel)], capsys)
    assert status == 2 and rel.stem in out and "not an ELF file" in err
    status, out, err = _run(["prologue", str(tmp_path / "missing.ko")], capsys)
    assert status == 2 and "cannot read" in err


def test_bad_file_messages(objs: tuple[Path, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    rel, _exe = objs
    files = _bad_files(tmp_path, rel)
    _s, _o, err = _run(["prologue", str(files["wrong arch"])], capsys)
    assert "not a 32-bit little-endian ARM ELF file" in err
    _s, _o, err = _run(["prologue", str(files["truncated"])], capsys)
    assert "truncated" in err
    _s, _o, err = _run(["prologue", str(files["short"])], capsys)
    assert "truncated" in err


def test_help_does_not_import_drgn() -> None:
    code = ("import sys\nfrom klpinspect.cli import main\n"
            "try:\n    main(['prologue', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('DRGN' if any(m.split('.')[0] == 'drgn' for m in sys.modules) else 'NO')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert "--list" in proc.stdout
    assert proc.stdout.strip().endswith("NO")


def test_no_files_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _out, err = _run(["prologue"], capsys)
    assert status == 2 and "FILE" in err
