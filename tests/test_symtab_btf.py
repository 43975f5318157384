"""``-s VMLINUX`` without its DWARF: types from the dump's BTF, symbols from the
vmlinux's ``.symtab`` (:mod:`klpinspect.backends.drgn.symtab_finder`).

The command line does this for every command but ``bt``: each report must
equal the one made with the DWARF loaded, field by field, but for
``target.debuginfo``; the symbol finder must answer as drgn's own ELF symbol
search does over the same file; and a kernel without BTF (or a file without
``.symtab``) falls back to DWARF.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import drgn
import pytest
from btfcompare import without_debuginfo
from conftest import FIXTURES, REPO
from test_btf_dump import _core

from klpinspect.backends.drgn import btf_finder, symtab_finder
from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.commands import BTF_SYMTAB_BACKTRACE_NOTE, run_command
from klpinspect.errors import TargetError
from klpinspect.symtab import read_elf_symtab

pytestmark = pytest.mark.dump

LP61 = FIXTURES / "ppc64le-6.1-lp"
LP72 = FIXTURES / "ppc64le-7.2-lp"
# (id, fixture, dump file, pid of a task in a livepatched function)
DUMPS = [("6.1-elf", LP61, "vmcore.elf.xz", 130), ("7.2-elf", LP72, "vmcore.elf.xz", 134)]
COMMANDS = [("audit", []), ("stubs", []), ("toc", ["--callsites"]), ("lpstack", []),
            ("ftrace", [])]


def _open(core: Path, vmlinux: Path, dwarf: bool, elf_sizes: bool = True) -> drgn.Program:
    prog, _kind = open_program(core=str(core), symbols=[str(vmlinux)], dwarf=dwarf,
                               elf_sizes=elf_sizes)
    return prog


@pytest.fixture(scope="module", params=DUMPS, ids=[d[0] for d in DUMPS])
def progs(request: pytest.FixtureRequest) -> Iterator[tuple[drgn.Program, drgn.Program, Path]]:
    _id, fixture, name, pid = request.param
    core = _core(fixture, name)
    vmlinux = fixture / "vmlinux.debug"
    symtab = _open(core, vmlinux, False)
    symtab.cache["test_pid"] = pid
    symtab.cache["test_kallsyms"] = _open(core, vmlinux, False, elf_sizes=False)
    yield symtab, _open(core, vmlinux, True), vmlinux


def _json_reports(progs: dict[str, drgn.Program], command: str) -> dict[str, Any]:
    """``command``'s JSON report on each program."""
    argv = dict(COMMANDS)[command]
    return {key: json.loads(run_command(DrgnTarget(prog, "vmcore"), command, argv,
                                        fmt="json")[0])
            for key, prog in progs.items()}


@pytest.mark.parametrize("command", [c for c, _ in COMMANDS])
def test_reports_identical_without_dwarf(
    progs: tuple[drgn.Program, drgn.Program, Path], command: str
) -> None:
    symtab, dwarf, _vmlinux = progs
    argv = dict(COMMANDS)[command]
    docs = _json_reports({"symtab": symtab, "dwarf": dwarf}, command)
    assert docs["symtab"]["target"]["debuginfo"] == "btf+symtab"
    assert docs["dwarf"]["target"]["debuginfo"] == "dwarf"
    assert without_debuginfo(docs["symtab"]) == without_debuginfo(docs["dwarf"])
    tables = [run_command(DrgnTarget(prog, "vmcore"), command, argv)[0].splitlines()
              for prog in (symtab, dwarf)]
    assert [x for x in tables[0] if x.startswith("note:")] == [
        x for x in tables[1] if x.startswith("note:")]  # no kallsyms-size note


@pytest.mark.parametrize("command", [c for c, _ in COMMANDS if c not in ("ftrace", "bt")])
def test_kallsyms_name_as_symtab(
    progs: tuple[drgn.Program, drgn.Program, Path], command: str
) -> None:
    """``elf_sizes=False`` (the command line for every command but ``ftrace``
    and ``bt``): the dump's kallsyms instead of the file's ``.symtab``, and
    reports that show no symbol sizes are the same as with the DWARF."""
    _symtab, dwarf, _vmlinux = progs
    kallsyms: drgn.Program = _symtab.cache["test_kallsyms"]
    assert symtab_finder.symtab_symbols(kallsyms) is None  # the .symtab never parsed
    docs = _json_reports({"kallsyms": kallsyms, "dwarf": dwarf}, command)
    assert docs["kallsyms"]["target"]["debuginfo"] == "btf+kallsyms"
    assert without_debuginfo(docs["kallsyms"]) == without_debuginfo(docs["dwarf"])


