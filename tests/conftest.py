"""Shared test fixtures: the real ppc64le dumps in ../shared/fixtures.

Two livepatch fixtures, one scenario: ``ppc64le-6.1-lp`` (Linux 6.1.192) and
``ppc64le-7.2-lp`` (Linux 7.2.13; module memory in ``mem[]``, 6.14+ section
attributes, ``stub_count``).  The fixtures are required: a missing file is a
test error, never a skip.  Decompressed copies of the ``.xz`` dumps are
cached under ``.cache/`` in the checkout (or ``$KLPINSPECT_CACHE``) so they
are unpacked once: 6.1's as ``fixtures/NAME``, the others' as
``fixtures/<fixture dir>/NAME``.

``lp`` is parametrized over both kernels; tests that only one fixture can
serve (6.1's kdump and raw QEMU dumps) keep the 6.1-only fixtures below.
"""

from __future__ import annotations

import lzma
import os
import shutil
from functools import cached_property
from pathlib import Path

import pytest
from fixturefacts import Facts, load_facts

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(
    os.environ.get("KLPINSPECT_FIXTURES", REPO.parent / "shared" / "fixtures")
).resolve()
CACHE = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache")).resolve()
KERNELS = {"6.1": "ppc64le-6.1-lp", "7.2": "ppc64le-7.2-lp"}
LP61 = FIXTURES / KERNELS["6.1"]

# drgn loads its plugins once per process, when a test first makes a kernel
# program: an installed klpinspect (an older wheel, another checkout's editable
# install with its own entry point) must not register its %klp-* commands over
# this checkout's.  Subprocess tests name this checkout's plugin in DRGN_PLUGINS.
_disabled = [p for p in os.environ.get("DRGN_DISABLE_PLUGINS", "").split(",") if p]
if "klpinspect" not in _disabled:
    os.environ["DRGN_DISABLE_PLUGINS"] = ",".join([*_disabled, "klpinspect"])


def _unpack(src: Path, into: Path) -> Path:
    """``src`` (``foo.xz``) decompressed as ``into/foo``, unless already there and newer."""
    if not src.exists():
        raise FileNotFoundError(f"fixture missing: {src} (../shared must sit beside the checkout)")
    dst = into / src.name.removesuffix(".xz")
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f"{dst.suffix}.{os.getpid()}.tmp")
    with lzma.open(src) as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    tmp.replace(dst)
    return dst


