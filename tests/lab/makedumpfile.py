#!/usr/bin/env python3
"""makedumpfile's ELF output of a ppc64le vmcore, made on this (x86_64) host.

Debian 12's ppc64el ``makedumpfile`` (1.7.2) runs under ``qemu-ppc64le-static``
(package qemu-user-static) with a sysroot of its ppc64el shared libraries, as
the fixture's own ``vmcore.kdump`` was made (fixture README, "How it was
booted and dumped", step 4).  Everything comes from Debian by package name:
``apt-get download PKG:ppc64el`` (the architecture is added, and apt updated,
when apt knows no ppc64el makedumpfile), ``dpkg-deb -x`` into the sysroot.
Debs, sysroot and output are cached (``.cache/makedumpfile/`` of the
checkout, or ``$KLPINSPECT_CACHE``), so this runs once per machine::

    python3 tests/lab/makedumpfile.py .cache/fixtures/vmcore.elf   # prints the output path

makedumpfile 1.7.2 predates 6.1 and warns "The kernel version is not
supported."; the dump it writes is fine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab import REPO, LabError
from stock import fetch_debs

__all__ = (
    "MAKEDUMPFILE_PACKAGES",
    "MakedumpfileResult",
    "enable_ppc64el",
    "makedumpfile_elf",
    "makedumpfile_sysroot",
    "run_makedumpfile",
)

#: makedumpfile and the ppc64el libraries it loads (its NEEDED entries and
#: theirs: libdw needs liblzma and libbz2).
MAKEDUMPFILE_PACKAGES = (
    "makedumpfile", "libc6", "zlib1g", "liblzma5", "libbz2-1.0", "libelf1", "libdw1", "liblzo2-2",
)  # fmt: skip
QEMU_USER = "qemu-ppc64le-static"


def cache_dir() -> Path:
    """``$KLPINSPECT_CACHE/makedumpfile`` (default ``.cache/makedumpfile`` of the checkout)."""
    base = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache")).resolve()
    return base / "makedumpfile"


@dataclass
class MakedumpfileResult:
    path: Path  # the ELF dump
    seconds: float | None  # makedumpfile's run time; None when cached
    log: str  # makedumpfile's messages (progress lines dropped)


def _run(argv: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]} not found") from None


def _has_candidate(package: str) -> bool:
    out = _run(["apt-cache", "policy", package]).stdout
    return any(
        line.strip().startswith("Candidate:") and "(none)" not in line
        for line in out.splitlines()
    )


def enable_ppc64el() -> None:
    """Make apt know Debian's ppc64el packages (``dpkg --add-architecture``,
    ``apt-get update``), only when it does not yet know makedumpfile:ppc64el.

    ``apt-get update`` fails as a whole when one index does (a mirror mid-sync,
    often bookworm-security's ppc64el list): that is fine as long as the main
    archive's list came in, so success is judged by apt-cache, not the exit code.
    """
    if _has_candidate("makedumpfile:ppc64el"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    arches = _run(["dpkg", "--print-foreign-architectures"]).stdout.split()
    if "ppc64el" not in arches:
        print("lab: dpkg --add-architecture ppc64el", flush=True)
        p = _run([*sudo, "dpkg", "--add-architecture", "ppc64el"])
        if p.returncode != 0:
            raise LabError(f"dpkg --add-architecture ppc64el: {p.stderr.strip()}")
    print("lab: apt-get update", flush=True)
    p = _run([*sudo, "apt-get", "update", "-q"])
    if not _has_candidate("makedumpfile:ppc64el"):
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith(("E:", "W:"))]
        raise LabError(
            "apt knows no makedumpfile:ppc64el after apt-get update"
            + (f": {errors[0]}" if errors else "")
        )


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder at a time (parallel test runs share the cache)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_sysroot(cache: Path, sysroot: Path, stamp: str) -> None:
    """Download the ppc64el packages (once) and unpack them into *sysroot*."""
    enable_ppc64el()
    debs = fetch_debs(cache / "debs", list(MAKEDUMPFILE_PACKAGES))
    tmp = sysroot.with_name(sysroot.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in MAKEDUMPFILE_PACKAGES:
        p = _run(["dpkg-deb", "-x", str(debs[name]), str(tmp)])
        if p.returncode != 0:
            raise LabError(f"dpkg-deb -x {debs[name].name}: {p.stderr.strip()}")
    # libc6's /lib64/ld64.so.2 -> /lib/...: absolute, so under qemu -L it
    # would point into the host's /lib; make it relative to the sysroot.
    loader = tmp / "lib64" / "ld64.so.2"
    loader.unlink(missing_ok=True)
    loader.parent.mkdir(exist_ok=True)
    loader.symlink_to("../lib/powerpc64le-linux-gnu/ld64.so.2")
    if not (tmp / "usr" / "bin" / "makedumpfile").is_file():
        raise LabError("the makedumpfile package has no usr/bin/makedumpfile")
    (tmp / ".packages").write_text(stamp)
    shutil.rmtree(sysroot, ignore_errors=True)
    tmp.rename(sysroot)


def makedumpfile_sysroot(cache: Path | None = None) -> Path:
    """The ppc64el sysroot with ``usr/bin/makedumpfile``, built on first use."""
    cache = cache or cache_dir()
    sysroot = cache / "sysroot"
    stamp = " ".join(MAKEDUMPFILE_PACKAGES) + "\n"
    marker = sysroot / ".packages"
    if marker.exists() and marker.read_text() == stamp:
        return sysroot
    with _locked(cache):
        if not (marker.exists() and marker.read_text() == stamp):
            _build_sysroot(cache, sysroot, stamp)
    return sysroot


def run_makedumpfile(
    args: Sequence[str], sysroot: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``makedumpfile ARGS`` (ppc64el) under ``qemu-ppc64le-static -L SYSROOT``."""
    if shutil.which(QEMU_USER) is None:
        raise LabError(f"{QEMU_USER} not found (Debian: apt-get install qemu-user-static)")
    sysroot = sysroot or makedumpfile_sysroot()
    exe = sysroot / "usr" / "bin" / "makedumpfile"
    return _run([QEMU_USER, "-L", str(sysroot), str(exe), *args], timeout)


def _messages(raw: str) -> str:
    """makedumpfile's output without its carriage-return progress lines."""
    lines = raw.replace("\r", "\n").splitlines()
    return "\n".join(ln for ln in lines if ln.strip() and " : [" not in ln) + "\n"


def makedumpfile_elf(
    vmcore: Path, dump_level: int = 31, cache: Path | None = None
) -> MakedumpfileResult:
    """``makedumpfile -E -d DUMP_LEVEL VMCORE OUT``: its ELF output, cached.

    Redone when *vmcore* or the sysroot is newer than the cached output.
    *vmcore* is only read.
    """
    cache = cache or cache_dir()
    sysroot = makedumpfile_sysroot(cache)
    out = cache / f"{vmcore.name.removesuffix('.elf')}.d{dump_level}.elf"
    log = out.with_suffix(".log")

    def fresh() -> bool:
        if not (out.exists() and log.exists()):
            return False
        newest = max(vmcore.stat().st_mtime, (sysroot / ".packages").stat().st_mtime)
        return out.stat().st_mtime >= newest

    if fresh():
        return MakedumpfileResult(out, None, log.read_text())
    with _locked(cache):
        if fresh():
            return MakedumpfileResult(out, None, log.read_text())
        tmp = out.with_name(out.name + ".tmp")
        tmp.unlink(missing_ok=True)  # makedumpfile will not overwrite
        t0 = time.monotonic()
        p = run_makedumpfile(["-E", "-d", str(dump_level), str(vmcore), str(tmp)], sysroot)
        seconds = time.monotonic() - t0
        text = _messages(p.stdout + p.stderr)
        if p.returncode != 0 or not tmp.exists():
            tmp.unlink(missing_ok=True)
            last = text.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
            raise LabError(f"makedumpfile -E -d {dump_level} {vmcore.name} failed: {last[0]}")
        text = text.replace(str(tmp), str(out))
        log.write_text(text)
        tmp.replace(out)
    return MakedumpfileResult(out, seconds, text)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="makedumpfile.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("vmcore", type=Path, help="an ELF vmcore (e.g. .cache/fixtures/vmcore.elf)")
    ap.add_argument("-d", "--dump-level", type=int, default=31)
    a = ap.parse_args(argv)
    try:
        r = makedumpfile_elf(a.vmcore.resolve(), a.dump_level)
    except LabError as e:
        print(f"makedumpfile.py: {e}", file=sys.stderr)
        return 2
    took = "cached" if r.seconds is None else f"{r.seconds:.1f} s"
    print(f"{r.path} ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
