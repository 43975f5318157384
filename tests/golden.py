"""Golden answers: what every front end printed for every fixture dump, recorded once.

The refactor of issue 11 must not change behaviour.  This module knows the
cases (fixture dump x back end x command, the damaged dumps the other tests
build included), runs them, and compares them with what
``tests/data/golden/*.json`` recorded before the move.

* drgn: the ``klpinspect`` CLI (``--format json``): stdout, exit status and
  stderr.  Recording runs the real CLI in a subprocess; the test runs
  :func:`klpinspect.cli.main` in-process with one opened program per dump
  (the same code path after ``open_target``).
* gdb: ``gdb-multiarch`` in batch mode, one session per dump, every command's
  JSON through ``pipe ... | cat > FILE``, and the ``klp-*:`` error lines.

Big documents (a whole audit is ~600 KB) are stored as the sha256 of the
exact text plus a summary (modules, stub kinds, finding codes, tasks), so
a mismatch still says what changed; small ones are stored whole.

Record (before a change that must not alter behaviour, or after one that
must, saying why in the commit)::

    KLPINSPECT_CACHE=/work/main/.cache python3 tests/golden.py
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import FIXTURES, LP61, unpacked

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "golden"
LP72 = FIXTURES / "ppc64le-7.2-lp"
GDB = "gdb-multiarch"
# documents up to this size are stored whole
WHOLE_LIMIT = 16 * 1024

# name -> CLI arguments after the target options (pid: the fixture's parked task)
COMMANDS_61 = {
    "audit": ["audit"],
    "stubs": ["stubs"],
    "toc": ["toc", "--callsites"],
    "lpstack": ["lpstack"],
    "bt": ["bt", "130"],
}
COMMANDS_72 = {**COMMANDS_61, "bt": ["bt", "134"]}
BAD_ARGS = {"bt-nosuch": ["bt", "999999"], "stubs-nosuch": ["stubs", "xfz"]}


def dump_61(name: str) -> Path:
    return unpacked(name) if name.endswith(".xz") else LP61 / name


def dump_72() -> Path:
    return unpacked("vmcore.elf.xz", LP72)


# -- damaged dumps (as tests/test_cli_dump.py and tests/test_gdb.py build them) ---------


def cut_file(src: Path, dst: Path, size: int) -> Path:
    """The first ``size`` bytes of ``src``: PT_LOAD promises more than the file has."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        remaining = size
        while remaining:
            chunk = fin.read(min(remaining, 1 << 22))
            if not chunk:
                break
            fout.write(chunk)
            remaining -= len(chunk)
    return dst


