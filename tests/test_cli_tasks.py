"""The CLI's ``bt`` task forms and its small informational options, on the fixture dump."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klpinspect", *map(str, args)], capture_output=True, text=True,
        timeout=600, check=False, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip


def test_bt_by_task_address(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    from drgn.helpers.linux.pid import find_task

    from klpinspect.backends.drgn.program import open_program

    prog, _ = open_program(core=str(vmcore_elf), symbols=[str(vmlinux_debug)])
    address = int(find_task(prog, 130).value_())
    by_pid = cli("-c", vmcore_elf, "-s", vmlinux_debug, "bt", "130")
    for form in (f"{address:x}", f"{address:#x}"):
        by_address = cli("-c", vmcore_elf, "-s", vmlinux_debug, "bt", form)
        assert by_address.returncode == 0, by_address.stderr
        assert by_address.stdout == by_pid.stdout
    assert "pid 130 (rk_target)" in by_pid.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["bt"], "klpinspect: no crashed task in this target (panic_cpu is not set): "
                 "give a PID or task address"),
        (["bt", "c000000012345678"], "klpinspect: no task at address 0xc000000012345678"),
        (["bt", "zz"], "klpinspect bt: argument PID|TASK: not a pid or task address: 'zz'"),
    ],
)
def test_bt_errors_one_line(args: list[str], message: str, vmcore_elf: Path,
                            vmlinux_debug: Path) -> None:
    proc = cli("-c", vmcore_elf, "-s", vmlinux_debug, *args)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message]


def test_gdb_script_line() -> None:
    ours = cli("--gdb-script")
    module = subprocess.run([sys.executable, "-m", "klpinspect.gdb"], capture_output=True,
                            text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert ours.returncode == 0
    loader = REPO / "klpinspect" / "backends" / "gdb" / "load.py"
    assert ours.stdout == module.stdout == f"source {loader}\n"