def test_kallsyms_without_data_symbols_use_symtab(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without CONFIG_KALLSYMS_ALL (no ``init_task`` in kallsyms) or
    whose kallsyms cannot be read: the file's ``.symtab`` after all."""
    core = _core(LP61, "vmcore.elf.xz")
    vmlinux = LP61 / "vmlinux.debug"
    real = btf_finder._symbol_address

    def no_data(prog: drgn.Program, name: str) -> int | None:
        return None if name == "init_task" else real(prog, name)

    with monkeypatch.context() as m:
        m.setattr(btf_finder, "_symbol_address", no_data)
        prog = _open(core, vmlinux, False, elf_sizes=False)
    assert btf_finder.debuginfo_source(prog) == "btf+symtab"
    assert "klpinspect_vmlinux_kallsyms" not in prog.enabled_symbol_finders()

    def unreadable(prog: drgn.Program) -> Any:
        raise LookupError("no kallsyms")

    with monkeypatch.context() as m:
        m.setattr(btf_finder, "load_vmlinux_kallsyms", unreadable)
        prog = _open(core, vmlinux, False, elf_sizes=False)
    assert btf_finder.debuginfo_source(prog) == "btf+symtab"


def _fields(sym: drgn.Symbol) -> tuple[Any, ...]:
    return sym.name, sym.address, sym.size, sym.binding, sym.kind


def test_symbols_as_drgn_finds_them(progs: tuple[drgn.Program, drgn.Program, Path]) -> None:
    """Names and addresses answered as libdrgn's ELF symbol search answers them
    (the DWARF program's finder is drgn's own over the same file)."""
    symtab, dwarf, vmlinux = progs
    assert not btf_finder.has_kernel_dwarf(symtab)
    table, strtab, _order, _sections = read_elf_symtab(str(vmlinux))
    # what klpinspect names addresses with: no FILE or SECTION entries, which
    # drgn's finder also returns when it enumerates (its name look-up too)
    kinds = (drgn.SymbolKind.FUNC, drgn.SymbolKind.OBJECT, drgn.SymbolKind.UNKNOWN)
    rows = [s for s in dwarf.symbols() if s.name and s.address and s.kind in kinds]
    rng = random.Random(7)
    sample = rng.sample(rows, 300)
    labels = ("ftrace_caller", "ftrace_regs_caller", "livepatch_handler", "init_task",
              "modules", "__start_BTF", "_stext")
    names = {s.name for s in sample} | {n for n in labels if n in {s.name for s in rows}}
    for name in sorted(names):
        assert _fields(symtab.symbol(name)) == _fields(dwarf.symbol(name)), name
    addresses = {s.address for s in sample} | {s.address + s.size // 2 for s in sample}
    addresses |= {rng.randrange(0xC000000000000000, 0xC000000001000000) for _ in range(200)}
    for address in sorted(addresses):
        try:
            want: tuple[Any, ...] | None = _fields(dwarf.symbol(address))
        except LookupError:
            want = None
        try:
            got: tuple[Any, ...] | None = _fields(symtab.symbol(address))
        except LookupError:
            got = None
        assert got == want, hex(address)
    assert len(table) > 0 and len(strtab) > 0


def test_backtrace_note_without_dwarf(progs: tuple[drgn.Program, drgn.Program, Path]) -> None:
    """A backtrace on a program without the DWARF says what it lacks."""
    symtab, dwarf, _vmlinux = progs
    pid = symtab.cache["test_pid"]
    note = f"note: {BTF_SYMTAB_BACKTRACE_NOTE}"
    text, _status = run_command(DrgnTarget(symtab, "vmcore"), "bt", [str(pid)])
    assert note in text.splitlines()
    text, _status = run_command(DrgnTarget(dwarf, "vmcore"), "bt", [str(pid)])
    assert note not in text.splitlines()


def test_falls_back_to_dwarf(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BTF in the kernel, or no .symtab in the file: the DWARF is loaded."""
    core = _core(LP61, "vmcore.elf.xz")
    vmlinux = LP61 / "vmlinux.debug"

    def no_btf(prog: drgn.Program) -> Any:
        raise LookupError("the kernel has no BTF")

    with monkeypatch.context() as m:
        m.setattr(btf_finder, "_read_vmlinux_btf", no_btf)
        prog = _open(core, vmlinux, False)
        assert btf_finder.debuginfo_source(prog) == "dwarf"
        # drgn's own ELF symbols again, not the finder the BTF attempt registered
        assert "klpinspect_vmlinux_symtab" not in prog.enabled_symbol_finders()
        assert symtab_finder.symtab_symbols(prog) is None

    # a vmlinux without a .BTF section (a kernel without CONFIG_DEBUG_INFO_BTF,
    # Debian's 6.1): the dump is not searched for BTF at all
    assert symtab_finder.has_btf(str(vmlinux))
    assert not symtab_finder.has_btf(sys.executable)
    assert not symtab_finder.has_btf(str(REPO / "README.md"))
    with monkeypatch.context() as m:
        m.setattr(symtab_finder, "has_btf", lambda path: False)
        m.setattr(btf_finder, "_read_vmlinux_btf", no_btf)  # must not be reached
        prog = _open(core, vmlinux, False)
        assert btf_finder.debuginfo_source(prog) == "dwarf"
        assert "klpinspect_vmlinux_symtab" not in prog.registered_symbol_finders()

    def no_symtab(path: str) -> Any:
        raise TargetError(f"{path}: no .symtab")

    with monkeypatch.context() as m:
        m.setattr(symtab_finder, "read_elf_symtab", no_symtab)
        assert btf_finder.debuginfo_source(_open(core, vmlinux, False)) == "dwarf"


@pytest.mark.parametrize(("argv", "expected"), [
    (["toc"], "btf+kallsyms"),  # no sizes shown: the dump's kallsyms name alike
    (["ftrace"], "btf+symtab"),  # name+off/size: the ELF sizes
    (["--dwarf", "toc"], "dwarf"),
    (["bt", "130"], "dwarf"),
])
def test_cli_reads_dwarf_only_for_bt(argv: list[str], expected: str) -> None:
    core = _core(LP61, "vmcore.elf.xz")
    proc = subprocess.run(
        [sys.executable, "-m", "klpinspect", "-c", str(core), "-s",
         str(LP61 / "vmlinux.debug"), *argv],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout.splitlines()[0].endswith(f"debuginfo={expected}")
