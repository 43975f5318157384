"""The ``klpinspect`` command and the drgn plugin on the real ppc64le 6.1 and 7.2 dumps.

Expected values are not the tool's own output: they come from each fixture's
README table (what the guest printed from /sys/module/*/sections and
/proc/kallsyms before the dump), its ``facts.txt`` and from the modules'
``.ko`` relocations (tests/fixturefacts.py).  The kdump and raw-QEMU forms
exist for 6.1 only.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import LpFixture, drgn_env, lp_fixture
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str | Path, check_rc: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "klpinspect", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@functools.cache
def _audit(version: str) -> dict[str, Any]:
    lp = lp_fixture(version)
    proc = run_cli("-c", lp.vmcore_elf, "-s", lp.vmlinux_debug, "--format", "json", "audit")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.fixture(scope="module")
def audit_json(lp: LpFixture) -> dict[str, Any]:
    """``klpinspect audit --format json`` on each fixture's vmcore.elf (6.1, 7.2), run once."""
    return _audit(lp.version)


def test_modules_match_sysfs(audit_json: dict[str, Any], lp: LpFixture) -> None:
    table = {r.name: r for r in lp.facts.modules}
    mods = {m["name"]: m for m in audit_json["modules"]}
    assert [m["name"] for m in audit_json["modules"]] == [r.name for r in lp.facts.modules]
    for name, row in table.items():
        m = mods[name]
        assert m["stubs_section"] == hex(row.stubs), name
        assert m["toc"] == hex(row.toc), name
        kinds = [s["kind"] for s in m["stubs"]]
        assert len(kinds) == row.used, name
        assert kinds.count("normal") == row.normal, name
        assert kinds.count("ftrace") == row.ftrace, name
        assert m["tramp"]["address"] == hex(row.tramp), name
        assert m["tramp_regs"]["address"] == hex(row.tramp_regs), name
        # neither fixture kernel has out-of-line ftrace stubs (gcc 12; README)
        assert not m.get("ool_stubs"), name


def test_every_stub_checks_out(audit_json: dict[str, Any], lp: LpFixture) -> None:
    facts = lp.facts
    assert audit_json["target"]["release"] == facts.release
    assert audit_json["kernel"]["toc"] == hex(facts.kernel_toc)
    assert audit_json["kernel"]["ftrace_caller"] == hex(facts.sym("ftrace_caller"))
    for m in audit_json["modules"]:
        for s in m["stubs"]:
            assert s["kind"] in ("normal", "ftrace"), (m["name"], s)
            assert s["magic_ok"] is True
            if s["kind"] == "normal":
                assert s["implied_toc"] == m["toc"]
            else:
                assert s["target_symbol"] in ("_mcount", "ftrace_caller", "ftrace_regs_caller")
                assert int(s["target"], 16) == facts.sym(s["target_symbol"])
        assert m["tramp"]["kind"] == "ftrace"
        assert m["tramp"]["target_symbol"] == "ftrace_caller"
        assert m["tramp_regs"]["target_symbol"] == "ftrace_regs_caller"
    # no findings at all on either kernel, not even warnings
    assert audit_json["findings"] == []


def test_audit_livepatch_frames(audit_json: dict[str, Any], lp: LpFixture) -> None:
    """The parked task's two livepatch frames: the README's frame table."""
    facts = lp.facts
    (task,) = audit_json["tasks"]
    assert (task["pid"], task["comm"]) == (facts.pid, facts.comm)
    assert task["livepatch_sp"] == hex(facts.livepatch_sp)
    assert [(f["address"], f["r2"], f["lr"]) for f in task["frames"]] == [
        (hex(f.at), hex(f.r2), hex(f.lr)) for f in facts.frames
    ]
    assert [f["r2_owner"] for f in task["frames"]] == ["rk_target"] * len(facts.frames)
    assert [f["lr_symbol"].split("/")[0] for f in task["frames"]] == [
        f.lr_symbol for f in facts.frames
    ]
    assert all(f["magic_ok"] for f in task["frames"])