def cut_memory(src: Path, dst: Path, size: int, patches: Sequence[tuple[int, bytes]] = ()) -> Path:
    """The first ``size`` bytes of memory of the fixture ELF vmcore, PT_LOAD cut to match."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        head = bytearray(fin.read(0x10000))
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        (phnum,) = struct.unpack_from("<H", head, 0x38)
        for i in range(phnum):
            ph = phoff + 56 * i
            if struct.unpack_from("<I", head, ph)[0] == 1:  # PT_LOAD
                assert struct.unpack_from("<Q", head, ph + 8)[0] == 0x10000
                struct.pack_into("<QQ", head, ph + 32, size, size)
        fout.write(head)
        remaining = size
        while remaining:
            chunk = fin.read(min(remaining, 1 << 22))
            fout.write(chunk)
            remaining -= len(chunk)
        for offset, data in patches:
            fout.seek(0x10000 + offset)
            fout.write(data)
    return dst


def hash_patch(elf: Path, debug: Path) -> tuple[int, bytes]:
    """(offset in memory, bytes): ``MMU_FTR_TYPE_RADIX`` cleared in the 6.1 fixture."""
    from klpinspect.backends.drgn.program import open_program

    prog, _kind = open_program(core=str(elf), symbols=[str(debug)])
    features = prog["cur_cpu_spec"].mmu_features
    paddr = int(features.address_) - 0xC000000000000000
    return paddr, struct.pack("<I", int(features) & ~0x40)


@dataclass
class Dumps:
    """Every dump file the cases use, the damaged ones built in ``workdir``."""

    elf: Path
    kdump: Path
    qemu: Path
    vmcoreinfo: Path
    wrong_vmcoreinfo: Path
    debug61: Path
    elf72: Path
    debug72: Path
    cut_raw: Path
    cut_1m: Path
    cut_mem: Path
    hash_mmu: Path
    workdir: Path


def make_dumps(workdir: Path) -> Dumps:
    elf = dump_61("vmcore.elf.xz")
    debug61 = LP61 / "vmlinux.debug"
    info = workdir / "vmcoreinfo-wrong.txt"
    info.write_text(
        (LP61 / "vmcoreinfo.txt").read_text().replace("KERNELOFFSET=0", "KERNELOFFSET=1000000")
    )
    return Dumps(
        elf=elf,
        kdump=LP61 / "vmcore.kdump",
        qemu=dump_61("vmcore.qemu.elf.xz"),
        vmcoreinfo=LP61 / "vmcoreinfo.txt",
        wrong_vmcoreinfo=info,
        debug61=debug61,
        elf72=dump_72(),
        debug72=LP72 / "vmlinux.debug",
        cut_raw=cut_file(elf, workdir / "cut-raw.core", 64 << 20),
        cut_1m=cut_file(elf, workdir / "cut-1m.core", 1 << 20),
        cut_mem=cut_memory(elf, workdir / "cut-mem.elf", 64 << 20),
        hash_mmu=cut_memory(elf, workdir / "hash.elf", 64 << 20, [hash_patch(elf, debug61)]),
        workdir=workdir,
    )


# -- the cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command over one dump: ``name`` is the golden file's stem."""

    name: str
    target: tuple[str, ...]  # target options, as Dumps attribute names and literals
    argv: tuple[str, ...]


def drgn_cases() -> list[Case]:
    out: list[Case] = []
    forms = {
        "61-elf": ("-c", "@elf", "-s", "@debug61"),
        "61-kdump": ("-c", "@kdump", "-s", "@debug61"),
        "61-qemu": ("-c", "@qemu", "-s", "@debug61"),
        "61-qemu-vmcoreinfo": ("-c", "@qemu", "--vmcoreinfo", "@vmcoreinfo", "-s", "@debug61"),
    }
    for form, target in forms.items():
        for cmd, argv in COMMANDS_61.items():
            out.append(Case(f"drgn-{form}-{cmd}", target, tuple(argv)))
    for cmd, argv in BAD_ARGS.items():
        out.append(Case(f"drgn-61-elf-{cmd}", forms["61-elf"], tuple(argv)))
    for cmd, argv in COMMANDS_72.items():
        out.append(Case(f"drgn-72-elf-{cmd}", ("-c", "@elf72", "-s", "@debug72"), tuple(argv)))
    damaged = {
        "cut-raw": ("-c", "@cut_raw", "-s", "@debug61"),
        "cut-1m": ("-c", "@cut_1m", "-s", "@debug61"),
        "cut-mem": ("-c", "@cut_mem", "-s", "@debug61"),
        "hash-mmu": ("-c", "@hash_mmu", "-s", "@debug61"),
    }
    for form, target in damaged.items():
        for cmd in ("audit", "lpstack"):
            out.append(Case(f"drgn-{form}-{cmd}", target, (cmd,)))
    out.append(Case("drgn-cut-mem-bt", damaged["cut-mem"], ("bt", "130")))
    out.append(
        # ftrace takes the vmlinux's .symtab (ELF sizes), biased by the wrong
        # KERNELOFFSET; the other commands name from the dump's kallsyms,
        # which the KERNELOFFSET does not move, and answer as with the right one
        Case("drgn-wrong-vmcoreinfo-ftrace",
             ("-c", "@qemu", "--vmcoreinfo", "@wrong_vmcoreinfo", "-s", "@debug61"), ("ftrace",))
    )
    return out


