"""Speed of ``klpinspect prologue`` on real ARM32 files.

Times :func:`klpinspect.arm32.lint_prologues` over the given files (a vmlinux,
``.ko`` files, or directories searched for ``*.ko``) and prints functions per
second.  Without arguments it uses Debian's armhf modules that
tests/arm32/fetch.sh caches in ``.cache/arm32`` (downloading them when absent).

Run: python3 benchmarks/bench_arm32_prologue.py [FILE_OR_DIR...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from klpinspect.arm32 import lint_prologues  # noqa: E402


def _files(args: list[str]) -> list[Path]:
    if not args:
        out = subprocess.run(["bash", str(REPO / "tests/arm32/fetch.sh")], check=True,
                             capture_output=True, text=True).stdout.split()
        args = [out[-1]]
    files: list[Path] = []
    for a in args:
        p = Path(a)
        files.extend(sorted(p.rglob("*.ko")) if p.is_dir() else [p])
    return files


def main() -> int:
    files = _files(sys.argv[1:])
    t0 = time.perf_counter()
    functions = traced = 0
    for f in files:
        r = lint_prologues(str(f))
        functions += len(r.functions)
        traced += r.traced
    dt = time.perf_counter() - t0
    print(f"{len(files)} files, {functions} functions ({traced} traced) in {dt:.2f} s: "
          f"{functions / dt:,.0f} functions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
