"""Auditing the fixture dumps with no debug file: BTF and kallsyms from the dump.

Every subcommand's JSON report with no ``-s`` (types from the kernel's BTF,
symbols from kallsyms: ``target.debuginfo == "btf+kallsyms"``) must equal
the report with the full debug vmlinux (``"dwarf"``) field by field, on every
fixture dump.  Where DWARF knows more (``bt``: inlined frames, ELF symbol
sizes) the difference is spelled out in :func:`test_bt_differs_only_where_dwarf_knows_more`.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import drgn
import pytest
from btfcompare import bt_inlined_difference, symbol_size_difference, without_debuginfo
from conftest import CACHE, FIXTURES, REPO, FixtureMissing

from klpinspect.backends.drgn.btf_finder import (
    KNOWN_GLOBALS,
    KernelBtf,
    debuginfo_hint,
    has_kernel_dwarf,
    kernel_btf,
)
from klpinspect.backends.drgn.program import open_core, open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.commands import BTF_BACKTRACE_NOTE, BTF_SYMBOL_SIZE_NOTE, run_command
from klpinspect.errors import TargetError

pytestmark = pytest.mark.dump

LP61 = FIXTURES / "ppc64le-6.1-lp"
LP72 = FIXTURES / "ppc64le-7.2-lp"


def _unpacked(fixture: Path, name: str) -> Path:
    """``fixture/name`` (``.xz``) decompressed into the cache once (as conftest does)."""
    src = fixture / name
    if not src.exists():
        raise FixtureMissing(src)
    if fixture == LP61:
        dst = CACHE / "fixtures" / src.name.removesuffix(".xz")
    else:
        dst = CACHE / "fixtures" / fixture.name / src.name.removesuffix(".xz")
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + f".tmp{os.getpid()}")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    tmp.replace(dst)
    return dst


# (id, fixture, dump file, pid of a task in a livepatched function)
DUMPS = [
    ("6.1-elf", LP61, "vmcore.elf.xz", 130),
    ("6.1-kdump", LP61, "vmcore.kdump", 130),
    ("6.1-qemu", LP61, "vmcore.qemu.elf.xz", 130),
    ("7.2-elf", LP72, "vmcore.elf.xz", 134),
]
COMMANDS = [
    ("audit", []),
    ("stubs", []),
    ("toc", ["--callsites"]),
    ("lpstack", []),
    ("bt", None),  # the dump's pid
]


def _core(fixture: Path, name: str) -> Path:
    if name.endswith(".xz"):
        return _unpacked(fixture, name)
    if not (fixture / name).exists():
        raise FixtureMissing(fixture / name)
    return fixture / name


def _reports(core: Path, symbols: list[str], pid: int) -> dict[str, dict[str, Any]]:
    prog, kind = open_program(core=str(core), symbols=symbols)
    out = {}
    for name, argv in COMMANDS:
        text, _status = run_command(
            DrgnTarget(prog, kind), name, argv if argv is not None else [str(pid)], fmt="json"
        )
        out[name] = json.loads(text)
    return out


@pytest.fixture(scope="module", params=DUMPS, ids=[d[0] for d in DUMPS])
def both(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    _id, fixture, name, pid = request.param
    core = _core(fixture, name)
    btf = _reports(core, [], pid)
    dwarf = _reports(core, [str(fixture / "vmlinux.debug")], pid)
    yield btf, dwarf


@pytest.mark.parametrize("command", [c for c, _ in COMMANDS if c != "bt"])
def test_reports_identical_without_debug_files(
    both: tuple[dict[str, Any], dict[str, Any]], command: str
) -> None:
    btf, dwarf = both[0][command], both[1][command]
    assert btf["target"]["debuginfo"] == "btf+kallsyms"
    assert dwarf["target"]["debuginfo"] == "dwarf"
    assert without_debuginfo(btf) == without_debuginfo(dwarf)
    if command == "audit":
        assert len(btf["modules"]) >= 40
        assert sum(len(m["stubs"]) for m in btf["modules"]) > 300


def test_bt_differs_only_where_dwarf_knows_more(
    both: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The documented difference (:func:`btfcompare.bt_inlined_difference`):
    DWARF adds inlined frames and ELF symbol sizes; the real frames, with their
    livepatch corrections, are the same."""
    btf, dwarf = both[0]["bt"], both[1]["bt"]
    inlined = bt_inlined_difference(btf, dwarf)
    assert inlined >= 1  # the fixtures' stacks have inlined frames: the test can fail
    assert any(f["corrected"] for f in btf["tasks"][0]["backtrace"])