# gdb: one session per dump; (session name, core, symbols, commands)
def gdb_sessions() -> list[tuple[str, str, str, dict[str, list[str]]]]:
    return [
        ("61-elf", "@elf", "@debug61", {**COMMANDS_61, **BAD_ARGS}),
        ("61-qemu", "@qemu", "@debug61", COMMANDS_61),
        ("72-elf", "@elf72", "@debug72", COMMANDS_72),
        ("cut-raw", "@cut_raw", "@debug61", {"audit": ["audit"], "lpstack": ["lpstack"]}),
        ("cut-mem", "@cut_mem", "@debug61",
         {"audit": ["audit"], "lpstack": ["lpstack"], "bt": ["bt", "130"]}),
        ("hash-mmu", "@hash_mmu", "@debug61", {"audit": ["audit"], "lpstack": ["lpstack"]}),
    ]


def resolve(dumps: Dumps, args: Sequence[str]) -> list[str]:
    return [str(getattr(dumps, a[1:])) if a.startswith("@") else a for a in args]


# -- results -----------------------------------------------------------------------------


def summarize(doc: Any) -> dict[str, Any]:
    """What a big report holds, in a few lines: enough to see what a change changed."""
    if not isinstance(doc, dict):
        return {"type": type(doc).__name__}
    out: dict[str, Any] = {
        "keys": list(doc),
        "target": doc.get("target"),
        "kernel": doc.get("kernel"),
    }
    mods = doc.get("modules") or []
    out["modules"] = len(mods)
    out["stub_kinds"] = dict(
        sorted(Counter(s["kind"] for m in mods for s in m.get("stubs", [])).items())
    )
    out["toc_sources"] = dict(sorted(Counter(m.get("toc_source") for m in mods).items()))
    findings = doc.get("findings") or []
    out["findings"] = dict(
        sorted(Counter(f"{f['severity']}:{f['code']}" for f in findings).items())
    )
    out["tasks"] = [t.get("pid") for t in doc.get("tasks") or []]
    return out


def result_record(
    stdout: str, status: int | None, stderr: str, workdir: Path | None = None
) -> dict[str, Any]:
    """What is stored for one run: the document (whole or hashed), exit status, stderr.

    The damaged dumps' temporary directory reads ``$WORK`` in both.
    """
    if workdir is not None:
        stdout = stdout.replace(str(workdir), "$WORK")
        stderr = stderr.replace(str(workdir), "$WORK")
    rec: dict[str, Any] = {"status": status, "stderr": stderr}
    try:
        doc = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
        rec["stdout"] = stdout
    if doc is not None:
        if len(stdout) <= WHOLE_LIMIT:
            rec["json"] = doc
            rec["text_sha256"] = hashlib.sha256(stdout.encode()).hexdigest()
        else:
            rec["sha256"] = hashlib.sha256(stdout.encode()).hexdigest()
            rec["canonical_sha256"] = hashlib.sha256(
                json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
            rec["size"] = len(stdout)
            rec["summary"] = summarize(doc)
    return rec


def run_cli_subprocess(args: Sequence[str]) -> tuple[str, int, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KLPINSPECT_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "klpinspect", *args], capture_output=True, text=True,
        env=env, timeout=600, check=False, cwd=REPO,
    )
    return proc.stdout, proc.returncode, proc.stderr


@contextlib.contextmanager
def cached_targets() -> Iterator[None]:
    """``klpinspect.cli.open_target`` opening each target once (for in-process runs)."""
    from klpinspect import cli

    real: Callable[..., Any] = cli.open_target
    opened: dict[tuple[Any, ...], Any] = {}

    def open_once(args: Any) -> Any:
        # bt opens with the DWARF the other commands leave unread (cli._DWARF_COMMANDS)
        key = (args.core, tuple(args.symbols), args.vmcoreinfo, args.live, args.qemu,
               args.dwarf or args.command in cli._DWARF_COMMANDS)
        if key not in opened:
            try:
                opened[key] = real(args)
            except Exception as err:  # the CLI reports it; remember it like a target
                opened[key] = err
        got = opened[key]
        if isinstance(got, Exception):
            raise got
        return got

    cli.open_target = open_once  # type: ignore[assignment]
    try:
        yield
    finally:
        cli.open_target = real  # type: ignore[assignment]


