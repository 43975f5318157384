"""Debian's own ppc64el kernels, booted and checked (``tests/lab/matrix.py``).

Opt-in, one kernel per ``--debian-kernel NAME`` (or ``$KLP_DEBIAN_KERNELS``):
each needs ~1 GB of packages from Debian's archive (cached in
``/work/cache/debian`` or ``.cache/debian``, so only the first run pays) and a
boot under TCG.  For each kernel: boot it with the stock module set, audit it
live over QMP (drgn) and the gdbstub (gdb), dump it and audit the dump through
drgn and gdb; the four reports must agree, and agree with the guest's own
``/proc/modules`` and ``/sys/module/*/sections/{.stubs,.toc}``, with no finding
above ``info``.  Without a kernel named, the one test says how to enable it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from conftest import debian_kernels

pytestmark = [pytest.mark.lab, pytest.mark.debian]

LAB = Path(__file__).resolve().parent / "lab"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "debian_kernel" in metafunc.fixturenames:
        names = debian_kernels(metafunc.config)
        metafunc.parametrize("debian_kernel", names or [None])


def test_debian_kernel(debian_kernel: str | None, tmp_path: Path) -> None:
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
        core.unlink()  # 1 GiB; pytest keeps the last three tmp_path trees
    print(f"{debian_kernel}: {r['kver']}: {r['modules']} modules, {r['slots']} slots, "
          f"{r['ool_stubs']} OOL stubs, {time.monotonic() - t0:.0f} s {r['times']}")
    assert r["view_modules"] > 0, "the guest printed no /proc/modules"
    assert not r["insmod_failed"], r["insmod_failed"]
    assert r["modules"] == r["view_modules"]
    assert r["slots"] > 0
    assert r["ok"], "\n".join(r["errors"])