@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_ftrace_differs_only_in_kallsyms_sizes(fixture: Path) -> None:
    """``ftrace`` without debug files: the same redirects, ops and livepatches;
    only symbol sizes may differ (kallsyms sizes include the padding after a
    function), never smaller, and the report says so in a note."""
    from klpinspect import api

    core = _core(fixture, "vmcore.elf.xz")
    docs, tables, notes = {}, {}, {}
    for key, symbols in (("btf", []), ("dwarf", [str(fixture / "vmlinux.debug")])):
        prog, kind = open_program(core=str(core), symbols=symbols)
        report = api.ftrace(DrgnTarget(prog, kind))
        docs[key] = json.loads(report.render("json"))
        tables[key] = report.render("table")
        notes[key] = report.notes
    assert docs["btf"]["ftrace"]["redirects"]  # the fixtures are livepatched
    differ = symbol_size_difference(docs["btf"], docs["dwarf"])
    assert BTF_SYMBOL_SIZE_NOTE in notes["btf"]
    assert BTF_SYMBOL_SIZE_NOTE not in notes["dwarf"]
    assert f"note: {BTF_SYMBOL_SIZE_NOTE}" in tables["btf"]
    if fixture == LP72:
        # a livepatched function there has padding before the next one: the
        # difference the note explains is real (the test can fail)
        assert differ >= 1


def test_qemu_without_symbols(tmp_path: Path) -> None:
    """``--qemu`` with no ``-s``: kallsyms and BTF read over QMP (a QMP server
    answering from the 6.1 fixture's QEMU dump), the same reports as with the
    debug vmlinux, and only reads sent."""
    from qmpdump import QMPDumpServer

    dump = _core(LP61, "vmcore.qemu.elf.xz")
    docs = {}
    with QMPDumpServer(dump, tmp_path / "qmp.sock") as qmp:
        for key, symbols in (("btf", []), ("dwarf", [str(LP61 / "vmlinux.debug")])):
            prog, kind = open_program(qemu=qmp.path, symbols=symbols)
            assert kind == "qemu"
            target = DrgnTarget(prog, kind)
            for name, argv in (("audit", []), ("lpstack", [])):
                text, _status = run_command(target, name, argv, fmt="json")
                docs[key, name] = json.loads(text)
            prog.cache["klpinspect.qmp"].close()  # the server serves one client at a time
        sent = set(qmp.commands)
    for name in ("audit", "lpstack"):
        assert docs["btf", name]["target"]["debuginfo"] == "btf+kallsyms"
        assert docs["dwarf", name]["target"]["debuginfo"] == "dwarf"
        assert docs["btf", name]["target"]["kind"] == "qemu"
        assert without_debuginfo(docs["btf", name]) == without_debuginfo(docs["dwarf", name])
    assert len(docs["btf", "audit"]["modules"]) == 40
    assert sent <= {"qmp_capabilities", "query-target", "query-memory-size-summary",
                    "human-monitor-command", "pmemsave"}