class LpFixture:
    """One livepatch fixture directory: its files, its unpacked dump, its parsed facts."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.path = FIXTURES / KERNELS[version]
        self.file("README.md")

    def __repr__(self) -> str:
        return f"LpFixture({self.version})"

    def file(self, name: str) -> Path:
        path = self.path / name
        if not path.exists():
            raise FileNotFoundError(
                f"fixture missing: {path} (../shared must sit beside the checkout)"
            )
        return path

    def unpacked(self, name: str) -> Path:
        """The fixture file ``name`` (``foo.xz``) decompressed into the cache, once."""
        sub = CACHE / "fixtures"
        if self.version != "6.1":
            sub = sub / self.path.name
        return _unpack(self.file(name), sub)

    @cached_property
    def vmcore_elf(self) -> Path:
        """The fixed-up ELF vmcore (VMCOREINFO note, linear-map p_vaddr)."""
        return self.unpacked("vmcore.elf.xz")

    @property
    def vmlinux_debug(self) -> Path:
        return self.file("vmlinux.debug")

    @property
    def vmlinux(self) -> Path:
        return self.file("vmlinux")

    @property
    def modules(self) -> Path:
        return self.file("modules")

    @cached_property
    def facts(self) -> Facts:
        """facts.txt, README.md and vmcoreinfo.txt, parsed (tests/fixturefacts.py)."""
        self.file("facts.txt")
        return load_facts(self.path)


_FIXTURES: dict[str, LpFixture] = {}


def lp_fixture(version: str) -> LpFixture:
    if version not in _FIXTURES:
        _FIXTURES[version] = LpFixture(version)
    return _FIXTURES[version]


def drgn_env() -> dict[str, str]:
    """The environment of a ``python3 -m drgn`` that must load this checkout's plugin.

    The checkout goes first on ``PYTHONPATH``, and the plugin is named by module
    (``DRGN_PLUGINS``) with the installed ``klpinspect`` entry point disabled:
    an installed (editable) package's entry point may name the module of
    another checkout or layout, which drgn would load instead.
    """
    return dict(
        os.environ,
        PYTHONPATH=str(REPO),
        DRGN_PLUGINS="klpinspect=klpinspect.backends.drgn.commands",
        DRGN_DISABLE_PLUGINS="klpinspect",
    )


def fixture_file(name: str) -> Path:
    """A file of the 6.1 fixture (benchmarks import this)."""
    return lp_fixture("6.1").file(name)


def unpacked(name: str, fixture: Path = LP61) -> Path:
    """The fixture ``name`` (``foo.xz``) of the fixture directory ``fixture``
    decompressed into the cache, once (tests/golden.py and the benchmarks)."""
    for version, dirname in KERNELS.items():
        if fixture == FIXTURES / dirname:
            return lp_fixture(version).unpacked(name)
    return _unpack(fixture / name, CACHE / "fixtures" / fixture.name)


@pytest.fixture(scope="session", params=sorted(KERNELS), ids=lambda v: f"lp{v}")
def lp(request: pytest.FixtureRequest) -> LpFixture:
    """Each livepatch fixture in turn (6.1, then 7.2)."""
    return lp_fixture(request.param)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--debian-kernel", action="append", default=[], metavar="NAME",
        help="boot and check Debian's kernel NAME (trixie, sid, trixie-64k, sid-64k, "
        "bookworm; repeatable; also $KLP_DEBIAN_KERNELS=a,b): ~1 GB of packages each, "
        "cached (tests/test_debian_kernels.py)",
    )
    parser.addoption(
        "--lab-lp", action="append", default=[], metavar="NAME",
        help="check the dump of the lab's own livepatch kernel NAME (lp-ool) that "
        "`make matrix MATRIX=lp-ool` kept in /work/cache/debian/dumps/lp-ool-7.2; "
        "also $KLP_LAB_LP=lp-ool (tests/test_lab_lpkernel.py)",
    )


def debian_kernels(config: pytest.Config) -> list[str]:
    """The Debian kernels this run boots (``--debian-kernel``, ``$KLP_DEBIAN_KERNELS``)."""
    names = list(config.getoption("--debian-kernel") or [])
    names += [n for n in os.environ.get("KLP_DEBIAN_KERNELS", "").split(",") if n.strip()]
    return list(dict.fromkeys(n.strip() for n in names))


def lab_lp_kernels(config: pytest.Config) -> list[str]:
    """The lab livepatch dumps this run checks (``--lab-lp``, ``$KLP_LAB_LP``)."""
    names = list(config.getoption("--lab-lp") or [])
    names += [n for n in os.environ.get("KLP_LAB_LP", "").split(",") if n.strip()]
    return list(dict.fromkeys(n.strip() for n in names))


@pytest.fixture(scope="session")
def lp61() -> Path:
    """Directory of the ppc64le 6.1 livepatch fixture."""
    return lp_fixture("6.1").path


@pytest.fixture(scope="session")
def lp72() -> Path:
    """Directory of the ppc64le 7.2 livepatch fixture."""
    return lp_fixture("7.2").path


@pytest.fixture(scope="session")
def vmcore_elf() -> Path:
    """6.1: the fixed-up ELF vmcore (VMCOREINFO note, linear-map p_vaddr)."""
    return lp_fixture("6.1").vmcore_elf


@pytest.fixture(scope="session")
def vmcore_qemu_elf() -> Path:
    """6.1: the dump exactly as QEMU 7.2 wrote it (big-endian, no VMCOREINFO)."""
    return lp_fixture("6.1").unpacked("vmcore.qemu.elf.xz")


@pytest.fixture(scope="session")
def vmcore_kdump() -> Path:
    """6.1: makedumpfile -c -d 31 (kdump-compressed) copy of vmcore.elf."""
    return lp_fixture("6.1").file("vmcore.kdump")


@pytest.fixture(scope="session")
def vmlinux_debug() -> Path:
    return lp_fixture("6.1").vmlinux_debug


@pytest.fixture(scope="session")
def vmlinux() -> Path:
    return lp_fixture("6.1").vmlinux


@pytest.fixture(scope="session")
def modules_dir() -> Path:
    return lp_fixture("6.1").modules
