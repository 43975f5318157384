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

Without ``../shared`` (a clone outside this project; or ``$KLPINSPECT_FIXTURES``
naming a directory that is not there), a fixture directory that does not
exist means its tests are not run: they are deselected (they use a fixture
below or carry the ``lpfixture`` marker) or stop at their first fixture file
(:class:`FixtureMissing`), print nothing each, and are counted in one line
at the end; the tests a Debian stock kernel can serve run on a lab dump
instead (``stock_dump``, tests/stockdump.py, tests/test_stock_dump.py).  A
fixture directory that exists but lacks a file is an error, as ever.
"""

from __future__ import annotations

import lzma
import os
import shutil
import sys
from collections.abc import Generator
from functools import cached_property
from pathlib import Path

import pytest
from fixturefacts import Facts, load_facts
from stockdump import StockDump, StockDumpError, find_stock_dump

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(
    os.environ.get("KLPINSPECT_FIXTURES", REPO.parent / "shared" / "fixtures")
).resolve()
CACHE = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache")).resolve()
KERNELS = {"6.1": "ppc64le-6.1-lp", "7.2": "ppc64le-7.2-lp"}
LP61 = FIXTURES / KERNELS["6.1"]
# Fixture directories that are not there at all: their tests are not run (see above).
ABSENT = [name for name in KERNELS.values() if not (FIXTURES / name).is_dir()]
# the fixtures (and their dependents) that only the livepatch fixtures can serve
FIXTURE_FIXTURES = frozenset({
    "lp", "lp61", "lp72", "vmcore_elf", "vmcore_qemu_elf", "vmcore_kdump", "vmlinux_debug",
    "vmlinux", "modules_dir",
})

# drgn loads its plugins once per process, when a test first makes a kernel
# program: an installed klpinspect (an older wheel, another checkout's editable
# install with its own entry point) must not register its %klp-* commands over
# this checkout's.  Subprocess tests name this checkout's plugin in DRGN_PLUGINS.
_disabled = [p for p in os.environ.get("DRGN_DISABLE_PLUGINS", "").split(",") if p]
if "klpinspect" not in _disabled:
    os.environ["DRGN_DISABLE_PLUGINS"] = ",".join([*_disabled, "klpinspect"])


class FixtureMissing(FileNotFoundError):
    """A file of a livepatch fixture is not there."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"fixture missing: {path} (../shared must sit beside the checkout)")
        self.path = path

    @property
    def absent(self) -> bool:
        """The whole fixture directory is absent (no ../shared), not just this file."""
        return any(self.path.is_relative_to(FIXTURES / name) for name in ABSENT)


def _unpack(src: Path, into: Path) -> Path:
    """``src`` (``foo.xz``) decompressed as ``into/foo``, unless already there and newer."""
    if not src.exists():
        raise FixtureMissing(src)
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
            raise FixtureMissing(path)
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
        help="check the dump of the lab's own livepatch kernel NAME (lp-ool, lp-pcrel, "
        "lp-612) that `make matrix MATRIX=lp-ool` kept in /work/cache/debian/dumps/lp-ool-7.2 "
        "(lp-612: dumps/lp-612); "
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


# --- a stock Debian kernel from the lab; without ../shared, one line for the rest ----------


@pytest.fixture(scope="session")
def stock_dump(request: pytest.FixtureRequest) -> StockDump:
    """A dump of a Debian stock ppc64el kernel with the guest's own view
    (tests/stockdump.py: ``$KLP_STOCK_DUMP``, this session's Debian kernel test,
    the lab's cache, or the lab boots one, which it says on the terminal)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(msg: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n{msg}", file=sys.stderr, flush=True)

    try:
        return find_stock_dump(say=say if capture is not None else None)
    except StockDumpError as e:
        pytest.fail(str(e), pytrace=False)


# node ids of the livepatch-fixture tests not run because a fixture directory is absent
_NOT_RUN: set[str] = set()
_SIX_ONE = FIXTURE_FIXTURES - {"lp", "lp72"}


def _needs_absent_fixture(item: pytest.Item) -> bool:
    """*item* needs a fixture directory that is absent (see the module docstring)."""
    if not ABSENT:
        return False
    if item.get_closest_marker("lpfixture") is not None:
        return True
    names = set(getattr(item, "fixturenames", ()))
    if "lp" in names:
        callspec = getattr(item, "callspec", None)
        version = callspec.params.get("lp") if callspec is not None else None
        if version is None or KERNELS[version] in ABSENT:
            return True
    if names & _SIX_ONE and KERNELS["6.1"] in ABSENT:
        return True
    return "lp72" in names and KERNELS["7.2"] in ABSENT


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # The stock-kernel tests stand in for the fixture tests: with every fixture
    # there (CI) and no $KLP_STOCK_DUMP they are not collected, so nothing changes.
    # tests/test_without_shared.py runs them with the fixtures pointed away.
    if collection_path.name == "test_stock_dump.py" and not ABSENT:
        return True if not os.environ.get("KLP_STOCK_DUMP") else None
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    drop = [item for item in items if _needs_absent_fixture(item)]
    if drop:
        _NOT_RUN.update(item.nodeid for item in drop)
        config.hook.pytest_deselected(items=drop)
        dropped = set(map(id, drop))
        items[:] = [item for item in items if id(item) not in dropped]


def _absent_fixture_file(exc: BaseException | None) -> bool:
    """``exc`` says a file of an absent fixture directory is missing: a
    :class:`FixtureMissing`, or any ``FileNotFoundError`` naming a path there (a
    test that opens ``FIXTURES / ...`` itself)."""
    if isinstance(exc, FixtureMissing):
        return exc.absent
    if isinstance(exc, FileNotFoundError) and exc.filename:
        path = Path(os.fsdecode(exc.filename))
        return any(path.is_relative_to(FIXTURES / name) for name in ABSENT)
    return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # A test that reaches for a file of an absent fixture directory without being
    # deselected (lp_fixture() in its body): not run either, and counted, not failed.
    report = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    if _absent_fixture_file(exc):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {exc}")
        report.klp_not_run = True  # type: ignore[attr-defined]
        _NOT_RUN.add(item.nodeid)
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    if getattr(report, "klp_not_run", False):
        # no letter (-q) and no category: the one line below counts them
        return "", "", "NOT RUN"
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ABSENT and _NOT_RUN:
        where = ", ".join(str(FIXTURES / name) for name in ABSENT)
        terminalreporter.write_line(
            f"livepatch fixture tests need {where} (../shared beside the checkout, or "
            f"$KLPINSPECT_FIXTURES): {len(_NOT_RUN)} tests not run"
        )