def test_cli_skips_drgn_plugins_only_without_debug_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No debug info search: drgn's plugins have nothing to add (the BTF
    finders are klpinspect's own, -s files are loaded by name), so the CLI
    does not load them, unless the user's DRGN_PLUGINS / DRGN_DISABLE_PLUGINS
    say otherwise; they load where drgn searches (--default-symbols, -s DIR)."""
    from klpinspect import cli

    core = str(_core(LP61, "vmcore.elf.xz"))
    debug = ["-s", str(LP61 / "vmlinux.debug")]
    cases = [
        ([], {}, "*", "btf+kallsyms"),
        (debug, {}, "*", "btf+kallsyms"),  # the -s file's build ID checked, .symtab unread
        ([*debug, "--dwarf"], {}, "*", "dwarf"),
        ([*debug, "--default-symbols"], {}, None, "dwarf"),
        ([], {"DRGN_DISABLE_PLUGINS": "crash_commands"}, "crash_commands", "btf+kallsyms"),
        ([], {"DRGN_PLUGINS": "x=y"}, None, "btf+kallsyms"),
    ]
    for extra, env, expected, source in cases:
        monkeypatch.delenv("DRGN_DISABLE_PLUGINS", raising=False)
        monkeypatch.delenv("DRGN_PLUGINS", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        args = cli.make_parser().parse_args(["-c", core, *extra, "lpstack"])
        target = cli.open_target(args)
        assert getattr(target, "debuginfo", None) == source
        assert os.environ.get("DRGN_DISABLE_PLUGINS") == expected
    monkeypatch.delenv("DRGN_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("DRGN_PLUGINS", raising=False)
    target = cli.open_target(cli.make_parser().parse_args(["-c", core, *debug, "bt", "130"]))
    assert getattr(target, "debuginfo", None) == "dwarf"
    assert os.environ.get("DRGN_DISABLE_PLUGINS") == "*"


def test_cli_table_says_where_types_came_from() -> None:
    core = _core(LP61, "vmcore.elf.xz")
    proc = subprocess.run(
        [sys.executable, "-m", "klpinspect", "-c", str(core), "bt", "130"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.splitlines()
    assert head[0].endswith("debuginfo=btf+kallsyms")
    assert f"note: {BTF_BACKTRACE_NOTE}" in head
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "klpinspect",
            "-c",
            str(core),
            "-s",
            str(LP61 / "vmlinux.debug"),
            "--dwarf",
            "stubs",
            "rk_lib",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith("debuginfo=dwarf")


# --- the drgn program itself -------------------------------------------------------------


@pytest.fixture(scope="module")
def btf_prog() -> drgn.Program:
    prog, _ = open_program(core=str(_core(LP61, "vmcore.elf.xz")))
    return prog


def test_types_and_globals_from_btf(btf_prog: drgn.Program) -> None:
    prog = btf_prog
    kbtf = kernel_btf(prog)
    assert isinstance(kbtf, KernelBtf)
    assert not has_kernel_dwarf(prog)
    for tag in (
        "module",
        "task_struct",
        "thread_info",
        "paca_struct",
        "mod_arch_specific",
        "module_sect_attrs",
    ):
        assert prog.type(f"struct {tag}").size
    assert prog["init_uts_ns"].name.release.string_() == b"6.1.192"
    assert prog["init_task"].comm.string_() == b"swapper/0"
    assert prog["modules"].type_.type_name() == "struct list_head"
    assert int(prog["paca_ptrs"][0].paca_index) == 0
    # a per-CPU variable typed by its BTF VAR, an enumerator, a function
    assert prog["runqueues"].type_.type_name() == "struct rq"
    assert prog.constant("MODULE_STATE_LIVE").value_() == 0
    assert prog.function("schedule").type_.kind == drgn.TypeKind.FUNCTION
    # a type only a module's BTF has (virtio_net's, split BTF kept by the BPF subsystem)
    assert prog.type("struct virtnet_info").size
    assert len(kbtf.module_btfs()) == 40
    # a module's function: its split BTF FUNC, addressed by the module's kallsyms
    # (the plugin's lazy finders add module kallsyms the same way; DrgnTarget reads
    # them itself, per module, and registers nothing)
    from drgn.helpers.linux.module import for_each_module

    from klpinspect.backends.drgn.modsyms import module_symbols

    if "test-modsyms" not in prog.registered_symbol_finders():
        prog.register_symbol_finder(
            "test-modsyms",
            drgn.SymbolIndex([sym for mod in for_each_module(prog) for sym in module_symbols(mod)]),
            enable_index=-1,
        )
    func = prog.function("rk_lib_sleep")
    assert func.type_.type_name() == "void (unsigned int ms)"
    assert func.address_ == prog.symbol("rk_lib_sleep").address


def test_no_btf_no_symbols_one_line(tmp_path: Path) -> None:
    """Without kallsyms in VMCOREINFO (pre-6.0) and no -s: one line saying what is missing."""
    core = _core(LP61, "vmcore.elf.xz")
    lines = (LP61 / "vmcoreinfo.txt").read_text().splitlines()
    kept = [ln for ln in lines if "kallsyms" not in ln]
    kept = ["OSRELEASE=6.1.0-28-powerpc64le" if ln.startswith("OSRELEASE=") else ln for ln in kept]
    prog = open_core(core, ("\n".join(kept) + "\n").encode())
    from klpinspect.backends.drgn.program import load_kernel_debug_info

    with pytest.raises(TargetError) as e:
        load_kernel_debug_info(prog, [])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("no debug info for the kernel 6.1.0-28-powerpc64le")
    assert "no kallsyms in its VMCOREINFO" in msg
    assert msg.endswith("(Debian: apt install linux-image-6.1.0-28-powerpc64le-dbg)")


@pytest.mark.parametrize(
    "release, hint",
    [
        ("6.1.0-28-powerpc64le", "linux-image-6.1.0-28-powerpc64le-dbg"),
        ("6.12.48+deb13-powerpc64le", "linux-image-6.12.48+deb13-powerpc64le-dbg"),
        ("5.15.0-91-generic", "linux-image-unsigned-5.15.0-91-generic-dbgsym"),
        ("5.14.0-362.8.1.el9_3.ppc64le", "kernel-5.14.0-362.8.1.el9_3.ppc64le"),
        ("6.1.192", ""),
    ],
)
def test_debuginfo_hint(release: str, hint: str) -> None:
    assert hint in debuginfo_hint(release)
    assert bool(hint) == bool(debuginfo_hint(release))


@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_audit_searches_only_prefetched_names(
    fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name an audit looks up in the kernel's BTF was found in the one pass
    when the BTF was opened (btf_finder.LAYOUT_NAMES): none is searched alone."""
    from klpinspect import api, btf

    searched: list[str] = []
    real = btf.Btf._search_string

    def search(self: btf.Btf, name: str) -> list[int]:
        if self.base is None:  # vmlinux's own strings
            searched.append(name)
        return real(self, name)

    monkeypatch.setattr(btf.Btf, "_search_string", search)
    monkeypatch.setenv("KLPINSPECT_JOBS", "1")  # the task walk in this process
    target = api.open_target(_core(fixture, "vmcore.elf.xz"))
    api.audit(target)
    assert searched == []
    prefetched = kernel_btf(target.prog).vmlinux._string_cache  # type: ignore[attr-defined]
    assert {"module", "task_struct"} <= set(prefetched)


