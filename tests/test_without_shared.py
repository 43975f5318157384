"""A clone without ``../shared`` runs what a stock kernel can serve: proven.

pytest runs in a subprocess on a selection of this suite with
``$KLPINSPECT_FIXTURES`` pointing at a directory that does not exist (as
``../shared/fixtures`` is absent beside a clone outside this project) and
``$KLP_STOCK_DUMP`` at this session's stock-kernel dump (``stock_dump``:
the dump of ``tests/test_debian_kernels.py`` when CI booted one, else the
lab's cache, else the lab boots bookworm).  It must exit 0, run the
stock-kernel tests and the unit tests, print nothing per livepatch-fixture
test (no skips, no errors) and one line naming the missing fixtures, whose
count is every fixture test of the selection that did not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import ABSENT, KERNELS, REPO
from stockdump import SESSION_DUMPS, StockDump

pytestmark = pytest.mark.stock

# stock-kernel tests; fixture tests stopped at their first fixture file
# (lp_fixture() in a module fixture) and deselected (the lp fixture); unit tests
SELECTION = ["tests/test_stock_dump.py", "tests/test_drgn_target.py",
             "tests/test_cli_dump.py", "tests/test_audit.py"]


def _pytest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
    )


def test_without_shared(stock_dump: StockDump, tmp_path: Path) -> None:
    fixtures = tmp_path / "no-shared" / "fixtures"
    junit = tmp_path / "junit.xml"
    env = dict(os.environ, KLPINSPECT_FIXTURES=str(fixtures), KLP_STOCK_DUMP=str(stock_dump.path))
    print(f"stock dump: {stock_dump.path} ({stock_dump.source})")
    if SESSION_DUMPS and not os.environ.get("KLP_STOCK_DUMP"):
        assert stock_dump.path == SESSION_DUMPS[0]  # CI's Debian kernel: no second boot
    # its own basetemp: pytest's tmp rotation must not touch this session's dumps
    p = _pytest(env, f"--junitxml={junit}", f"--basetemp={tmp_path / 'basetemp'}", *SELECTION)
    out = p.stdout
    assert p.returncode == 0, out[-4000:] + p.stderr[-2000:]

    # one line, naming both fixture directories, and a count
    lines = [ln for ln in out.splitlines() if "livepatch fixture" in ln]
    assert len(lines) == 1, lines
    where = ", ".join(str(fixtures / name) for name in KERNELS.values())
    m = re.fullmatch(rf"livepatch fixture tests need {re.escape(where)} \(\.\./shared beside "
                     rf"the checkout, or \$KLPINSPECT_FIXTURES\): (\d+) tests not run", lines[0])
    assert m, lines[0]
    not_run = int(m[1])

    # nothing per test but passes: no s/E/F in the progress, none in the summary
    progress = [ln for ln in out.splitlines() if re.fullmatch(r"[.sFExX]+\s*\[\s*\d+%\]", ln)]
    assert progress and all(set(ln.split()[0]) == {"."} for ln in progress), out[-3000:]
    final = out.strip().splitlines()[-1]
    summary = re.fullmatch(r"(\d+) passed, (\d+) deselected(, \d+ warnings?)? in .*", final)
    assert summary, final

    cases = ET.parse(junit).getroot().iter("testcase")
    ran: dict[str, int] = {}
    skipped = 0
    for case in cases:
        if case.find("skipped") is not None:
            skipped += 1  # stopped at a fixture file: shown as nothing, counted in the line
            assert "fixture missing" in (case.find("skipped").get("message") or "")
            continue
        assert case.find("failure") is None and case.find("error") is None
        module = case.get("classname", "").rsplit(".", 1)[-1]
        ran[module] = ran.get(module, 0) + 1
    assert not_run == int(summary[2]) + skipped
    assert ran.get("test_stock_dump", 0) >= 12, ran  # the stock kernel's tests ran
    assert ran.get("test_audit", 0) >= 10, ran  # so did the unit tests
    assert int(summary[1]) == sum(ran.values())

    if not ABSENT:
        # every test of the selection CI runs (with the fixtures) either ran or is counted
        q = _pytest(dict(os.environ), "--collect-only", *SELECTION[1:])
        collected = re.search(r"^(\d+) tests? collected", q.stdout, re.M)
        assert q.returncode == 0 and collected, q.stdout[-2000:]
        assert int(collected[1]) == not_run + sum(ran.values()) - ran["test_stock_dump"]
