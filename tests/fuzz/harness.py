"""Fuzzing real dumps: random bytes where klpinspect reads, through both back ends.

A *trial* writes 1..16 random bytes (random values, or zeroes) at a random
place of one region of :mod:`regions` (the bytes klpinspect reads) into a
private working copy of the fixture dump, runs ``audit``, ``stubs``,
``lpstack`` and ``bt`` through a back end, and puts the original bytes back.
The working copy is made once (``/dev/shm`` when there is room): a trial
costs two ``pwrite`` calls, not a 512 MiB copy.

Back ends run in worker processes (:mod:`worker_drgn`, and :mod:`worker_gdb`
inside ``gdb-multiarch -batch``) that open the dump once and loop over their
trials, printing one JSON line per command.  This process watches them:
a trial that takes longer than ``timeout`` seconds is a *hang* (the worker is
killed by its pid, the trial's bytes are restored, a new worker goes on with
the next trial); the workers run under ``RLIMIT_AS`` (bounded memory).

Outcomes per command: ``ok`` (exit 0, valid JSON), ``finding`` (exit 1, valid
JSON), ``error`` (exit 2 with one line), and the failures ``crash`` (an
exception other than the tool's own one-line errors, an ``internal error``,
or a multi-line message), ``badjson`` and ``hang``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from regions import region_map  # noqa: E402

__all__ = ("COMMANDS", "FAILURES", "Trial", "WorkCopy", "make_trials", "run_trials", "summarize")

#: (name, argv) run per trial; bt on the parked livepatched kthread (pid 130).
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("audit", ()),
    ("stubs", ()),
    ("lpstack", ()),
    ("bt", ("130",)),
)
FAILURES = ("crash", "badjson", "hang")
GDB = "gdb-multiarch"


@dataclass
class Trial:
    """One corruption: ``data`` (hex) written at file ``offset`` over ``original`` (hex)."""

    index: int
    region: str
    label: str
    offset: int
    data: str
    original: str


def make_trials(dump: Path, regions: dict[str, list[tuple[str, int, int]]], count: int,
                seed: int) -> list[Trial]:
    """``count`` trials, regions drawn uniformly, then a range, place, length, value."""
    rng = random.Random(seed)
    names = sorted(regions)
    out: list[Trial] = []
    with open(dump, "rb") as f:
        while len(out) < count:
            region = names[len(out) % len(names)] if len(out) < len(names) else rng.choice(names)
            label, off, size = rng.choice(regions[region])
            n = rng.randint(1, min(16, size))
            pos = off + rng.randrange(size - n + 1)
            data = bytes(n) if rng.random() < 0.3 else rng.randbytes(n)
            original = os.pread(f.fileno(), n, pos)
            if data == original:
                continue
            out.append(Trial(len(out), region, label, pos, data.hex(), original.hex()))
    return out


class WorkCopy:
    """A private copy of the dump that trials patch and restore in place."""

    def __init__(self, dump: Path, directory: str | None = None) -> None:
        if directory is None:
            shm = "/dev/shm"
            if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * dump.stat().st_size:
                directory = shm
        self.dir = tempfile.mkdtemp(prefix="klpinspect-fuzz-", dir=directory)
        self.path = Path(self.dir) / dump.name
        t0 = time.perf_counter()
        shutil.copyfile(dump, self.path)
        self.copy_seconds = time.perf_counter() - t0
        os.chmod(self.path, 0o600)

    def restore(self, trial: Trial) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes.fromhex(trial.original), trial.offset)
        finally:
            os.close(fd)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> WorkCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _limits(mem_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    os.setsid()  # its own process group: a hang is killed with all it started


def _worker_argv(backend: str, work: Path, symbols: Path, trials_file: Path,
                 out_file: Path) -> list[str]:
    if backend == "drgn":
        return [sys.executable, str(HERE / "worker_drgn.py"), str(work), str(symbols),
                str(trials_file), str(out_file)]  # fmt: skip
    gdb = shutil.which(GDB)
    if gdb is None:
        raise RuntimeError(f"{GDB} is not installed")
    argv = [str(trials_file), str(out_file), str(work)]
    return [gdb, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
            "-ex", f"file {symbols}", "-ex", f"core-file {work}",
            "-ex", f"source {REPO / 'gdb' / 'klpinspect.py'}",
            "-ex", f"python import sys; sys.argv = {argv!r}; "
                   f"sys.path.insert(0, {str(HERE)!r})",
            "-ex", f"source {HERE / 'worker_gdb.py'}"]  # fmt: skip


def _read_lines(path: Path, pos: int) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return [], pos
    end = data.rfind(b"\n") + 1
    lines = [json.loads(x) for x in data[:end].splitlines() if x.strip()]
    return lines, pos + end


def run_trials(backend: str, trials: Sequence[Trial], work: WorkCopy, symbols: Path, *,
               timeout: float = 60.0, mem_bytes: int = 6 << 30,
               log: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``trials`` on ``backend`` (``"drgn"`` or ``"gdb"``).

    :returns: (baseline results of the clean dump, per-command trial results)
    """
    results: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    remaining = list(trials)
    first = True
    tmp = Path(tempfile.mkdtemp(prefix="klpinspect-fuzzrun-"))
    try:
        while remaining or first:
            trials_file = tmp / "trials.json"
            out_file = tmp / "out.jsonl"
            out_file.unlink(missing_ok=True)
            trials_file.write_text(json.dumps({
                "baseline": first, "commands": COMMANDS,
                "trials": [asdict(t) for t in remaining],
            }))  # fmt: skip
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME",)}
            env["PYTHONPATH"] = str(REPO)
            proc = subprocess.Popen(
                _worker_argv(backend, work.path, symbols, trials_file, out_file),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO,
                preexec_fn=lambda: _limits(mem_bytes),
            )  # fmt: skip
            pos, current, started = 0, None, time.monotonic()
            open_deadline = time.monotonic() + max(timeout, 300.0)  # loading symbols
            done: set[int] = set()
            while True:
                lines, pos = _read_lines(out_file, pos)
                for ln in lines:
                    if ln.get("start") is not None:
                        current, started = ln["start"], time.monotonic()
                    elif ln.get("trial") == -1:
                        baseline.append(ln)
                    elif "trial" in ln:
                        results.append(ln)
                        done.add(ln["trial"])
                        if log is not None and ln["outcome"] in FAILURES:
                            print(f"  {backend} trial {ln['trial']} {ln['cmd']}: "
                                  f"{ln['outcome']}: {ln.get('message', '')[:200]}", file=log)
                finished = proc.poll() is not None
                if finished:
                    lines, pos = _read_lines(out_file, pos)
                    for ln in lines:
                        if "trial" in ln and ln.get("trial", -1) >= 0:
                            results.append(ln)
                            done.add(ln["trial"])
                    break
                now = time.monotonic()
                late = (current is None and now > open_deadline) or (
                    current is not None and current not in done and now - started > timeout)
                if late:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.05)
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            first = False
            # The trial that was running when the worker stopped: restore, record.
            by_index = {t.index: t for t in remaining}
            if current is not None and current >= 0 and current not in done:
                work.restore(by_index[current])
                ran = {r["cmd"] for r in results if r["trial"] == current}
                outcome = "hang" if proc.returncode == -signal.SIGKILL else "crash"
                for name, _ in COMMANDS:
                    if name not in ran:
                        results.append({"trial": current, "cmd": name, "outcome": outcome,
                                        "message": err.strip()[-300:], "codes": []})
                done.add(current)
            elif current is None and proc.returncode not in (0, None):
                raise RuntimeError(f"{backend} worker failed before any trial: {err[-2000:]}")
            remaining = [t for t in remaining if t.index not in done]
            if not remaining:
                break
            if current is None:
                raise RuntimeError(f"{backend} worker made no progress: {err[-2000:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return baseline, results


def summarize(trials: Sequence[Trial], baseline: Sequence[dict[str, Any]],
              results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per region: outcome counts, new finding codes, and the silent corruptions.

    ``silent``: trials whose output changed (so the tool read the bytes) but
    that added no finding in any command; ``unchanged``: output identical to
    the clean dump's in every command (the bytes were not read, or did not
    matter to any output).
    """
    base = {b["cmd"]: b for b in baseline}
    by_trial: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in results:
        by_trial[r["trial"]].append(r)
    table: dict[str, dict[str, Any]] = {}
    for t in trials:
        row = table.setdefault(t.region, {
            "trials": 0, "outcomes": collections.Counter(), "codes": collections.Counter(),
            "silent": 0, "unchanged": 0, "detected": 0,
        })  # fmt: skip
        row["trials"] += 1
        changed = new_finding = False
        codes: set[str] = set()
        for r in by_trial[t.index]:
            row["outcomes"][r["outcome"]] += 1
            b = base.get(r["cmd"], {})
            if r.get("digest") != b.get("digest"):
                changed = True
            new = collections.Counter(r.get("codes", [])) - collections.Counter(b.get("codes", []))
            if new or r["outcome"] == "error":
                new_finding = True
                codes |= set(new) or {"exit-2"}
        for c in codes:
            row["codes"][c] += 1
        if new_finding:
            row["detected"] += 1
        elif changed:
            row["silent"] += 1
        else:
            row["unchanged"] += 1
    return table


def render_table(table: dict[str, dict[str, Any]], title: str) -> str:
    from tabulate import tabulate

    rows = []
    for region, row in sorted(table.items()):
        outs = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
        codes = ", ".join(f"{k} {v}" for k, v in row["codes"].most_common(6))
        rows.append([region, row["trials"], outs, row["detected"], row["silent"],
                     row["unchanged"], codes])  # fmt: skip
    head = ["region", "trials", "outcomes (per command)", "detected", "silent (read, no finding)",
            "unchanged", "new finding codes (trials)"]  # fmt: skip
    return f"{title}\n" + tabulate(rows, head, tablefmt="github") + "\n"


def iter_failures(results: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (r for r in results if r["outcome"] in FAILURES)


def fixture_paths(version: str = "6.1") -> tuple[Path, Path]:
    """(decompressed vmcore.elf, vmlinux.debug) of a fixture, unpacked into the cache once."""
    sys.path.insert(0, str(REPO / "tests"))
    import conftest

    if version == "6.1":
        return conftest.unpacked("vmcore.elf.xz"), conftest.fixture_file("vmlinux.debug")
    raise ValueError(version)


def regions_for(dump: Path, symbols: Path) -> dict[str, list[tuple[str, int, int]]]:
    return region_map(dump, symbols)
