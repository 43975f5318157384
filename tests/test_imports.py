"""``klpinspect --help`` and ``klpinspect ko`` start without the heavy back ends.

Linting a ``.ko`` needs no kernel: neither drgn (its import alone loads
libdrgn and the Linux helpers) nor capstone (the disassembler) may be
imported on the way.  Each case runs the command line in a fresh interpreter
and looks at ``sys.modules`` when it exits; the module file linted is
assembled at test time from ``tests/ko/calls_elfv2.s``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from asmutil import assemble

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("drgn", "_drgn", "capstone")

_PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
from klpinspect.cli import main
try:
    status = main({argv!r})
except SystemExit as e:
    status = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"status": status, "heavy": heavy}}), file=sys.__stderr__)
"""


def _probe(argv: list[str]) -> dict[str, object]:
    code = _PROBE.format(repo=str(REPO), argv=argv, heavy=HEAVY)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    last = p.stderr.strip().splitlines()[-1]
    result: dict[str, object] = json.loads(last)
    return result


@pytest.mark.parametrize("argv", [["--help"], ["ko", "--help"], ["audit", "--help"]])
def test_help_imports_no_back_end(argv: list[str]) -> None:
    r = _probe(argv)
    assert r["status"] == 0
    assert r["heavy"] == []


def test_ko_imports_no_back_end() -> None:
    ko = assemble(Path(__file__).resolve().parent / "ko" / "calls_elfv2.s").obj
    r = _probe(["ko", "--format", "json", str(ko)])
    assert r["status"] in (0, 1)  # linted: clean, or error findings
    assert r["heavy"] == []


def test_probe_sees_drgn_when_a_target_is_opened(tmp_path: Path) -> None:
    """The probe can fail: opening a (bad) core goes through the drgn back end."""
    core = tmp_path / "not-a-core"
    core.write_bytes(b"\x7fELF" + bytes(60))
    r = _probe(["-c", str(core), "stubs"])
    assert r["status"] == 2
    assert "drgn" in r["heavy"]
