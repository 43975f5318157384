"""The audit's call-site scan in a forked child (:mod:`klpinspect.forked`):
the same report as in one process, the child's result used when it has one,
this process's when it has not."""

from __future__ import annotations

import importlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from test_btf_dump import _core

from klpinspect import api, callsite_audit, forked
from klpinspect.report import Finding, FindingCode, render
from klpinspect.target import KernelInfo, ModuleInfo, Target

pytestmark = pytest.mark.dump
# the module, not the api function klpinspect re-exports under its name
livepatch = importlib.import_module("klpinspect.livepatch")

LP61 = FIXTURES / "ppc64le-6.1-lp"
LP72 = FIXTURES / "ppc64le-7.2-lp"


class _Vmcore:
    kind = "vmcore"
    forkable = True


def test_child_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLPINSPECT_JOBS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    parent = os.getpid()
    assert forked.start(os.getpid, _Vmcore()).result() != parent  # a child computed it
    big = forked.start(lambda: b"x" * (3 << 20), _Vmcore()).result()  # > a pipe's buffer
    assert big == b"x" * (3 << 20)

    def only_here() -> int:
        if os.getpid() != parent:
            raise RuntimeError("fails in the child")
        return 7

    assert forked.start(only_here, _Vmcore()).result() == 7  # done again here

    def dies() -> int:
        if os.getpid() != parent:
            os._exit(3)  # killed before it could answer
        return 8

    assert forked.start(dies, _Vmcore()).result() == 8

    def raises() -> int:
        raise ValueError("the work's own error")

    with pytest.raises(ValueError, match="own error"):
        forked.start(raises, _Vmcore()).result()


def test_when_to_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLPINSPECT_JOBS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert forked.can_fork(_Vmcore())
    for kind in ("live", "qemu", "gdb", "synthetic"):
        other = _Vmcore()
        other.kind = kind
        assert not forked.can_fork(other), kind
    not_marked = _Vmcore()
    not_marked.forkable = False  # e.g. a program with DWARF: OpenMP threads
    assert not forked.can_fork(not_marked)
    monkeypatch.setenv("KLPINSPECT_JOBS", "1")
    assert not forked.can_fork(_Vmcore())
    monkeypatch.delenv("KLPINSPECT_JOBS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not forked.can_fork(_Vmcore())  # a script's thread pool, say
    finally:
        stop.set()
        other.join()
    assert forked.can_fork(_Vmcore())
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not forked.can_fork(_Vmcore())
    parent = os.getpid()
    assert forked.start(os.getpid, _Vmcore()).result() == parent  # one CPU: here


@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_audit_same_with_a_child(fixture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixtures' call sites are all correct: a stand-in scan gives every
    module a finding that says which process made it, so the test sees the
    findings come from the child, in the same place of the same report."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    real = callsite_audit.audit_module_callsites
    parent = os.getpid()

    def marked(target: Target, mod: ModuleInfo, stubs: Any, kernel: KernelInfo) -> list[Finding]:
        found = real(target, mod, stubs, kernel)
        where = "child" if os.getpid() != parent else "parent"
        return [*found, Finding(FindingCode.CALLSITE_NO_TOC_RESTORE,
                                f"{len(stubs)} stubs, scanned in the {where}",
                                module=mod.name, address=min(stubs, default=None))]

    monkeypatch.setattr(callsite_audit, "audit_module_callsites", marked)
    walk = livepatch.audit_livepatch_stacks

    def marked_walk(*args: Any, **kwargs: Any) -> Any:
        records, findings = walk(*args, **kwargs)
        where = "child" if os.getpid() != parent else "parent"
        return records, [*findings, Finding(FindingCode.LPSTACK_R2_UNKNOWN,
                                            f"{len(records)} tasks, walked in the {where}")]

    monkeypatch.setattr(livepatch, "audit_livepatch_stacks", marked_walk)
    core = _core(fixture, "vmcore.elf.xz")
    docs = {}
    for jobs in ("1", ""):
        monkeypatch.setenv("KLPINSPECT_JOBS", jobs)
        target = api.open_target(core)
        assert getattr(target, "forkable", False)
        docs[jobs] = json.loads(render(api.audit(target), "json"))
    serial, child = docs["1"], docs[""]
    msgs = [f["message"] for f in child["findings"] if f["code"] == "CALLSITE_NO_TOC_RESTORE"]
    assert len(msgs) == len(child["modules"]) > 10
    assert all(m.endswith("in the child") for m in msgs)
    walked = [f["message"] for f in child["findings"] if f["code"] == "LPSTACK_R2_UNKNOWN"]
    assert walked == [f"{len(child['tasks'])} tasks, walked in the child"]
    assert child["tasks"] and child["tasks"][0]["frames"]  # the livepatched task, named
    assert json.dumps(serial).replace("in the parent", "in the child") == json.dumps(child)


def test_dwarf_target_not_forked() -> None:
    target = api.open_target(_core(LP61, "vmcore.elf.xz"), symbols=[LP61 / "vmlinux.debug"])
    assert target.debuginfo == "dwarf"  # type: ignore[attr-defined]
    assert not forked.can_fork(target)
