"""Shared test fixtures: the real ppc64le dumps in ../shared/fixtures.

The fixtures are required: a missing file is a test error, never a skip.
Decompressed copies of the ``.xz`` dumps are cached under ``.cache/`` in the
checkout (or ``$KLPINSPECT_CACHE``) so they are unpacked once.
"""

from __future__ import annotations

import lzma
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(
    os.environ.get("KLPINSPECT_FIXTURES", REPO.parent / "shared" / "fixtures")
).resolve()
LP61 = FIXTURES / "ppc64le-6.1-lp"
CACHE = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache")).resolve()


def fixture_file(name: str) -> Path:
    path = LP61 / name
    if not path.exists():
        raise FileNotFoundError(f"fixture missing: {path} (../shared must sit beside the checkout)")
    return path


def unpacked(name: str) -> Path:
    """The fixture ``name`` (``foo.xz``) decompressed into the cache, once."""
    src = fixture_file(name)
    dst = CACHE / "fixtures" / src.name.removesuffix(".xz")
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    tmp.replace(dst)
    return dst


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--debian-kernel", action="append", default=[], metavar="NAME",
        help="boot and check Debian's kernel NAME (trixie, sid, trixie-64k, sid-64k, "
        "bookworm; repeatable; also $KLP_DEBIAN_KERNELS=a,b): ~1 GB of packages each, "
        "cached (tests/test_debian_kernels.py)",
    )


def debian_kernels(config: pytest.Config) -> list[str]:
    """The Debian kernels this run boots (``--debian-kernel``, ``$KLP_DEBIAN_KERNELS``)."""
    names = list(config.getoption("--debian-kernel") or [])
    names += [n for n in os.environ.get("KLP_DEBIAN_KERNELS", "").split(",") if n.strip()]
    return list(dict.fromkeys(n.strip() for n in names))


@pytest.fixture(scope="session")
def lp61() -> Path:
    """Directory of the ppc64le 6.1 livepatch fixture."""
    fixture_file("README.md")
    return LP61


@pytest.fixture(scope="session")
def vmcore_elf() -> Path:
    """The fixed-up ELF vmcore (VMCOREINFO note, linear-map p_vaddr)."""
    return unpacked("vmcore.elf.xz")


@pytest.fixture(scope="session")
def vmcore_qemu_elf() -> Path:
    """The dump exactly as QEMU 7.2 wrote it (big-endian, no VMCOREINFO)."""
    return unpacked("vmcore.qemu.elf.xz")


@pytest.fixture(scope="session")
def vmcore_kdump() -> Path:
    """makedumpfile -c -d 31 (kdump-compressed) copy of vmcore.elf."""
    return fixture_file("vmcore.kdump")


@pytest.fixture(scope="session")
def vmlinux_debug() -> Path:
    return fixture_file("vmlinux.debug")


@pytest.fixture(scope="session")
def vmlinux() -> Path:
    return fixture_file("vmlinux")


@pytest.fixture(scope="session")
def modules_dir() -> Path:
    return fixture_file("modules")
