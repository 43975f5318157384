"""The lab's own Linux 7.2 livepatch kernel with out-of-line ftrace stubs, from its kept dump.

Opt-in (``--lab-lp lp-ool``, ``--lab-lp lp-pcrel``, or
``$KLP_LAB_LP=lp-ool,lp-pcrel``): the dump exists only where ``make matrix
MATRIX=lp-ool`` ran (``tests/lab/lpmatrix.py``: builds
the kernel with clang 22 from Debian's ``linux-source-7.2``, 20-40 min, boots
it, parks ``rk_target`` in a livepatched function, dumps it into
``/work/cache/debian/dumps/lp-ool-7.2``); CI cannot build a kernel in its
time.  The checks are ``lpmatrix.check_lp``, run on the dump through drgn and
gdb: the expected values are the guest's own (``/proc/kallsyms``,
``/sys/kernel/livepatch``, ``/sys/module/*/sections``, ``/proc/PID/stack``,
printed on its console), never klpinspect's.  Without a name, the one test
says how to enable it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import lab_lp_kernels

LAB = Path(__file__).resolve().parent / "lab"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lab_lp" in metafunc.fixturenames:
        metafunc.parametrize("lab_lp", lab_lp_kernels(metafunc.config) or [None])


@pytest.mark.lab
def test_lab_lp_dump(lab_lp: str | None, tmp_path: Path) -> None:
    if lab_lp is None:
        pytest.skip("opt-in: --lab-lp lp-ool (or KLP_LAB_LP=lp-ool) after "
                    "`make matrix MATRIX=lp-ool` built, booted and dumped that kernel")
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    import lpmatrix

    d = lpmatrix.dump_dir(lab_lp)
    assert (d / "vmcore").exists(), f"no {d / 'vmcore'}: run make matrix MATRIX={lab_lp}"
    errors, times = lpmatrix.recheck(d, tmp_path)
    print(f"{lab_lp}: {times}")
    assert not errors, "\n".join(errors)
    facts = lpmatrix.lab_facts((d / "console.log").read_text())
    assert facts.pid and len(facts.livepatches) >= 4 and facts.stack


def test_lab_facts_parse() -> None:
    """The console parser on the 7.2 fixture's facts.txt (the same guest init)."""
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    import lpmatrix
    from conftest import lp_fixture

    text = (lp_fixture("7.2").path / "facts.txt").read_text()
    f = lpmatrix.lab_facts(text)
    assert f.comm == "rk_target" and f.pid > 0
    assert f.livepatches["rk_lp"] == [("rk_target", "rk_target_inner", 1),
                                      ("rk_target", "rk_target_work", 1)]
    assert f.stack[0].startswith("__switch_to+0x") and f.stack.count(
        next(s for s in f.stack if s.startswith("livepatch_handler+"))) == 2
    assert f.sym("livepatch_rk_target_work", "rk_lp") > f.sym("livepatch_handler")
    assert "rk_target" in f.modules


def test_checks_on_the_72_fixture() -> None:
    """``check_lp``'s livepatch checks pass on the 7.2 fixture (same guest, no OOL
    stubs) through drgn, and fail when a report is wrong."""
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    import copy

    import lpmatrix
    from conftest import lp_fixture

    lp = lp_fixture("7.2")
    facts = lpmatrix.lab_facts((lp.path / "facts.txt").read_text())
    reps, _ = lpmatrix._drgn_all(["-c", str(lp.vmcore_elf), "-s", str(lp.vmlinux_debug)],
                                 facts.pid)
    assert lpmatrix._check_lpstack(reps["lpstack"], facts) == []
    assert lpmatrix._check_bt(reps["bt"], facts, reps["lpstack"]) == []
    assert lpmatrix._check_ftrace(reps["ftrace"], facts) == []
    # gcc 12: no OOL stubs, which the OOL check reports
    assert lpmatrix._check_ool(reps["audit"]) == [
        "audit: no OOL stubs at all (CONFIG_PPC_FTRACE_OUT_OF_LINE kernel)"]

    bad = copy.deepcopy(reps["lpstack"])
    fr = bad["tasks"][0]["frames"][1]
    fr["lr_symbol"] = fr["lr_symbol"].replace("+0x30/", "+0x34/")
    assert lpmatrix._check_lpstack(bad, facts)
    bt = copy.deepcopy(reps["bt"])
    for e in bt["tasks"][0]["backtrace"]:
        if e["corrected"]:
            e["symbol"] = e["original_symbol"]
    assert lpmatrix._check_bt(bt, facts, reps["lpstack"])
    ft = copy.deepcopy(reps["ftrace"])
    ft["ftrace"]["redirects"].pop()
    assert lpmatrix._check_ftrace(ft, facts)


def test_lp_variants_consistent(tmp_path: Path) -> None:
    """Every livepatch variant has its config fragments, an era with a module set,
    and a dump directory of its own (``lp-612`` is not ``lp-612-6.12``)."""
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    import lpkernel
    import lpmatrix

    assert set(lpmatrix.LP_KERNELS.values()) == set(lpkernel.VARIANTS)
    dirs = set()
    for name, var in lpmatrix.LP_KERNELS.items():
        v = lpkernel.VARIANTS[var]
        for f in v.fragments:
            assert (lpkernel.LPDIR / f).is_file(), f
        assert v.source_package == f"linux-source-{v.era}"
        assert lpmatrix.ERA_MODULES[v.era]
        d = lpmatrix.dump_dir(name, dumps=tmp_path)
        assert d.parent == tmp_path and d.name.startswith(name)
        dirs.add(d.name)
    assert len(dirs) == len(lpmatrix.LP_KERNELS)
    assert lpmatrix.dump_dir("lp-ool", dumps=tmp_path).name == "lp-ool-7.2"
    assert lpmatrix.dump_dir("lp-612", dumps=tmp_path).name == "lp-612"
    # the 6.12 era: gcc, no OOL stubs expected, the 6.1-style crypto modules
    v = lpkernel.VARIANTS["612"]
    assert not v.llvm and v.suite == "trixie"
    assert "CONFIG_PPC_FTRACE_OUT_OF_LINE=y" not in v.require
    assert "crc32c-vpmsum" in lpmatrix.ERA_MODULES["6.12"]
