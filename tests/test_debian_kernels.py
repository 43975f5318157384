"""Debian's own ppc64el kernels, booted and checked (``tests/lab/matrix.py``).

Opt-in, one kernel per ``--debian-kernel NAME`` (or ``$KLP_DEBIAN_KERNELS``):
each needs ~1 GB of packages from Debian's archive (cached in
``/work/cache/debian`` or ``.cache/debian``, so only the first run pays) and a
boot under TCG.  For each kernel: boot it with the stock module set, audit it
live over QMP (drgn) and the gdbstub (gdb), dump it and audit the dump through
drgn and gdb; the four reports must agree, and agree with the guest's own
``/proc/modules`` and ``/sys/module/*/sections/{.stubs,.toc}``, with no finding
above ``info``.  Without a kernel named, the one test says how to enable it.
The dump is kept until the session ends: the stock-kernel tests of this
session use it (``stock_dump``, tests/stockdump.py) instead of booting another.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import debian_kernels
from stockdump import SESSION_DUMPS

pytestmark = [pytest.mark.lab, pytest.mark.debian]

LAB = Path(__file__).resolve().parent / "lab"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "debian_kernel" in metafunc.fixturenames:
        names = debian_kernels(metafunc.config)
        metafunc.parametrize("debian_kernel", names or [None])


@pytest.fixture(scope="session")
def kept_dumps() -> Iterator[list[Path]]:
    """Dump directories lent to this session's stock-kernel tests; their
    1 GiB vmcores are removed when the session ends (pytest keeps the last
    three tmp_path trees)."""
    kept: list[Path] = []
    yield kept
    for d in kept:
        if d in SESSION_DUMPS:
            SESSION_DUMPS.remove(d)
        (d / "vmcore").unlink(missing_ok=True)


def test_debian_kernel(debian_kernel: str | None, tmp_path: Path,
                       kept_dumps: list[Path]) -> None:
    if debian_kernel is None:
        pytest.skip("opt-in: --debian-kernel trixie (or KLP_DEBIAN_KERNELS=trixie,sid): "
                    "downloads ~1 GB per kernel, boots it under QEMU")
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    import matrix

    t0 = time.monotonic()
    # the dump (1 GiB) goes to tmp_path, not the shared dumps others may be reading
    r = matrix.run_kernel(debian_kernel, dumps=tmp_path)
    for core in tmp_path.glob("*/vmcore"):
        kept_dumps.append(core.parent)
        SESSION_DUMPS.append(core.parent)
    print(f"{debian_kernel}: {r['kver']}: {r['modules']} modules, {r['slots']} slots, "
          f"{r['ool_stubs']} OOL stubs, {time.monotonic() - t0:.0f} s {r['times']}")
    assert r["view_modules"] > 0, "the guest printed no /proc/modules"
    assert not r["insmod_failed"], r["insmod_failed"]
    assert r["modules"] == r["view_modules"]
    assert r["slots"] > 0
    assert r["ok"], "\n".join(r["errors"])
