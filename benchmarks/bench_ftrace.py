"""Speed of the ftrace view and of the OOL stub checks.

(a) ``ftrace_report`` in process (drgn back end) on each livepatch fixture:
    wall time and target reads (every ftrace record, ops hash and klp list);
(b) with ``--core``/``--symbols`` of a 6.13+ dump with out-of-line ftrace
    stubs (the lab's Debian sid dump, for instance): the audit's time with
    the OOL checks, how many stubs, how many site reads, and whether every
    stub's site equals its ftrace record's ``ip``.

Run: python3 benchmarks/bench_ftrace.py [--core VMCORE --symbols VMLINUX]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from klpinspect.audit import audit  # noqa: E402
from klpinspect.backends.drgn.program import open_program  # noqa: E402
from klpinspect.backends.drgn.target import DrgnTarget  # noqa: E402
from klpinspect.ftrace_view import ftrace_report, read_ftrace_records  # noqa: E402


class Counting:
    """A DrgnTarget whose reads are counted."""

    def __init__(self, inner: DrgnTarget) -> None:
        self.inner, self.kind, self.reads, self.bytes = inner, inner.kind, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        self.bytes += size
        data: bytes = self.inner.read(address, size)
        return data


def _target(core: Path, symbols: Path) -> DrgnTarget:
    prog, kind = open_program(core=str(core), symbols=[str(symbols)])
    return DrgnTarget(prog, kind)


def fixtures() -> None:
    from conftest import lp_fixture

    for version in ("6.1", "7.2"):
        lp = lp_fixture(version)
        target = Counting(_target(lp.vmcore_elf, lp.vmlinux_debug))
        target.kernel()
        target.reads = target.bytes = 0
        start = time.perf_counter()
        report = ftrace_report(target)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        print(f"ftrace view {version}: {took * 1000:7.0f} ms  {target.reads:5d} reads "
              f"{target.bytes / 1024:7.0f} KiB  records {report.records}  "
              f"redirected {len(report.redirects)}")


def ool(core: Path, symbols: Path) -> None:
    target = Counting(_target(core, symbols))
    start = time.perf_counter()
    report = audit(target, callsites=False, tasks=False)  # type: ignore[arg-type]
    took = time.perf_counter() - start
    stubs = [s for m in report.modules for s in m.ool_stubs]
    sites = {s.address + 8: getattr(s, "site", None) for s in stubs}
    records = {r.ool_stub: r.ip for r in read_ftrace_records(target) if r.ool_stub}
    agree = sum(1 for a, site in sites.items() if records.get(a) == site)
    codes = sorted({f.code for f in report.findings})
    print(f"audit with OOL checks: {took:6.2f} s  {len(report.modules)} modules  "
          f"{len(stubs)} OOL stubs  {target.reads} reads  findings {codes or 'none'}")
    print(f"OOL sites equal to their ftrace record's ip: {agree} of {len(stubs)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--core", type=Path, help="a 6.13+ dump with OOL stubs")
    ap.add_argument("--symbols", type=Path, help="its vmlinux with debug info")
    a = ap.parse_args()
    fixtures()
    if a.core and a.symbols:
        ool(a.core, a.symbols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