def _rel24_undefined(ko: Path) -> set[str]:
    """Names of undefined symbols that R_PPC64_REL24 relocations call (what needs a stub)."""
    names: set[str] = set()
    with open(ko, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection) or sec.name.startswith(".rela.debug"):
                continue
            for rel in sec.iter_relocations():
                if rel["r_info_type"] != 10:  # R_PPC64_REL24
                    continue
                sym = symtab.get_symbol(rel["r_info_sym"])
                if sym["st_shndx"] == "SHN_UNDEF" and sym.name not in ("_mcount", ".TOC."):
                    names.add(sym.name)
    return names


@pytest.fixture(scope="module")
def vmlinux_symbols(lp: LpFixture) -> dict[str, int]:
    """Function name -> address from the booted vmlinux's own .symtab."""
    out: dict[str, int] = {}
    with open(lp.vmlinux, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]:
                out.setdefault(sym.name, sym["st_value"])
    return out


def test_stub_targets_are_the_ko_relocations(
    audit_json: dict[str, Any], lp: LpFixture, vmlinux_symbols: dict[str, int]
) -> None:
    """Each module's normal stubs reach exactly the functions its .ko calls via REL24."""
    by_file = {p.stem.replace("-", "_"): p for p in lp.modules.glob("*.ko")}
    checked = 0
    for m in audit_json["modules"]:
        # vmlinux functions by address (aliases such as crc32_le/crc32_le_base),
        # other modules' exports by name
        wanted = {vmlinux_symbols.get(n, n) for n in _rel24_undefined(by_file[m["name"]])}
        got = {
            int(s["target"], 16) if s["target_owner"] == "vmlinux" else s["target_symbol"]
            for s in m["stubs"] if s["kind"] == "normal"
        }
        # livepatch modules gain stubs for their klp relocations once applied
        assert wanted <= got, (m["name"], wanted - got)
        if not m["name"].startswith(("livepatch_", "test_klp_livepatch", "rk_lp")):
            assert got == wanted, (m["name"], got ^ wanted)
        checked += 1
    assert checked == len(lp.facts.modules) == len(by_file)


def _modules_summary(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (m["name"], m["toc"], tuple((s["address"], s["kind"], s["target"]) for s in m["stubs"]),
         m["tramp"]["target"], m["tramp_regs"]["target"])
        for m in doc["modules"]
    ]


@pytest.mark.parametrize("form", ["kdump", "qemu-found", "qemu-given"])
def test_other_dump_formats_agree(
    form: str, vmcore_elf: Path, vmcore_kdump: Path, vmcore_qemu_elf: Path,
    vmlinux_debug: Path, lp61: Path,
) -> None:
    """6.1 only (7.2 has no kdump or raw QEMU dump): every form gives vmcore.elf's stubs."""
    audit_json = _audit("6.1")
    if form == "kdump":
        args: list[str | Path] = ["-c", vmcore_kdump]
    elif form == "qemu-found":
        args = ["-c", vmcore_qemu_elf]
    else:
        args = ["-c", vmcore_qemu_elf, "--vmcoreinfo", lp61 / "vmcoreinfo.txt"]
    proc = run_cli(*args, "-s", vmlinux_debug, "--format", "json", "stubs")
    doc = json.loads(proc.stdout)
    assert _modules_summary(doc) == _modules_summary(audit_json)


def test_table_output(lp: LpFixture) -> None:
    proc = run_cli("-c", lp.vmcore_elf, "-s", lp.vmlinux_debug, "stubs", "rk_lib")
    lines = proc.stdout.splitlines()
    stub_lines = [ln for ln in lines if ln.startswith("rk_lib ")]
    assert len(stub_lines) == 4
    assert "msleep" in stub_lines[0] and "normal" in stub_lines[0]
    assert stub_lines[2].rstrip().endswith("tramp")
    assert "no findings" in proc.stdout


@pytest.mark.parametrize("version, core_name", [("6.1", "vmcore_elf"), ("6.1", "vmcore_kdump"),
                                                ("7.2", "vmcore_elf")])
