"""``klpinspect`` leaves without the interpreter's teardown (:func:`klpinspect.cli.run`):
its output flushed, the exit handlers run (the QMP back end removes its
scratch files in one), its status kept, a closed pipe no error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_btf_dump import _core

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
