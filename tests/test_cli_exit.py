"""``klpinspect`` leaves without the interpreter's teardown (:func:`klpinspect.cli.run`):
its output and status those of :func:`klpinspect.cli.main` (which the tests
call in-process), the exit handlers run (the QMP back end removes its
scratch files in one), a closed pipe no error, and a profiler or tracer still
gets its normal exit (``python -m cProfile -o`` writes its file at exit)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_btf_dump import _core

from klpinspect.cli import main

REPO = Path(__file__).resolve().parent.parent

_RUN = """
import atexit, sys
sys.path.insert(0, {repo!r})
atexit.register(lambda: open({mark!r}, "w").write("exit handlers ran"))
sys.argv = ["klpinspect", *{argv!r}]
from klpinspect.cli import run
run()
"""


def _run(argv: list[str], mark: Path) -> subprocess.CompletedProcess[str]:
    code = _RUN.format(repo=str(REPO), mark=str(mark), argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)


def test_output_status_and_exit_handlers(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    p = _run(["explain", "CALLSITE_NO_TOC_RESTORE"], mark)
    assert p.returncode == 0, p.stderr
    assert "CALLSITE_NO_TOC_RESTORE" in p.stdout and p.stdout.endswith("\n")
    assert mark.read_text() == "exit handlers ran"
    mark.unlink()
    p = _run(["explain", "NO_SUCH_CODE"], mark)
    assert p.returncode == 2 and "NO_SUCH_CODE" in p.stderr
    assert mark.read_text() == "exit handlers ran"


@pytest.mark.dump
def test_closed_pipe(tmp_path: Path) -> None:
    """A reader that stops early (``| head``): no traceback, no 'Exception ignored'."""
    core = _core(FIXTURES / "ppc64le-6.1-lp", "vmcore.elf.xz")
    argv = ["-c", str(core), "--format", "json", "stubs"]  # ~450 KB: more than a pipe holds
    code = _RUN.format(repo=str(REPO), mark=str(tmp_path / "mark"), argv=argv)
    r, w = os.pipe()
    with subprocess.Popen([sys.executable, "-c", code], stdout=w, stderr=subprocess.PIPE,
                          text=True) as p:
        os.close(w)
        with os.fdopen(r, "rb") as reader:
            assert reader.read(10)
        _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert err == ""


def _cmd(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, *args], capture_output=True, cwd=REPO, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, check=False)


@pytest.mark.parametrize("argv", [["explain"], ["explain", "STUB_TOC_MISMATCH"],
                                  ["explain", "NO_SUCH_CODE"], ["-c", "/nonexistent", "audit"]])
def test_output_and_status_are_mains(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    p = _cmd("-m", "klpinspect", *argv)
    assert p.returncode == status
    assert p.stdout.decode() == out.getvalue()
    assert p.stderr.decode() == err.getvalue()
    assert len(p.stdout) > 1000 or argv[0] != "explain" or len(argv) > 1


def test_a_profiler_gets_its_normal_exit(tmp_path: Path) -> None:
    prof = tmp_path / "klp.prof"
    p = _cmd("-m", "cProfile", "-o", str(prof), "-m", "klpinspect", "explain")
    assert p.returncode == 0, p.stderr
    assert prof.stat().st_size > 0
