"""The gdb front end, run in a real ``gdb-multiarch`` (batch mode) on the fixture dumps.

gdb reads each fixture's ``vmcore.elf`` (6.1 and 7.2) with its ``vmlinux.debug`` (zstd debug
sections: gdb 13 reads them), module memory through the radix page-table
walker, and must print what the drgn back end prints for the same dump:
same modules, slots, kinds, targets, TOCs, livepatch frames and corrected
backtrace.  Bad input ends in a one-line ``gdb.GdbError``, never a Python
traceback or a gdb crash.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import LpFixture, lp_fixture
from golden import cut_memory as _truncated_copy
from labload import load_lab

from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.commands import run_command

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent
# what `klpinspect --gdb-script` names: the loader installed with the package
SCRIPT = REPO / "klpinspect" / "backends" / "gdb" / "load.py"
SHIM = REPO / "gdb" / "klpinspect.py"  # the older `source gdb/klpinspect.py`
GDB = "gdb-multiarch"
PPC64 = ("-ex", "set architecture powerpc:common64")



def commands(pid: int) -> dict[str, list[str]]:
    """name -> klpinspect subcommand argv; ``bt`` of the fixture's parked task *pid*."""
    return {
        "stubs": ["stubs"],
        "toc": ["toc", "--callsites"],
        "audit": ["audit"],
        "lpstack": ["lpstack"],
        "bt": ["bt", str(pid)],
        "ftrace": ["ftrace"],
    }


COMMANDS = commands(130)  # the 6.1 fixture's parked task


def gdb_binary() -> str:
    path = shutil.which(GDB)
    if path is None:
        pytest.fail(f"{GDB} is not installed (Debian: apt-get install gdb-multiarch)")
    return path


