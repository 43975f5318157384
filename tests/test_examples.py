"""examples/*.py on the fixture dumps, run both ways: plain python3 and inside drgn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from asmutil import assemble

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), DRGN_DISABLE_PLUGINS="klpinspect",
                DRGN_PLUGINS="klpinspect=klpinspect.backends.drgn.commands")


def run_python(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)],
                          capture_output=True, text=True, timeout=600, check=False, env=_env())


def run_drgn(name: str, core: Path, vmlinux: Path, *args: str | Path
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drgn", "-q", "-c", str(core), "-s", str(vmlinux),
         str(EXAMPLES / name), *map(str, args)],
        capture_output=True, text=True, timeout=600, check=False, env=_env(),
    )  # fmt: skip


def test_audit_jsonl(vmcore_elf: Path, vmcore_kdump: Path, vmlinux_debug: Path,
                     tmp_path: Path) -> None:
    out = tmp_path / "audits.jsonl"
    proc = run_python("audit_jsonl.py", "-o", out, vmcore_elf, vmlinux_debug,
                      tmp_path / "missing", vmlinux_debug)
    assert proc.returncode == 2, proc.stderr  # the missing dump is unusable
    proc = run_drgn("audit_jsonl.py", vmcore_kdump, vmlinux_debug, "-o", out)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["core"] for line in lines] == [str(vmcore_elf), str(tmp_path / "missing"),
                                                str(vmcore_kdump)]
    assert "no such file" in lines[1]["error"] and lines[1]["exit_status"] == 2
    elf, kdump = lines[0]["report"], lines[2]["report"]
    assert elf["schema"] == "klpinspect/1" and lines[0]["exit_status"] == 0
    # the drgn-opened kdump dump reads module memory: the same modules and stubs
    assert [m["name"] for m in elf["modules"]] == [m["name"] for m in kdump["modules"]]
    assert len(elf["modules"]) == 40
    assert elf["modules"] == kdump["modules"]


@pytest.mark.parametrize("how", ["python", "drgn"])
def test_livepatch_tasks(how: str, vmcore_elf: Path, vmcore_kdump: Path,
                         vmlinux_debug: Path) -> None:
    if how == "python":
        proc = run_python("livepatch_tasks.py", vmcore_elf, vmlinux_debug)
    else:
        proc = run_drgn("livepatch_tasks.py", vmcore_kdump, vmlinux_debug)
    assert proc.returncode == 0, proc.stderr
    # the fixture README: pid 130 parked inside the livepatched function, two frames
    assert proc.stdout.splitlines() == [
        "130 rk_target: 2 livepatch frame(s)",
        "  #0 returns to rk_target_thread+0x2c/0x5c [rk_target] with r2 0xc008000000f68100 "
        "(rk_target)",
        "  #1 returns to livepatch_rk_target_work+0x30/0x58 [rk_lp] with r2 0xc008000000f68100 "
        "(rk_target)",
    ]


def test_livepatch_tasks_bad_dump(tmp_path: Path, vmlinux_debug: Path) -> None:
    proc = run_python("livepatch_tasks.py", tmp_path / "none", vmlinux_debug)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"livepatch_tasks: {tmp_path / 'none'}: "
                                                "no such file"]


def test_ko_lint_ci(vmcore_elf: Path, vmlinux_debug: Path, modules_dir: Path) -> None:
    proc = run_python("ko_lint_ci.py", modules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "ko_lint_ci: 40 file(s), 0 error(s)"
    proc = run_python("ko_lint_ci.py", vmcore_elf, vmlinux_debug, modules_dir)
    assert proc.returncode == 0, proc.stderr
    # the dump's 40 loaded modules' .ko files are linted too
    assert proc.stdout.splitlines()[-1] == "ko_lint_ci: 80 file(s), 0 error(s)"
    proc = run_drgn("ko_lint_ci.py", vmcore_elf, vmlinux_debug, modules_dir)
    assert proc.returncode == 0, proc.stderr


def test_ko_lint_ci_fails_the_job(modules_dir: Path) -> None:
    """A hand-written ELFv2 object with calls the loader rejects: exit 1, one line each."""
    bad = assemble(REPO / "tests" / "ko" / "calls_elfv2.s").obj
    proc = run_python("ko_lint_ci.py", modules_dir / "rk_lib.ko", bad)
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stdout.splitlines() if ": error: KO_CALL_NEEDS_NOP: " in ln]
    assert len(errors) == 3 and all(ln.startswith(f"{bad}:.text+0x") for ln in errors)
    assert any(": warning: KO_SIBLING_CALL: " in ln for ln in proc.stdout.splitlines())
    assert proc.stdout.splitlines()[-1] == "ko_lint_ci: 2 file(s), 3 error(s)"
