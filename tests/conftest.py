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

# drgn loads its plugins once per process, when a test first makes a kernel
# program: an installed klpinspect (an older wheel, another checkout's editable
# install with its own entry point) must not register its %klp-* commands over
# this checkout's.  Subprocess tests name this checkout's plugin in DRGN_PLUGINS.
_disabled = [p for p in os.environ.get("DRGN_DISABLE_PLUGINS", "").split(",") if p]
if "klpinspect" not in _disabled:
    os.environ["DRGN_DISABLE_PLUGINS"] = ",".join([*_disabled, "klpinspect"])


def fixture_file(name: str) -> Path:
    path = LP61 / name
    if not path.exists():
        raise FileNotFoundError(f"fixture missing: {path} (../shared must sit beside the checkout)")
    return path


def unpacked(name: str, fixture: Path = LP61) -> Path:
    """The fixture ``name`` (``foo.xz``) of ``fixture`` decompressed into the cache, once."""
    src = fixture / name
    if not src.exists():
        raise FileNotFoundError(f"fixture missing: {src} (../shared must sit beside the checkout)")
    sub = CACHE / "fixtures" if fixture == LP61 else CACHE / "fixtures" / fixture.name
    dst = sub / src.name.removesuffix(".xz")
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    tmp.replace(dst)
    return dst


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