@pytest.mark.parametrize("core_name", ["vmcore.elf.xz", "vmcore.kdump"])
def test_drgn_cli_helpers_without_debug_info(core_name: str) -> None:
    """``drgn -c VMCORE`` with no -s: the plugin's BTF finders make drgn's helpers work."""
    core = _core(LP61, core_name)
    # drgn 0.3.0 cannot read module (vmalloc) memory of a kdump-compressed
    # ppc64 dump by itself (libkdumpfile: "No way to translate"); the same
    # plugin hook adds a segment that walks the page tables, with types from
    # BTF when there is no DWARF, so drgn's for_each_module works there too.
    modules = True
    code = (
        "from drgn.helpers.linux.module import for_each_module\n"
        "from drgn.helpers.linux.pid import for_each_task, find_task\n"
        "import json\n"
        + (
            "print('modules', json.dumps([m.name.string_().decode() "
            "for m in for_each_module(prog)]))\n"
            if modules
            else ""
        )
        + "print('tasks', len(list(for_each_task(prog))))\n"
        "print('release', prog['init_uts_ns'].name.release.string_().decode())\n"
        "print(prog.stack_trace(find_task(prog, 1)))\n"
        "from drgn.commands import run_command\n"
        "run_command(prog, 'klp-toc --format json rk_target')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "-q", "-c", str(core), "-e", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(
            os.environ,
            PYTHONPATH=str(REPO),
            DEBUGINFOD_URLS="",
            DRGN_DISABLE_PLUGINS="klpinspect",  # an installed copy
            DRGN_PLUGINS="klpinspect=klpinspect.backends.drgn.commands",  # this checkout's
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    if modules:
        names = json.loads(out.split("modules ", 1)[1].splitlines()[0])
        assert len(names) == 40 and "rk_target" in names
    assert int(out.split("tasks ", 1)[1].splitlines()[0]) > 30
    assert "release 6.1.192" in out
    assert "schedule" in out  # a real unwind of pid 1
    doc = json.loads(out[out.index("{\n") :])
    assert doc["target"]["debuginfo"] == "btf+kallsyms"
    assert doc["modules"][0]["toc"] == "0xc008000000f68100"


# --- drgn types and globals from BTF against drgn's own from DWARF -----------------------

_COMPARED_STRUCTS = (
    "module",
    "task_struct",
    "thread_info",
    "paca_struct",
    "mod_arch_specific",
    "module_sect_attrs",
    "mod_kallsyms",
    "thread_struct",
    "uts_namespace",
    "pt_regs",
    "rq",
    "cpu_spec",
    "mm_struct",
    "page",
    "klp_patch",
    "btf_module",
)


def _members(t: drgn.Type) -> list[tuple[str | None, int, int | None, str]]:
    out = []
    for m in t.members or ():
        out.append((m.name, m.bit_offset, m.bit_field_size, m.type.type_name()))
        if m.name is None:
            out += _members(m.type.unqualified())
    return out


@pytest.mark.parametrize(
    "fixture, name", [(LP61, "vmcore.elf.xz"), (LP72, "vmcore.elf.xz")], ids=["6.1", "7.2"]
)
def test_drgn_types_and_globals_same_as_dwarf(fixture: Path, name: str) -> None:
    """Every member (name, bit offset, bit-field size, type name) and every
    global of :data:`KNOWN_GLOBALS` and the BTF per-CPU variables: the same
    address and type as drgn gives from the DWARF.  The documented
    difference: arrays sized by a config constant (``__per_cpu_offset``:
    NR_CPUS, ``swapper_pg_dir``: PTRS_PER_PGD) are incomplete, as BTF keeps
    no such constant."""
    core = str(_core(fixture, name))
    btf, _ = open_program(core=core)
    dwarf, _ = open_program(core=core, symbols=[str(fixture / "vmlinux.debug")])
    compared = 0
    for tag in _COMPARED_STRUCTS:
        try:
            want = dwarf.type(f"struct {tag}")
        except LookupError:
            continue
        assert _members(btf.type(f"struct {tag}")) == _members(want), tag
        compared += 1
    assert compared >= 14
    kbtf = kernel_btf(btf)
    assert kbtf is not None
    percpu = [var.name for _sec, var, _si in kbtf.vmlinux.datasec_vars()]
    assert len(percpu) > 100
    assert [n for n, _ in kbtf.vmlinux.datasec_var_names()] == percpu
    checked = 0
    for var in [*KNOWN_GLOBALS, *percpu]:
        try:
            want_obj = dwarf[var]
        except KeyError:
            continue  # not in this kernel (mod_tree without CONFIG_MODULES_TREE_LOOKUP, ...)
        got = btf[var]
        assert got.address_ == want_obj.address_, var
        if KNOWN_GLOBALS.get(var, "").endswith("[]"):
            # an array whose length is a config constant BTF does not keep
            # (NR_CPUS, PTRS_PER_PGD): incomplete, same element type
            assert got.type_.type_name() == KNOWN_GLOBALS[var]
            assert want_obj.type_.type_name().startswith(KNOWN_GLOBALS[var][:-1])
        else:
            assert got.type_.type_name() == want_obj.type_.type_name(), var
        checked += 1
    assert checked >= len(percpu) + 20


def test_with_symbols_no_btf_is_read() -> None:
    """With -s the DWARF answers: the plugin's BTF finders stay idle (no BTF, no kallsyms read)."""
    prog, kind = open_program(
        core=str(_core(LP61, "vmcore.elf.xz")), symbols=[str(LP61 / "vmlinux.debug")]
    )
    target = DrgnTarget(prog, kind)
    assert target.debuginfo == "dwarf"
    assert prog.type("struct module").size
    run_command(target, "stubs", ["rk_lib"], fmt="json")
    with pytest.raises(LookupError):
        prog.type("struct no_such_struct_anywhere")
    assert kernel_btf(prog) is None
    assert "klpinspect_vmlinux_kallsyms" not in prog.cache


# --- the public API without symbols ------------------------------------------------------


@pytest.mark.lpfixture
def test_api_open_target_without_symbols(tmp_path: Path) -> None:
    """``klpinspect.api.open_target(core)`` with no symbols opens with BTF + kallsyms
    and gives the same reports as with the debug vmlinux."""
    from klpinspect import api

    core = LP61 / "vmcore.kdump"  # the custom kdump program, module memory included
    target = api.open_target(core)
    assert getattr(target, "debuginfo", None) == "btf+kallsyms"
    with_dwarf = api.open_target(core, symbols=[LP61 / "vmlinux.debug"])
    assert getattr(with_dwarf, "debuginfo", None) == "dwarf"
    btf_doc = json.loads(api.audit(target).render("json"))
    dwarf_doc = json.loads(api.audit(with_dwarf).render("json"))
    assert btf_doc["target"]["debuginfo"] == "btf+kallsyms"
    assert without_debuginfo(btf_doc) == without_debuginfo(dwarf_doc)
    assert len(btf_doc["modules"]) == 40
    bt = api.backtrace(target, 130)
    assert BTF_BACKTRACE_NOTE in bt.notes
    assert BTF_BACKTRACE_NOTE not in api.backtrace(with_dwarf, 130).notes
    # neither BTF nor kallsyms usable: one line, naming what is missing
    lines = (LP61 / "vmcoreinfo.txt").read_text().splitlines()
    info = tmp_path / "vmcoreinfo"
    info.write_text("".join(ln + "\n" for ln in lines if "kallsyms" not in ln))
    with pytest.raises(TargetError) as e:
        api.open_target(core, vmcoreinfo=info)
    assert "\n" not in str(e.value)
    assert "no kallsyms in its VMCOREINFO" in str(e.value)


def _finder_answers(prog: drgn.Program, text: int) -> tuple[object, ...]:
    try:
        sym: object = prog.symbol(text).name
    except LookupError:
        sym = None
    return (prog.type("struct module").size, prog["init_uts_ns"].name.release.string_(),
            sym, len(prog.symbols(text)))


@pytest.mark.parametrize("symbols", [False, True], ids=["btf", "dwarf"])
def test_lazy_finders_retired_once_silent(symbols: bool) -> None:
    """The drgn plugin's lazy finders (register_lazy_btf) are disabled when a DrgnTarget
    is made on a program where they can only say no (enable_btf ran, or vmlinux
    DWARF is loaded); every answer stays the same.  Where they still decide (the
    plugin's own switch to BTF, no enable_btf), they stay."""
    from klpinspect.backends.drgn.btf_finder import register_lazy_btf

    lazy = "klpinspect_btf_lazy"
    core = str(_core(LP61, "vmcore.elf.xz"))
    prog, _ = open_program(core=core, symbols=[str(LP61 / "vmlinux.debug")] if symbols else [])
    register_lazy_btf(prog)  # as the plugin's hook does
    assert lazy in prog.enabled_symbol_finders() and lazy in prog.enabled_type_finders()
    text = prog.symbol("schedule").address + 8
    target = DrgnTarget(prog, "vmcore")  # retires them
    for enabled in (prog.enabled_type_finders, prog.enabled_object_finders,
                    prog.enabled_symbol_finders):
        assert lazy not in enabled()
    answers = _finder_answers(prog, text)
    assert answers[2] == "schedule" and answers[3] >= 1
    fresh, _ = open_program(core=core, symbols=[str(LP61 / "vmlinux.debug")] if symbols else [])
    register_lazy_btf(fresh)
    assert _finder_answers(fresh, text) == answers  # the lazy finders said nothing
    mod = next(iter(target.modules()))
    assert target.symbolize(mod.text_ranges[0][0] + 8) is not None
    # no enable_btf, no DWARF: the lazy finders are what switches to BTF; they stay
    plain = open_core(core)
    register_lazy_btf(plain)
    plain.create_loaded_modules()  # as drgn does before its (here fruitless) search
    assert DrgnTarget(plain, "vmcore").debuginfo == "btf+kallsyms"
    assert lazy in plain.enabled_symbol_finders() and lazy in plain.enabled_type_finders()