def run_cli_inprocess(args: Sequence[str]) -> tuple[str, int, str]:
    from klpinspect import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return out.getvalue(), status, err.getvalue()


def drgn_argv(dumps: Dumps, case: Case) -> list[str]:
    return [*resolve(dumps, case.target), "--format", "json", *case.argv]


def run_gdb_session(
    dumps: Dumps, core: str, symbols: str, commands: dict[str, list[str]], out: Path
) -> dict[str, dict[str, Any]]:
    """One gdb session: ``{command name: record}``; stderr lines of ``klp-*`` go with
    the command that printed them (commands run in order, each marked on stdout)."""
    gdb = shutil.which(GDB)
    if gdb is None:
        raise RuntimeError(f"{GDB} is not installed")
    script = REPO / "gdb" / "klpinspect.py"
    args = [
        gdb, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
        "-ex", f"file {resolve(dumps, [symbols])[0]}",
        "-ex", f"core-file {resolve(dumps, [core])[0]}", "-ex", f"source {script}",
    ]
    out.mkdir(parents=True, exist_ok=True)
    for name, argv in commands.items():
        path = out / f"{name}.json"
        path.unlink(missing_ok=True)
        line = " ".join(["klp-" + argv[0], *argv[1:], "--format", "json"])
        # stderr of each command to its own file: gdb prints a command's error there
        args += ["-ex", f"python gdb.write('@@ {name}\\n', gdb.STDERR)",
                 "-ex", f"pipe {line} | cat > {path}"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    if proc.returncode < 0 or "Traceback" in proc.stderr:
        raise RuntimeError(f"gdb failed: {proc.returncode}: {proc.stderr[-2000:]}")
    errors: dict[str, list[str]] = {name: [] for name in commands}
    current: str | None = None
    for line in proc.stderr.splitlines():
        if line.startswith("@@ "):
            current = line[3:]
        elif current is not None and line.startswith(("klp-", "klpinspect")):
            errors[current].append(line)
    results = {}
    for name in commands:
        path = out / f"{name}.json"
        text = path.read_text() if path.exists() else ""
        results[name] = result_record(text, None, "\n".join(errors[name]), dumps.workdir)
    return results


# -- recording and comparing -------------------------------------------------------------


def compute_all(dumps: Dumps, workdir: Path, *, inprocess: bool) -> dict[str, dict[str, Any]]:
    """Every case's record, by golden file stem."""
    results: dict[str, dict[str, Any]] = {}
    runner = run_cli_inprocess if inprocess else run_cli_subprocess
    ctx = cached_targets() if inprocess else contextlib.nullcontext()
    with ctx:
        for case in drgn_cases():
            stdout, status, stderr = runner(drgn_argv(dumps, case))
            results[case.name] = result_record(stdout, status, stderr, workdir)
    for session, core, symbols, commands in gdb_sessions():
        got = run_gdb_session(dumps, core, symbols, commands, workdir / "gdb" / session)
        for name, rec in got.items():
            results[f"gdb-{session}-{name}"] = rec
    return results


def load_golden() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*.json"))}


def main() -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="klp-golden-") as tmp:
        dumps = make_dumps(Path(tmp))
        results = compute_all(dumps, Path(tmp), inprocess=False)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for old in GOLDEN.glob("*.json"):
        old.unlink()
    total = 0
    for name, rec in sorted(results.items()):
        text = json.dumps(rec, indent=1, sort_keys=True) + "\n"
        (GOLDEN / f"{name}.json").write_text(text)
        total += len(text)
    print(f"{len(results)} golden records, {total:,} bytes in {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # this checkout's klpinspect, not an installed one
    sys.exit(main())
