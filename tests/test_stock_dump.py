"""klpinspect on a Debian stock kernel's dump, checked against the kernel's own view.

These tests stand in for the livepatch-fixture tests on a clone without
``../shared``: the dump comes from the lab (``stock_dump``, tests/stockdump.py:
bookworm's 6.1 kernel by default, booted under QEMU with 64 modules loaded),
and every expected value comes from the kernel itself, never from klpinspect:
the guest's ``/proc/modules`` (names, load addresses, sizes, the "used by"
dependencies the loader recorded) and ``/sys/module/*/sections/{.text,.toc,.stubs}``
printed on its console, the symbol table of the image it booted, and the
modules' ``.ko`` files (their ``R_PPC64_REL24`` relocations).  They cover the
drgn back end (``DrgnTarget``), the API, the CLI, the drgn plugin and the gdb
back end on one real kernel: stubs, TOCs, trampolines, call sites, ftrace, `bt`,
a damaged dump.

Collected when a fixture directory is absent or ``$KLP_STOCK_DUMP`` names a
dump (tests/conftest.py); ``tests/test_without_shared.py`` runs them in CI.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, drgn_env
from stockdump import StockDump
from test_callsites import _modinfo_name, check_module_call_sites
from test_cli_dump import _rel24_undefined

from klpinspect import api
from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget

pytestmark = pytest.mark.stock

TOC_BIAS = 0x8000  # arch/powerpc/kernel/module_64.c: my_r2() = .toc + 0x8000
GDB = "gdb-multiarch"


@pytest.fixture(scope="module")
def target(stock_dump: StockDump) -> DrgnTarget:
    prog, kind = open_program(core=str(stock_dump.vmcore), symbols=[str(stock_dump.vmlinux)])
    return DrgnTarget(prog, kind)


@pytest.fixture(scope="module")
def cli_audit(stock_dump: StockDump) -> dict[str, Any]:
    """``klpinspect -c vmcore -s vmlinux --format json audit``: exit 0 (no finding above info)."""
    p = _cli(stock_dump, "audit")
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


@pytest.fixture(scope="module")
def kos(stock_dump: StockDump, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each loaded module's ``.ko`` from the image packages (``.ko.xz`` decompressed),
    checked by its ``.modinfo`` name."""
    tmp = tmp_path_factory.mktemp("kos")
    files: dict[str, Path] = {}
    for ko in stock_dump.modules.rglob("*.ko*"):
        files.setdefault(ko.name.split(".ko")[0].replace("-", "_"), ko)
    out = {}
    for name in stock_dump.view["modules"]:
        ko = files[name]
        if ko.name.endswith(".xz"):
            plain = tmp / ko.name.removesuffix(".xz")
            plain.write_bytes(lzma.decompress(ko.read_bytes()))
            ko = plain
        assert _modinfo_name(ko) == name
        out[name] = ko
    return out