def test_drgn_plugin_commands(version: str, core_name: str) -> None:
    # drgn opens the kdump-compressed dump itself; the plugin must still read modules
    lp = lp_fixture(version)
    core = lp.vmcore_elf if core_name == "vmcore_elf" else lp.file("vmcore.kdump")
    vmlinux_debug = lp.vmlinux_debug
    code = (
        "from drgn.commands import run_command\n"
        "run_command(prog, 'klp-stubs rk_lib')\n"
        "run_command(prog, 'klp-toc --format json rk_target')\n"
        "import sys\n"
        "run_command(prog, 'klp-toc xfz', onerror=lambda e: print(e, file=sys.stderr))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "-q", "-c", str(core), "-s", str(vmlinux_debug),
         "-e", code],
        capture_output=True, text=True, timeout=300, check=False,
        env=drgn_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "msleep" in proc.stdout
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert doc["modules"][0]["toc"] == hex(lp.facts.module("rk_target").toc)
    assert "klp-toc: no module named 'xfz'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["-c", "/nonexistent/vmcore", "stubs"], "/nonexistent/vmcore"),
        (["stubs"], "no target"),
        (["-c", "{readme}", "stubs"], "README.md"),
        (["-c", "{core}", "-s", "{debug}", "stubs", "xfz"], "no module named 'xfz'"),
        (["-c", "{core}", "-s", "{debug}", "bt", "999999"], "999999"),
        (["-c", "{core}", "--live", "stubs"], "only one"),
        (["-c", "{core}", "frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_one_line_exit_2(
    args: list[str], message: str, vmcore_elf: Path, vmlinux_debug: Path, lp61: Path
) -> None:
    subst = {"readme": str(lp61 / "README.md"), "core": str(vmcore_elf),
             "debug": str(vmlinux_debug)}
    proc = run_cli(*[a.format(**subst) for a in args], check_rc=2)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("klpinspect")
    assert message in err[0]


def test_damaged_dump_is_findings_not_a_crash(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    """A dump cut short after the kernel's own data: the module and task lists
    cannot be walked, which the audit reports and survives."""
    cut = tmp_path / "cut.core"
    with open(vmcore_elf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(64 << 20))
    proc = run_cli("-c", cut, "-s", vmlinux_debug, "--format", "json", "audit")
    doc = json.loads(proc.stdout)
    messages = [f["message"] for f in doc["findings"] if f["code"] == "MEMORY_UNREADABLE"]
    assert any("modules list broken" in m for m in messages), messages
    assert any("task list broken" in m for m in messages), messages
    assert any("core file truncated: 67,108,864 of the" in m for m in messages), messages
    assert all(f["severity"] == "warning" for f in doc["findings"])


def test_truncated_before_kernel_data_is_one_line(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.core"
    with open(vmcore_elf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(1 << 20))
    proc = run_cli("-c", cut, "-s", vmlinux_debug, "audit", check_rc=2)
    assert proc.stderr.count("\n") == 1
    assert "truncated" in proc.stderr


def test_wrong_vmcoreinfo_is_one_line(
    vmcore_qemu_elf: Path, vmlinux_debug: Path, lp61: Path, tmp_path: Path
) -> None:
    """A VMCOREINFO with another KERNELOFFSET reads wrong memory wherever the
    vmlinux's own addresses are used (ftrace's ``.symtab``, bt's DWARF): say so.
    Commands that name symbols from kallsyms, whose VMCOREINFO addresses are
    absolute, answer as with the right one."""
    info = tmp_path / "vmcoreinfo.txt"
    info.write_text(
        (lp61 / "vmcoreinfo.txt").read_text().replace("KERNELOFFSET=0", "KERNELOFFSET=1000000")
    )
    for command in (["ftrace"], ["bt", "130"]):
        proc = run_cli("-c", vmcore_qemu_elf, "--vmcoreinfo", info, "-s", vmlinux_debug,
                       *command, check_rc=2)
        assert proc.stderr.count("\n") == 1 and "VMCOREINFO" in proc.stderr, command
    stubs = [run_cli("-c", vmcore_qemu_elf, "--vmcoreinfo", vmcoreinfo, "-s", vmlinux_debug,
                     "stubs").stdout for vmcoreinfo in (info, lp61 / "vmcoreinfo.txt")]
    assert stubs[0] == stubs[1] and "rk_lib" in stubs[0]


def test_socket_and_duplicate_names(vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        proc = run_cli("-c", path, "stubs", check_rc=2)
    assert "use --qemu" in proc.stderr
    proc = run_cli("-c", vmcore_elf, "-s", vmlinux_debug, "--format", "json", "stubs",
                   "rk_lib", "rk-lib")
    assert [m["name"] for m in json.loads(proc.stdout)["modules"]] == ["rk_lib"]
