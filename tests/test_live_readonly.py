"""``--live`` opens ``/proc/kcore`` read-only: the open flags, seen by strace.

drgn opens ``/proc/kcore`` in C (libdrgn), so an in-process hook on Python's
``open`` cannot see it: the test runs ``open_program(live=True)`` under
``strace -f`` (Debian ``strace``) and reads the flags of every open of kernel
memory.  The machine need not be ppc64 (the architecture check is bypassed in
the child) nor have a ``/proc/kcore`` (the flags of a failed open count as
well).  A second test hooks Python's own ``open``/``os.open`` in process.
"""

from __future__ import annotations

import builtins
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from klpinspect.errors import KlpError

REPO = Path(__file__).resolve().parent.parent

# Kernel memory: what a live reader may open, never for writing.
KERNEL_MEMORY = re.compile(r'"(/proc/kcore|/dev/mem|/dev/kmem|/proc/\d+/mem|/sys/kernel/[^"]*)"')
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")

CHILD = """
import platform, sys
platform.machine = lambda: "ppc64le"   # reach the open on any host
from klpinspect.backends.drgn.program import open_program
from klpinspect.errors import KlpError
try:
    open_program(live=True, symbols=[])
    print("OPENED")
except KlpError as e:
    print("ERROR", e)
"""


def test_live_opens_kcore_read_only(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is not installed (Debian: apt-get install strace)")
    log = tmp_path / "strace.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(log),
         sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(("OPENED", "ERROR")), proc.stdout
    opens = [ln for ln in log.read_text().splitlines() if KERNEL_MEMORY.search(ln)]
    kcore = [ln for ln in opens if '"/proc/kcore"' in ln]
    assert kcore, log.read_text()[-2000:]
    for ln in kcore:
        assert "O_RDONLY" in ln, ln
    for ln in opens:
        assert not any(f in ln for f in WRITE_FLAGS), ln


def test_live_python_opens_nothing_for_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    """klpinspect's own Python code opens no file for writing on the live path."""
    from klpinspect.backends.drgn import program

    seen: list[tuple[str, Any]] = []
    real_open, real_os_open = builtins.open, os.open

    def rec_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        seen.append((str(file), mode))
        return real_open(file, mode, *a, **k)

    def rec_os_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
        seen.append((str(path), flags))
        return real_os_open(path, flags, *a, **k)

    import platform

    monkeypatch.setattr(platform, "machine", lambda: "ppc64le")
    monkeypatch.setattr(builtins, "open", rec_open)
    monkeypatch.setattr(os, "open", rec_os_open)
    try:
        program.open_program(live=True, symbols=[])
    except KlpError:
        pass  # no /proc/kcore here, or not a ppc64 kernel: the flags are what counts
    for path, mode in seen:
        if isinstance(mode, str):
            assert not set(mode) & set("wax+"), (path, mode)
        else:
            assert not mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC), (path, mode)
