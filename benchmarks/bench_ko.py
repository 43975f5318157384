#!/usr/bin/env python3
"""Benchmark the offline ``.ko`` lint: files/s over every module of a distro kernel.

Lints all modules of Debian's ppc64el ``linux-image-*-powerpc64le`` package
(thousands of ``.ko`` files; goal: at least 50 files/s) and the fixture
kernel's 40 modules.  The package is fetched once with ``apt-get download``
(after ``dpkg --add-architecture ppc64el && apt-get update`` when needed),
unpacked with ``dpkg-deb -x`` into the cache directory, and compressed
modules are decompressed there before timing, so the figure is the lint
alone (the decompression time is printed separately).

    python3 benchmarks/bench_ko.py [--cache DIR] [--package NAME] [--no-download]
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from klpinspect.ko import lint_files  # noqa: E402

FIXTURE_MODULES = REPO.parent / "shared" / "fixtures" / "ppc64le-6.1-lp" / "modules"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def _image_package() -> str:
    """The versioned kernel image package the ``linux-image-powerpc64le`` meta package names."""
    if "ppc64el" not in _run(["dpkg", "--print-foreign-architectures"]).split():
        print("adding the ppc64el architecture and updating the package lists", flush=True)
        _run(["dpkg", "--add-architecture", "ppc64el"])
        proc = subprocess.run(["apt-get", "update"], capture_output=True, text=True, check=False)
        if proc.returncode != 0:  # e.g. one mirror mid-sync: go on with the lists we got
            print(f"warning: apt-get update: {proc.stderr.strip().splitlines()[0]}")
    out = _run(["apt-cache", "depends", "linux-image-powerpc64le:ppc64el"])
    for line in out.splitlines():
        dep = line.strip().removeprefix("|")
        if dep.startswith("Depends:"):
            name = dep.split()[1].split(":")[0]
            if name.startswith("linux-image-") and name.endswith("-powerpc64le"):
                return name
    raise SystemExit("no linux-image-*-powerpc64le package found (apt-cache depends)")


def fetch_modules(cache: Path, package: str | None, download: bool) -> tuple[str, list[Path]]:
    """Download and unpack the package once; return its name and its ``.ko`` files."""
    stamp = cache / "unpacked"
    if not stamp.exists():
        if not download:
            raise SystemExit(f"{cache} holds no unpacked package and --no-download was given")
        cache.mkdir(parents=True, exist_ok=True)
        name = package or _image_package()
        print(f"downloading {name}:ppc64el into {cache}", flush=True)
        _run(["apt-get", "download", f"{name}:ppc64el"], cwd=cache)
        debs = sorted(cache.glob(f"{name}_*_ppc64el.deb"))
        if not debs:
            raise SystemExit(f"apt-get download left no {name} .deb in {cache}")
        root = cache / "root"
        _run(["dpkg-deb", "-x", str(debs[-1]), str(root)])
        t = time.perf_counter()
        count = 0
        for comp in list(root.rglob("*.ko.xz")) + list(root.rglob("*.ko.gz")):
            opener = lzma.open if comp.suffix == ".xz" else gzip.open
            with opener(comp, "rb") as fin:
                comp.with_suffix("").write_bytes(fin.read())
            comp.unlink()
            count += 1
        if count:
            print(f"decompressed {count} modules in {time.perf_counter() - t:.1f} s")
        stamp.write_text(debs[-1].name + "\n")
    deb = stamp.read_text().strip()
    return deb, sorted((cache / "root").rglob("*.ko"))


def bench(label: str, paths: list[Path], rounds: int = 1) -> float:
    """Lint ``paths`` ``rounds`` times; print files/s and the findings."""
    names = [str(p) for p in paths]
    size = sum(p.stat().st_size for p in paths)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        report, status = lint_files(names)
        best = min(best, time.perf_counter() - t)
    rate = len(names) / best
    codes = Counter(f.code for f in report.findings)
    print(
        f"{label}: {len(names)} files, {size / 1e6:.1f} MB, {best:.2f} s: "
        f"{rate:.0f} files/s, {size / 1e6 / best:.0f} MB/s; exit status {status}"
    )
    for code, n in sorted(codes.items()):
        print(f"    {code}: {n}")
    for f in report.findings:
        if f.level.value == "error":
            print(f"    e.g. {f.module} {f.section} {f.symbol}: {f.code}: {f.message}")
            break
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_cache = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache")) / "bench-ko"
    ap.add_argument("--cache", type=Path, default=default_cache)
    ap.add_argument("--package", help="image package name (default: what the meta package names)")
    ap.add_argument("--no-download", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    fixtures = sorted(FIXTURE_MODULES.glob("*.ko"))
    if fixtures:
        bench("fixture 6.1 modules", fixtures, rounds=args.rounds)
    deb, modules = fetch_modules(args.cache, args.package, not args.no_download)
    if not modules:
        raise SystemExit(f"{deb}: no .ko files")
    rate = bench(deb, modules, rounds=args.rounds)
    goal = 50
    print(f"goal >= {goal} files/s: {'met' if rate >= goal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