def run_gdb(
    *args: str, timeout: float = 300, pythonpath: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run gdb in batch mode with no init files; gdb's Python sees no virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [gdb_binary(), "-batch", "-nx", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    """gdb survived and printed no Python traceback."""
    assert proc.returncode >= 0, f"gdb died by signal {-proc.returncode}"
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream, stream
        assert "Python Exception" not in stream, stream


def vmcore_args(core: Path, symbols: Path) -> list[str]:
    return [*PPC64, "-ex", f"file {symbols}", "-ex", f"core-file {core}"]


def gdb_core_json(
    core: Path, symbols: Path, out: Path, names: Sequence[str] = tuple(COMMANDS), pid: int = 130
) -> dict[str, Any]:
    """The JSON of the ``commands(pid)`` *names* from one gdb session on *core*."""
    args = [*vmcore_args(core, symbols), "-ex", f"source {SCRIPT}"]
    for name in names:
        argv = commands(pid)[name]
        line = " ".join(["klp-" + argv[0], *argv[1:], "--format", "json"])
        args += ["-ex", f"pipe {line} | cat > {out / name}.json"]
    proc = run_gdb(*args)
    assert_clean(proc)
    results = {}
    for name in names:
        path = out / f"{name}.json"
        assert path.exists() and path.stat().st_size, proc.stderr
        results[name] = json.loads(path.read_text())
    return results


_GDB_JSON: dict[str, dict[str, Any]] = {}


def _gdb_json(version: str, tmp: pytest.TempPathFactory) -> dict[str, Any]:
    """One gdb session per fixture for the whole module."""
    if version not in _GDB_JSON:
        lp = lp_fixture(version)
        out = tmp.mktemp(f"gdb{version}")
        _GDB_JSON[version] = gdb_core_json(lp.vmcore_elf, lp.vmlinux_debug, out, pid=lp.facts.pid)
    return _GDB_JSON[version]


@functools.cache
def _drgn_json(version: str) -> dict[str, Any]:
    lp = lp_fixture(version)
    prog, kind = open_program(core=str(lp.vmcore_elf), symbols=[str(lp.vmlinux_debug)])
    target = DrgnTarget(prog, kind)
    results = {}
    for name, argv in commands(lp.facts.pid).items():
        text, _status = run_command(target, argv[0], [*argv[1:], "--format", "json"])
        results[name] = json.loads(text)
    return results


@pytest.fixture(scope="module")
def gdb_json(lp: LpFixture, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every command's JSON from one gdb session on each fixture's vmcore.elf (6.1, 7.2)."""
    return _gdb_json(lp.version, tmp_path_factory)


@pytest.fixture(scope="module")
def drgn_json(lp: LpFixture) -> dict[str, Any]:
    """The same commands through the drgn back end, in process."""
    return _drgn_json(lp.version)


@pytest.fixture(scope="module")
def gdb_json61(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _gdb_json("6.1", tmp_path_factory)


@pytest.fixture(scope="module")
def drgn_json61() -> dict[str, Any]:
    return _drgn_json("6.1")


def _without_kind(report: dict[str, Any]) -> dict[str, Any]:
    report = dict(report)
    report["target"] = {k: v for k, v in report["target"].items() if k != "kind"}
    return report


@pytest.mark.parametrize("name", ["stubs", "toc", "audit", "lpstack", "ftrace"])
def test_vmcore_same_as_drgn(
    gdb_json: dict[str, Any], drgn_json: dict[str, Any], name: str
) -> None:
    ours, theirs = gdb_json[name], drgn_json[name]
    assert ours["target"]["kind"] == "gdb"
    assert _without_kind(ours) == _without_kind(theirs)


def test_qemu_raw_dump_same_as_fixed_up(
    gdb_json61: dict[str, Any],
    vmcore_elf: Path,
    vmcore_qemu_elf: Path,
    vmlinux_debug: Path,
    tmp_path: Path,
) -> None:
    """QEMU's own dump (big-endian headers, PT_LOAD at physical 0, no VMCOREINFO).

    drgn cannot open it; in gdb the linear map is read at ``vaddr - PAGE_OFFSET``
    (gdb itself would read zeros from vmlinux.debug's NOBITS .data there).
    """
    out = tmp_path / "audit.json"
    # first the fixed-up dump in the same session: the target must not be reused
    proc = run_gdb(*vmcore_args(vmcore_elf, vmlinux_debug), "-ex", f"source {SCRIPT}",
                   "-ex", "klp-toc rk_lib", "-ex", f"core-file {vmcore_qemu_elf}",
                   "-ex", f"pipe klp-audit --format json | cat > {out}")  # fmt: skip
    assert_clean(proc)
    assert out.stat().st_size, proc.stderr
    assert json.loads(out.read_text()) == gdb_json61["audit"]


def test_vmcore_facts(gdb_json: dict[str, Any], lp: LpFixture) -> None:
    """Checks against the fixture README and facts.txt (what the guest itself printed)."""
    facts = lp.facts
    report = gdb_json["audit"]
    assert report["target"]["release"] == facts.release
    assert report["kernel"]["toc"] == hex(facts.kernel_toc)
    mods = {m["name"]: m for m in report["modules"]}
    assert list(mods) == [r.name for r in facts.modules]
    assert sum(len(m["stubs"]) for m in mods.values()) == facts.totals[0]
    for row in facts.modules:
        m = mods[row.name]
        assert (m["stubs_section"], m["toc"]) == (hex(row.stubs), hex(row.toc)), row.name
        kinds = [s["kind"] for s in m["stubs"]]
        assert (kinds.count("normal"), kinds.count("ftrace")) == (row.normal, row.ftrace)
        assert (m["tramp"]["address"], m["tramp_regs"]["address"]) == (
            hex(row.tramp), hex(row.tramp_regs))
        assert m["tramp"]["target_symbol"] == "ftrace_caller"
        assert m["tramp_regs"]["target_symbol"] == "ftrace_regs_caller"
        assert not m.get("ool_stubs"), row.name  # gcc 12: no out-of-line ftrace stubs
    rk_lib = mods["rk_lib"]
    assert [s["kind"] for s in rk_lib["stubs"]] == ["normal", "ftrace", "ftrace", "ftrace"]
    assert rk_lib["stubs"][0]["target_symbol"] == "msleep"
    (task,) = report["tasks"]
    assert (task["pid"], task["comm"]) == (facts.pid, facts.comm)
    assert [f["lr"] for f in task["frames"]] == [hex(f.lr) for f in facts.frames]
    assert [f["r2_owner"] for f in task["frames"]] == ["rk_target", "rk_target"]
    assert report["findings"] == []


def _frames(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    (task,) = report["tasks"]
    out = []
    for e in task["backtrace"]:
        out.append(
            (e["pc"], e["symbol"], e["corrected"], e["from_frame"], e.get("original_symbol"))
        )
    return out


def test_bt_same_as_drgn(
    gdb_json: dict[str, Any], drgn_json: dict[str, Any], lp: LpFixture
) -> None:
    """gdb's back-chain unwind plus DWARF inline blocks gives drgn's backtrace exactly."""
    facts = lp.facts
    ours, theirs = gdb_json["bt"], drgn_json["bt"]
    assert _without_kind(ours) == _without_kind(theirs)
    symbols = [f[1] for f in _frames(ours)]
    # the README's /proc/PID/stack (name+offset; sizes there are kallsyms', here ELF's),
    # with the two livepatch_handler returns corrected to the frame table's callers
    proc = [line.split("/")[0] for line in facts.proc_stack if "+" in line]
    assert symbols[0].startswith(proc[0] + "/")  # __switch_to+0x280 (7.2: +0x2a0)
    assert any(s.startswith("context_switch (inlined in __schedule+") for s in symbols)
    assert any(s.startswith(facts.frames[1].lr_symbol + "/") and s.endswith(" [rk_lp]")
               for s in symbols)
    assert any(s.startswith(facts.frames[0].lr_symbol + "/") and s.endswith(" [rk_target]")
               for s in symbols)
    assert not any(s.startswith("livepatch_handler") for s in symbols)
    assert symbols[-1].startswith(proc[-1] + "/")  # ret_from_kernel_thread (7.2: start_...)


def test_table_output_help_and_bad_arguments(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    proc = run_gdb(
        *vmcore_args(vmcore_elf, vmlinux_debug),
        "-ex", f"source {SHIM}",
        "-ex", "help klp-stubs",
        "-ex", "klp-stubs rk_lib",
        "-ex", "klp-stubs nosuch",
        "-ex", "klp-bt",
        "-ex", "klp-bt pid",
        "-ex", "klp-bt 99999",
        "-ex", "klp-toc --bogus",
        "-ex", "klp-audit --format xml",
        "-ex", "klp-lpstack 130",
        "-ex", "klp-stubs --help",
        "-ex", "help klp-ftrace",
        "-ex", "klp-ftrace nosuch",
        "-ex", "klp-ftrace rk_lib",
        "-ex", "python import sys; print('drgn imported:', 'drgn' in sys.modules)",
    )  # fmt: skip
    assert_clean(proc)
    out, err = proc.stdout, proc.stderr
    assert "Decode every used .stubs slot" in out
    # help generated from the argument specs, not copied by hand
    assert "usage: klp-stubs [-h] [--format {table,json}] [MODULE ...]" in out
    assert "0xc008000000ef0068  normal  0xc0000000001931c0  msleep" in out
    assert "klp-stubs: no module named 'nosuch'" in err
    # the dump records no panic: klp-bt without a task says so
    assert ("klp-bt: no crashed task in this target (panic_cpu is not set): give a PID or "
            "task address") in err
    assert "klp-bt: argument PID|TASK: not a pid or task address: 'pid'" in err
    assert "klp-bt: no task with pid 99999" in err
    assert "klp-toc: unrecognized arguments: --bogus" in err
    assert "klp-audit: argument --format: invalid choice: 'xml'" in err
    assert "rk_target" in out and "livepatch_rk_target_work+0x30/0x58 [rk_lp]" in out
    assert "usage: klp-ftrace [-h] [--format {table,json}] [MODULE ...]" in out
    assert "klp-ftrace: no module named 'nosuch'" in err
    # rk_lib has none of the patched functions (facts.txt: RK-FACT livepatch)
    assert re.search(r"^0 of \d{5} ftrace records redirected$", out, re.M)
    # gdb does not need drgn, and the commands never load it
    assert "drgn imported: False" in out
    klp_lines = [ln for ln in err.splitlines() if ln.startswith("klp-")]
    assert len(klp_lines) == 7, err  # one line per failing command


def test_klp_prefix_help_and_completion(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    """``help klp`` lists the family; TAB completes modules, pids and options."""
    from drgn.helpers.linux.pid import find_task

    from klpinspect.commands import COMMANDS as SUBCOMMANDS
    from klpinspect.commands import make_command_parser

    prog, _kind = open_program(core=str(vmcore_elf), symbols=[str(vmlinux_debug)])
    task = int(find_task(prog, 130).value_())  # klp bt takes a task_struct address too
    proc = run_gdb(
        *vmcore_args(vmcore_elf, vmlinux_debug),
        "-ex", f"source {SCRIPT}",
        "-ex", "help klp",
        "-ex", "help klp toc",
        "-ex", "complete klp stubs rk_l",
        "-ex", "complete klp bt 13",
        "-ex", "complete klp audit --no-c",
        "-ex", "klp toc rk_lp",
        "-ex", "klp frobnicate",
        "-ex", "klp bt c000000003a8c200",
        "-ex", f"klp bt {task:x}",
    )  # fmt: skip
    assert_clean(proc)
    out, err = proc.stdout, proc.stderr
    for sub, description in SUBCOMMANDS.items():
        assert f"klp {sub} -- {description[0].upper()}{description[1:]}" in out
    usage = make_command_parser("toc", "klp toc").format_usage().strip()
    assert usage in out
    assert "klp stubs rk_lib\n" in out and "klp stubs rk_lp\n" in out
    assert "klp bt 130\n" in out
    assert "klp audit --no-callsites\n" in out
    assert "0xc008000000fb8000" in out
    assert "klp: unknown command 'frobnicate' (help klp lists them)" in err
    assert "klp bt: no task at address 0xc000000003a8c200" in err
    assert "pid 130 (rk_target)  livepatch_sp=0xc0000000037e8038  livepatch frames: 2" in out


def test_gdb_script_line_loads_the_commands(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    """The line ``klpinspect --gdb-script`` prints is all gdb needs."""
    line = subprocess.run(
        [sys.executable, "-m", "klpinspect", "--gdb-script"], capture_output=True, text=True,
        check=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    ).stdout.strip()
    assert line == f"source {SCRIPT}"
    proc = run_gdb(*vmcore_args(vmcore_elf, vmlinux_debug), "-ex", line,
                   "-ex", "klp lpstack")  # fmt: skip
    assert_clean(proc)
    assert "rk_target" in proc.stdout, proc.stderr


# Names the layout layer asks that are in the fixture's .symtab, only in its DWARF
# (a static), only a minimal symbol (asm labels), enumerators, and none of these.
_LOOKUP_CHECK = r"""
import gdb
from klpinspect.backends.gdb.commands import _target
t = _target()
ulong = gdb.lookup_type("unsigned long")
for name in %r:
    try:
        want = int(gdb.parse_and_eval("&'%%s'" %% name).cast(ulong))
    except gdb.error:
        want = None
    if t._elf_symbols().address_of(name) is None:
        print("SYM", name, t._symbol_address(name) == want, want is None)
    try:
        value = gdb.parse_and_eval(name)
        enum = int(value) if value.type.strip_typedefs().code == gdb.TYPE_CODE_ENUM else None
    except gdb.error:
        enum = None
    print("ENUM", name, t._k.constant(name) == enum, enum is None)
"""


def test_symbol_misses_answered_as_gdb_would(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    """A name the ``.symtab`` lacks is taken as absent without gdb's slow ``&'name'``
    only where that would find nothing too; enumerators likewise (``constant``)."""
    names = ["klp_ops", "livepatch_handler", "_mcount", "init_task", "MOD_TEXT",
             "FTRACE_FL_ENABLED", "FTRACE_FL_CALL_OPS", "no_such_symbol_xyz", "_end"]
    script = tmp_path / "check.py"
    script.write_text(_LOOKUP_CHECK % (names,))
    proc = run_gdb(*vmcore_args(vmcore_elf, vmlinux_debug), "-ex", f"source {SCRIPT}",
                   "-ex", f"source {script}")  # fmt: skip
    assert_clean(proc)
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith(("SYM ", "ENUM "))]
    assert len([x for x in lines if x[0] == "ENUM"]) == len(names), proc.stdout + proc.stderr
    assert all(x[2] == "True" for x in lines), proc.stdout
    # the names the .symtab lacks were checked; enumerators found and absent
    assert len([x for x in lines if x[0] == "SYM"]) >= 3, proc.stdout
    assert {x[3] for x in lines if x[0] == "ENUM"} == {"True", "False"}, proc.stdout


def test_no_kernel_loaded() -> None:
    proc = run_gdb("-ex", f"source {SCRIPT}", "-ex", "klp-audit")
    assert_clean(proc)
    assert "klp-audit: no kernel loaded: load vmlinux with debug info first" in proc.stderr


def test_missing_dependency(tmp_path: Path) -> None:
    """tabulate missing from gdb's Python: one line at source time and from each command."""
    (tmp_path / "tabulate.py").write_text("raise ImportError('No module named tabulate')\n")
    proc = run_gdb("-ex", f"source {SCRIPT}", "-ex", "klp-stubs", pythonpath=str(tmp_path))
    assert_clean(proc)
    assert "klpinspect: cannot import klpinspect: No module named tabulate" in proc.stderr
    assert "klp-stubs: cannot import klpinspect: No module named tabulate" in proc.stderr


def test_no_debug_info(vmlinux: Path) -> None:
    # the stripped vmlinux has .symtab but no DWARF: no types
    proc = run_gdb(*PPC64, "-ex", f"file {vmlinux}", "-ex", f"source {SCRIPT}", "-ex", "klp-stubs")
    assert_clean(proc)
    assert "klp-stubs: no kernel debug info: 'struct module' is unknown" in proc.stderr


def test_no_inferior_then_core(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    """Without a target: a plain message; once the core is opened the same session works."""
    proc = run_gdb(
        *PPC64,
        "-ex", f"file {vmlinux_debug}",
        "-ex", f"source {SCRIPT}",
        "-ex", "klp-toc rk_lib",
        "-ex", f"core-file {vmcore_elf}",
        "-ex", "klp-toc rk_lib",
    )  # fmt: skip
    assert_clean(proc)
    assert "klp-toc: no target: open a dump with 'core-file VMCORE'" in proc.stderr
    assert "0xc008000000f18100" in proc.stdout


def test_native_x86_program(tmp_path: Path) -> None:
    """A native program that happens to have a struct module: refused, not misread."""
    src = tmp_path / "prog.c"
    src.write_text("struct module { int x; } m;\nint main(void) { return m.x; }\n")
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-g", "-o", str(exe), str(src)], check=True)
    proc = run_gdb("-ex", f"file {exe}", "-ex", "starti", "-ex", f"source {SCRIPT}",
                   "-ex", "klp-stubs", "-ex", "kill")  # fmt: skip
    assert_clean(proc)
    assert "klp-stubs: not a ppc64 target: gdb architecture is i386:x86-64" in proc.stderr


def test_module_memory_not_in_dump(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    """A dump cut at 64 MiB: kernel data reads, module memory (phys ~100 MiB) does not;
    the broken modules list is a finding, as under drgn (tests/test_golden.py)."""
    core = tmp_path / "cut.elf"
    _truncated_copy(vmcore_elf, core, 64 << 20)
    proc = run_gdb(*vmcore_args(core, vmlinux_debug), "-ex", f"source {SCRIPT}",
                   "-ex", "p init_uts_ns.name.release", "-ex", "klp-stubs")  # fmt: skip
    core.unlink()  # 64 MiB: do not keep it in pytest's tmp history
    assert_clean(proc)
    assert '"6.1.192"' in proc.stdout
    assert "klp-stubs:" not in proc.stderr
    assert "MEMORY_UNREADABLE" in proc.stdout
    assert "modules list broken: cannot read the link at 0xc008000000fb0488" in proc.stdout


def test_hash_mmu_dump_refused(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    """The fixture with MMU_FTR_TYPE_RADIX cleared in cur_cpu_spec->mmu_features."""
    prog, _kind = open_program(core=str(vmcore_elf), symbols=[str(vmlinux_debug)])
    features = prog["cur_cpu_spec"].mmu_features
    paddr = int(features.address_) - 0xC000000000000000
    patched = struct.pack("<I", int(features) & ~0x40)
    core = tmp_path / "hash.elf"
    _truncated_copy(vmcore_elf, core, 64 << 20, [(paddr, patched)])
    proc = run_gdb(*vmcore_args(core, vmlinux_debug), "-ex", f"source {SCRIPT}",
                   "-ex", "klp-audit")  # fmt: skip
    core.unlink()
    assert_clean(proc)
    assert (
        "klp-audit: this dump was taken with the hash MMU; module memory cannot be translated"
        in proc.stderr
    )


def test_auto_load_beside_vmlinux(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    """``vmlinux-gdb.py`` symlinked beside vmlinux registers the commands on load.

    gdb looks beside the objfile's real path, so the kernel is a copy here.
    """
    shutil.copyfile(vmlinux_debug, tmp_path / "vmlinux")
    (tmp_path / "vmlinux-gdb.py").symlink_to(REPO / "gdb" / "vmlinux-gdb.py")
    proc = run_gdb(
        "-iex", f"add-auto-load-safe-path {tmp_path}",
        *PPC64,
        "-ex", f"file {tmp_path / 'vmlinux'}",
        "-ex", f"core-file {vmcore_elf}",
        "-ex", "klp-toc rk_lp",
    )  # fmt: skip
    assert_clean(proc)
    assert "0xc008000000fb8000" in proc.stdout, proc.stderr


# -- live: the lab guest's gdbstub ------------------------------------------------


@pytest.mark.lab
def test_gdbstub_same_as_drgn_on_dump(vmlinux_debug: Path, tmp_path: Path) -> None:
    """``target remote`` to the fixture kernel booted in QEMU, then drgn on its dump.

    The guest is stopped while gdb is attached; the modules and the parked
    task's livepatch stack do not change between gdb's detach and the dump.
    """
    lab = load_lab()
    out = tmp_path / "out"
    out.mkdir()
    with lab.Guest(lab.fixture_kernel(), tmp_path / "guest") as guest:
        guest.wait_ready(timeout=300)
        args = [*PPC64, "-ex", f"file {vmlinux_debug}",
                "-ex", f"target remote {guest.gdb_address}", "-ex", f"source {SCRIPT}"]  # fmt: skip
        for name in ("stubs", "lpstack"):
            args += ["-ex", f"pipe klp-{name} --format json | cat > {out / name}.json"]
        # the parked kthread's pid differs between boots: bt the one lpstack found
        args += ["-ex", "python import json; "
                 f"pid = json.load(open('{out / 'lpstack.json'}'))['tasks'][0]['pid']; "
                 f"gdb.execute(f'pipe klp-bt {{pid}} --format json | cat > {out / 'bt.json'}')",
                 "-ex", "detach"]  # fmt: skip
        proc = run_gdb(*args)
        assert_clean(proc)
        dump = guest.dump(tmp_path / "vmcore.elf").path
    ours = {n: json.loads((out / f"{n}.json").read_text()) for n in ("stubs", "lpstack", "bt")}
    prog, kind = open_program(core=str(dump), symbols=[str(vmlinux_debug)])
    target = DrgnTarget(prog, kind)
    pid = ours["lpstack"]["tasks"][0]["pid"]
    theirs = {
        n: json.loads(run_command(target, n, [*argv, "--format", "json"])[0])
        for n, argv in (("stubs", []), ("lpstack", []), ("bt", [str(pid)]))
    }
    del prog, target
    dump.unlink()  # 512 MiB
    assert len(ours["stubs"]["modules"]) == 40
    for name in ("stubs", "lpstack"):
        assert _without_kind(ours[name]) == _without_kind(theirs[name]), name
    assert _without_kind(ours["bt"]) == _without_kind(theirs["bt"])


# -- makedumpfile's ELF output -------------------------------------------------------


@pytest.fixture(scope="module")
def makedumpfile_elf(vmcore_elf: Path) -> Path:
    """``makedumpfile -E -d 31 vmcore.elf``: Debian's ppc64el makedumpfile under
    qemu-ppc64le-static (``tests/lab/makedumpfile.py``; made once, cached)."""
    load_lab()
    mdf = importlib.import_module("makedumpfile")
    try:
        result = mdf.makedumpfile_elf(vmcore_elf, dump_level=31)
    except Exception as e:  # LabError, a missing tool: fail, never skip
        pytest.fail(f"cannot make makedumpfile's ELF dump: {e}")
    assert "makedumpfile Completed." in result.log, result.log
    return Path(result.path)


def _loads(path: Path) -> list[tuple[int, int, int, int]]:
    """(p_offset, p_paddr, p_filesz, p_memsz) of each PT_LOAD."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        return [
            (seg["p_offset"], seg["p_paddr"], seg["p_filesz"], seg["p_memsz"])
            for seg in ELFFile(f).iter_segments()
            if seg["p_type"] == "PT_LOAD"
        ]


def test_makedumpfile_elf_excludes_pages(makedumpfile_elf: Path, vmcore_elf: Path) -> None:
    """The dump really is filtered (most of RAM gone), and what it keeps is the source's."""
    ((src_offset, src_paddr, src_size, _),) = _loads(vmcore_elf)
    loads = _loads(makedumpfile_elf)
    kept = sum(filesz for _, _, filesz, _ in loads)
    assert len(loads) > 1 and kept < src_size // 2, loads
    with open(makedumpfile_elf, "rb") as fout, open(vmcore_elf, "rb") as fin:
        for offset, paddr, filesz, _memsz in loads:
            assert src_paddr <= paddr and paddr + filesz <= src_paddr + src_size
            fout.seek(offset)
            fin.seek(src_offset + paddr - src_paddr)
            for at in range(0, filesz, 1 << 22):
                n = min(1 << 22, filesz - at)
                assert fout.read(n) == fin.read(n), hex(paddr + at)


def test_makedumpfile_elf_gdb_same_as_drgn(
    makedumpfile_elf: Path,
    vmlinux_debug: Path,
    drgn_json61: dict[str, Any],
    tmp_path: Path,
) -> None:
    """gdb on makedumpfile's ELF prints what drgn prints for vmcore.elf: module
    memory and the parked task's stack are all in pages ``-d 31`` keeps."""
    ours = gdb_core_json(makedumpfile_elf, vmlinux_debug, tmp_path, ("stubs", "lpstack", "audit"))
    for name, report in ours.items():
        assert report["target"]["kind"] == "gdb"
        assert _without_kind(report) == _without_kind(drgn_json61[name]), name
    assert len(ours["audit"]["modules"]) == 40
    assert [len(t["frames"]) for t in ours["lpstack"]["tasks"]] == [2]


def test_makedumpfile_elf_drgn_same_as_vmcore(
    makedumpfile_elf: Path, vmlinux_debug: Path, drgn_json61: dict[str, Any]
) -> None:
    """The drgn back end (the CLI) opens makedumpfile's ELF output too, with the same result."""
    proc = subprocess.run(
        [sys.executable, "-m", "klpinspect", "-c", str(makedumpfile_elf),
         "-s", str(vmlinux_debug), "stubs", "--format", "json"],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # the CLI reads the dump's BTF and kallsyms, not the DWARF (drgn_json61: open_program's
    # default)
    assert doc["target"].pop("debuginfo") == "btf+kallsyms"
    assert doc == {**drgn_json61["stubs"], "target": {
        k: v for k, v in drgn_json61["stubs"]["target"].items() if k != "debuginfo"}}


# -- symbol look-up parity (pure helpers, outside gdb) ----------------------------


def test_elf_symbols_name_addresses_like_drgn(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    """The gdb target's ``.symtab`` look-up names vmlinux addresses as the drgn target does.

    Every symbol start, a few offsets into each, and the gaps between them
    (size-0 assembler labels, padding after sized functions).
    """
    from klpinspect.backends.gdb.target import read_elf_symbols

    syms = read_elf_symbols(str(vmlinux_debug))
    assert len(syms) > 50000
    prog, kind = open_program(core=str(vmcore_elf), symbols=[str(vmlinux_debug)])
    drgn_target = DrgnTarget(prog, kind)
    stext, end = syms.address_of("_stext"), syms.address_of("_end")
    assert stext is not None and end is not None
    starts = sorted({int(s.address) for s in prog.symbols() if stext <= s.address < end})
    addresses: set[int] = set()
    for i, start in enumerate(starts[::7]):
        addresses.update((start, start + 4 * (i % 16 + 1)))
    addresses.update(range(0xC000000000064F00, 0xC000000000065300, 4))  # ftrace asm labels
    mismatches = []
    for address in sorted(addresses):
        theirs = drgn_target.symbolize(address)
        hit = syms.lookup(address)
        ours = None
        if hit is not None:
            start, size, name = hit
            ours = (name, start, size or syms.size_to_next(start))
        expect = None if theirs is None else (theirs.name, theirs.address, theirs.size)
        if ours != expect:
            mismatches.append((hex(address), ours, expect))
    assert len(addresses) > 10000
    assert not mismatches, mismatches[:10]
    for name in ("ftrace_caller", "livepatch_handler", "_stext", "_end", "init_uts_ns", "modules"):
        assert syms.address_of(name) == prog.symbol(name).address, name


def test_bt_without_pid_takes_the_crashed_task(
    vmcore_elf: Path, vmlinux_debug: Path, tmp_path: Path
) -> None:
    """``klp bt``: the task on ``panic_cpu`` (``paca_ptrs[cpu]->__current``).

    The fixture records no panic; a copy says CPU 1 panicked while running
    pid 130 (two 8-byte patches in the linear map)."""
    from drgn import offsetof
    from drgn.helpers.linux.pid import find_task

    prog, _kind = open_program(core=str(vmcore_elf), symbols=[str(vmlinux_debug)])
    page_offset = 0xC000000000000000
    panic_cpu = int(prog["panic_cpu"].address_) - page_offset
    paca = int(prog["paca_ptrs"][1].value_())
    current = paca + offsetof(prog.type("struct paca_struct"), "__current") - page_offset
    task = int(find_task(prog, 130).value_())
    core = tmp_path / "panicked.elf"
    size = vmcore_elf.stat().st_size - 0x10000
    _truncated_copy(vmcore_elf, core, size,
                    [(panic_cpu, struct.pack("<i", 1)), (current, struct.pack("<Q", task))])
    proc = run_gdb(*vmcore_args(core, vmlinux_debug), "-ex", f"source {SCRIPT}",
                   "-ex", "klp bt")  # fmt: skip
    core.unlink()  # 512 MiB
    assert_clean(proc)
    assert "pid 130 (rk_target)  livepatch_sp=0xc0000000037e8038  livepatch frames: 2" in (
        proc.stdout
    ), proc.stderr


def test_elf_symbols_name_lookup_without_index(vmlinux_debug: Path) -> None:
    """``address_of`` for a few names (the ``.strtab`` search, no name index) answers
    as the full name index does: the highest binding, then the first in the table."""
    from klpinspect.backends.gdb.target import read_elf_symbols

    full = read_elf_symbols(str(vmlinux_debug))
    full.address_of("\u00e9")  # not ASCII: builds the whole name index
    assert full._by_name is not None
    index = full._by_name
    # names that several symbols share (static functions of the same name), suffixes
    # of longer names (_end), and a sample across the table
    shared = sorted({n for n in index if n.endswith("_init")})[:10]
    names = [*sorted(index)[::1500], *shared, "_end", "_stext", "init_uts_ns", "no_such_sym"]
    assert len(names) < 64
    fast = read_elf_symbols(str(vmlinux_debug))
    for name in names:
        assert fast.address_of(name) == index.get(name), name
    assert fast._by_name is None  # answered without the index