def _cli(dump: StockDump, *args: str, core: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klpinspect", "-c", str(core or dump.vmcore),
         "-s", str(dump.vmlinux), "--format", "json", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def _no_kind(doc: dict[str, Any]) -> dict[str, Any]:
    """*doc* without what says which back end read it."""
    target = {k: v for k, v in doc["target"].items() if k not in ("kind", "debuginfo")}
    return {**doc, "target": target}


def test_modules_are_the_guests(target: DrgnTarget, stock_dump: StockDump) -> None:
    """The module list, each module's load address and sections are /proc/modules
    and /sys/module/*/sections, in /proc/modules' order."""
    view, proc = stock_dump.view, stock_dump.proc_modules
    mods = list(target.modules())
    assert [m.name for m in mods] == view["modules"] == list(proc)
    checked = 0
    for mod in mods:
        assert mod.text_ranges[0][0] == proc[mod.name]["address"], mod.name
        secs = view["sections"].get(mod.name, {})
        for name in (".text", ".toc", ".stubs"):
            if name in secs:
                assert mod.sections.get(name) == secs[name], (mod.name, name)
                checked += 1
        if ".stubs" in secs:
            assert mod.stubs == secs[".stubs"], mod.name
        if ".toc" in secs:
            assert mod.toc_section == secs[".toc"], mod.name
    assert checked >= 2 * len(mods)


def test_kernel_facts(target: DrgnTarget, stock_dump: StockDump) -> None:
    """Release, TOC, ftrace entry points, livepatch support: the image's symbols."""
    k = target.kernel()
    syms = stock_dump.symbols
    assert k.release == stock_dump.kver
    assert (k.arch, k.byteorder, k.abi) == ("ppc64le", "little", 2)
    assert k.toc == stock_dump.symbol(".TOC.")
    assert k.toc_source == "paca"
    assert k.ftrace_caller == stock_dump.symbol("ftrace_caller")
    assert any(a <= k.ftrace_caller < b for a, b in k.text_ranges)
    regs = syms.get("ftrace_regs_caller")
    assert k.ftrace_regs_caller == (stock_dump.symbol("ftrace_regs_caller") if regs else None)
    # CONFIG_LIVEPATCH (kernel/livepatch/core.c) gives klp_enable_patch and the
    # livepatch stack; Debian's ppc64el kernels are built without it.
    assert k.has_livepatch_sp == ("klp_enable_patch" in syms)
    assert k.livepatch_handler == (
        stock_dump.symbol("livepatch_handler") if "livepatch_handler" in syms else None)


def test_audit_agrees_with_the_kernel(stock_dump: StockDump) -> None:
    """The API's audit: every module's .stubs and TOC are sysfs', every stub's
    target is the image's symbol or lies in the module /proc/modules says the
    caller depends on, every ftrace stub reaches an ftrace entry point."""
    t = api.open_target(stock_dump.vmcore, symbols=[stock_dump.vmlinux])
    doc = json.loads(api.audit(t).render("json"))
    view, proc, syms = stock_dump.view, stock_dump.proc_modules, stock_dump.symbols
    assert [m["name"] for m in doc["modules"]] == view["modules"]
    entries = set().union(*(syms.get(n, set()) for n in
                            ("_mcount", "ftrace_caller", "ftrace_regs_caller")))
    kinds: dict[str, int] = {}
    for mod in doc["modules"]:
        secs = view["sections"].get(mod["name"], {})
        if ".stubs" in secs:
            assert int(mod["stubs_section"], 16) == secs[".stubs"], mod["name"]
        if ".toc" in secs and mod["toc_source"] == ".toc":
            assert int(mod["toc"], 16) == secs[".toc"] + TOC_BIAS, mod["name"]
        for slot in mod["stubs"]:
            kinds[slot["kind"]] = kinds.get(slot["kind"], 0) + 1
            where = (mod["name"], slot["index"])
            target = int(slot["target"], 16)
            owner = slot["target_owner"]
            if slot["kind"] == "ftrace":
                assert target in entries, where
            elif owner == "vmlinux":
                assert target in syms[slot["target_symbol"]], where
            else:
                assert slot["kind"] == "normal", where
                # resolve_symbol() -> ref_module(): the caller is in the owner's "used by"
                assert mod["name"] in proc[owner]["used_by"], where
                base = proc[owner]["address"]
                assert base <= target < base + proc[owner]["size"], where
    assert kinds.get("normal", 0) > 100 * len(doc["modules"]) // 10
    assert kinds.get("ftrace", 0) >= len(doc["modules"])
    codes = {(f["severity"], f["code"]) for f in doc["findings"]}
    assert all(sev == "info" for sev, _ in codes), codes
    assert (("info", "LIVEPATCH_UNSUPPORTED") in codes) == ("klp_enable_patch" not in syms)


def test_cli_audit_is_the_api_audit(cli_audit: dict[str, Any], stock_dump: StockDump) -> None:
    # as the command line opens it for an audit: the dump's BTF and kallsyms
    # where it has them, else the vmlinux's DWARF
    t = api.open_target(stock_dump.vmcore, symbols=[stock_dump.vmlinux], dwarf=False,
                        elf_sizes=False)
    assert cli_audit == json.loads(api.audit(t).render("json"))


def test_cli_toc_and_stubs(cli_audit: dict[str, Any], stock_dump: StockDump) -> None:
    """``toc`` and ``stubs MODULE`` answer as the audit does, for a module the
    guest loaded."""
    name = stock_dump.view["modules"][0]
    p = _cli(stock_dump, "toc")
    assert p.returncode == 0, p.stderr
    tocs = {m["name"]: m["toc"] for m in json.loads(p.stdout)["modules"]}
    assert tocs == {m["name"]: m["toc"] for m in cli_audit["modules"]}
    p = _cli(stock_dump, "stubs", name)
    assert p.returncode == 0, p.stderr
    (mod,) = json.loads(p.stdout)["modules"]
    (ours,) = [m for m in cli_audit["modules"] if m["name"] == name]
    assert mod["stubs"] == ours["stubs"]
    p = _cli(stock_dump, "stubs", "no_such_module_xyz")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_call_sites_are_the_kos(target: DrgnTarget, kos: dict[str, Path]) -> None:
    """Every call into a stub restores the TOC, and the sites in memory are the
    REL24 relocations of the modules' own ``.ko`` files; no ftrace site is
    enabled (the guest starts no tracer)."""
    total, ftrace_funcs = check_module_call_sites(target, kos)
    assert total > 10 * len(kos)
    assert ftrace_funcs == set()


def test_stub_targets_are_the_ko_relocations(cli_audit: dict[str, Any], kos: dict[str, Path],
                                             stock_dump: StockDump) -> None:
    """Each module's normal stubs reach exactly the functions its ``.ko`` calls
    via REL24: vmlinux's at the image's address, other modules' by name."""
    assert stock_dump.symbols
    funcs = stock_dump.global_functions
    for m in cli_audit["modules"]:
        wanted = {funcs.get(n, n) for n in _rel24_undefined(kos[m["name"]])}
        got = {int(s["target"], 16) if s["target_owner"] == "vmlinux" else s["target_symbol"]
               for s in m["stubs"] if s["kind"] == "normal"}
        assert got == wanted, (m["name"], got ^ wanted)


def test_damaged_dump_is_findings_not_a_crash(stock_dump: StockDump, tmp_path: Path) -> None:
    """The dump cut at 64 MiB: what cannot be read is a finding, not a crash;
    cut at 1 MiB (before the kernel's data): one line, exit 2."""
    cut = tmp_path / "cut.core"
    with open(stock_dump.vmcore, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(64 << 20))
    p = _cli(stock_dump, "audit", core=cut)
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr
    doc = json.loads(p.stdout)
    messages = [f["message"] for f in doc["findings"] if f["code"] == "MEMORY_UNREADABLE"]
    assert any("core file truncated: 67,108,864 of the" in m for m in messages), messages
    assert all(f["severity"] in ("info", "warning") for f in doc["findings"]), doc["findings"]
    with open(stock_dump.vmcore, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(1 << 20))
    p = _cli(stock_dump, "audit", core=cut)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "truncated" in p.stderr


def test_ftrace_view(stock_dump: StockDump) -> None:
    """``ftrace``: the kernel's ftrace records read, nothing redirected (no tracer,
    no livepatch in the guest)."""
    p = _cli(stock_dump, "ftrace")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    syms = stock_dump.symbols
    # every vmlinux call site in __mcount_loc can have a record (init ones are freed)
    (start,), (stop,) = syms["__start_mcount_loc"], syms["__stop_mcount_loc"]
    assert 0 < doc["ftrace"]["records"]
    assert doc["ftrace"]["records"] > (stop - start) // 8 // 2
    assert doc["ftrace"]["redirects"] == [] and doc["ftrace"]["livepatch"] == []
    assert doc["findings"] == []


def test_drgn_plugin_toc(stock_dump: StockDump) -> None:
    """``klp-toc`` in drgn (this checkout's plugin) gives each module's sysfs ``.toc`` + 0x8000."""
    code = ("from drgn.commands import run_command\n"
            "run_command(prog, 'klp-toc --format json')\n")
    p = subprocess.run(
        [sys.executable, "-m", "drgn", "-q", "-c", str(stock_dump.vmcore), "-s",
         str(stock_dump.vmlinux), "-e", code],
        capture_output=True, text=True, timeout=600, env=drgn_env(),
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    secs = stock_dump.view["sections"]
    tocs = {m["name"]: int(m["toc"], 16) for m in doc["modules"] if m["toc_source"] == ".toc"}
    assert tocs and all(tocs[n] == secs[n][".toc"] + TOC_BIAS for n in tocs if ".toc" in secs[n])


def test_gdb_core_audit_is_drgns(cli_audit: dict[str, Any], stock_dump: StockDump,
                                 tmp_path: Path) -> None:
    """``klp-audit`` in gdb on the same dump: the same report as the drgn back end."""
    out = tmp_path / "gdb.json"
    args = [GDB, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
            "-ex", f"file {stock_dump.vmlinux}", "-ex", f"core-file {stock_dump.vmcore}",
            "-ex", f"source {REPO / 'gdb' / 'klpinspect.py'}",
            "-ex", f"pipe klp-audit --format json | cat > {out}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    p = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert out.exists() and out.stat().st_size, (p.stderr or p.stdout)[-2000:]
    assert _no_kind(json.loads(out.read_text())) == _no_kind(cli_audit)


def test_bt_frames_are_the_images_functions(stock_dump: StockDump) -> None:
    """``bt 1``: every frame's ``function+off/size`` is the image's function at
    ``pc - off``; no livepatch stack on a kernel without CONFIG_LIVEPATCH."""
    p = _cli(stock_dump, "bt", "1")
    assert p.returncode == 0, p.stderr
    (task,) = json.loads(p.stdout)["tasks"]
    assert task["pid"] == 1
    syms = stock_dump.symbols
    checked = 0
    for frame in task["backtrace"]:
        m = re.fullmatch(r"([\w.]+)\+0x([0-9a-f]+)/0x[0-9a-f]+", frame["symbol"] or "")
        if m:  # not an inlined frame
            assert int(frame["pc"], 16) - int(m[2], 16) in syms[m[1]], frame
            checked += 1
    assert checked >= 3, task["backtrace"]
    if "klp_enable_patch" not in syms:
        assert task["livepatch_sp"] is None and task["frames"] == []
