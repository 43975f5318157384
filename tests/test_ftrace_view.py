"""``klpinspect ftrace``: the redirected functions of both livepatch fixtures, from their own facts.

Expected values come from each fixture's ``facts.txt`` (``RK-FACT livepatch``:
the guest's ``/sys/kernel/livepatch``, patch -> ``object:function,sympos``;
``RK-FACT kallsyms``; ``RK-FACT proc_cmdline``, which says which of the two
``cmdline_proc_show`` patches runs) and its README module table
(``arch.tramp``), never from klpinspect's output.  Neither kernel has
out-of-line ftrace stubs (gcc 12), so every redirected site is a ``bl``
(``-mprofile-kernel``): to ``ftrace_caller`` in vmlinux, to the module's
``arch.tramp`` stub in a module.

The findings are checked on the real dump with a few words overlaid (a site
turned into the assembler's ``nop``, a ``klp_func.patched`` or a record's
``FTRACE_FL_ENABLED`` cleared), read through the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import drgn
import pytest
from asmutil import assemble
from conftest import LpFixture, drgn_env, lp_fixture
from fixturefacts import Facts

from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.errors import KlpError, MemoryReadError
from klpinspect.ftrace_view import LayoutSource, ftrace_report, read_ftrace_records
from klpinspect.ool_audit import livepatch_ops_names
from klpinspect.report import render_json, render_table

pytestmark = pytest.mark.dump
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def target(lp: LpFixture) -> Iterator[DrgnTarget]:
    prog, kind = open_program(core=str(lp.vmcore_elf), symbols=[str(lp.vmlinux_debug)])
    yield DrgnTarget(prog, kind)


@pytest.fixture(scope="module")
def doc(target: DrgnTarget) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(render_json(ftrace_report(target)))
    return result


def _loaded(facts: Facts) -> set[str]:
    return {"vmlinux", *(r.name for r in facts.modules)}


def test_redirects_are_the_patched_functions(doc: dict[str, Any], lp: LpFixture) -> None:
    """Exactly the functions of /sys/kernel/livepatch whose object is loaded, each with
    the patches that name it; nothing else is redirected."""
    facts = lp.facts
    want: dict[tuple[str, str], set[str]] = {}
    for patch, funcs in facts.livepatches.items():
        for obj, func, _sympos in funcs:
            if obj in _loaded(facts):  # livepatch_callbacks_busymod is not loaded
                want.setdefault((obj, func), set()).add(patch)
    assert len(want) == 5
    got = {}
    for r in doc["ftrace"]["redirects"]:
        (objs,) = {(k["object"], k["function"]) for k in r["klp"]}
        got[objs] = {k["patch"] for k in r["klp"]}
        assert r["owner"] == objs[0]
        assert r["symbol"].startswith(objs[1] + "+0x")
        assert "IPMODIFY" in r["flags"] and r["refs"] >= 1
        assert [o["func"] for o in r["ops"]] == ["klp_ftrace_handler"]
        assert r["ops"][0]["symbol"] == f"klp_ops({objs[0]}:{objs[1]})"
        # the ftrace_ops is that klp_func's klp_ops->fops
        assert {k["ops"] for k in r["klp"]} == {r["ops"][0]["address"]}
    assert got == want
    assert doc["findings"] == []
    assert doc["ftrace"]["records"] > 20000


def test_sites_call_the_right_trampoline(doc: dict[str, Any], lp: LpFixture) -> None:
    facts = lp.facts
    rows = {r.name: r for r in facts.modules}
    for r in doc["ftrace"]["redirects"]:
        target = int(r["site_target"], 16)
        if r["owner"] == "vmlinux":
            assert target == facts.sym("ftrace_caller") and r["site"] == "call ftrace_caller"
        else:
            # README: mod->arch.tramp, the stub to ftrace_caller
            assert target == rows[r["owner"]].tramp, r
            assert r["site"] == f"call {r['owner']}:arch.tramp"
        assert 0 < int(r["ip"], 16) - int(r["klp"][0]["old_func"], 16) <= 16


def test_klp_funcs_match_kallsyms_and_sysfs(doc: dict[str, Any], lp: LpFixture) -> None:
    facts = lp.facts
    klp = doc["ftrace"]["livepatch"]
    listed = {(k["patch"], k["object"], k["function"], max(k["sympos"], 1)) for k in klp}
    # /sys/kernel/livepatch/<p>/<obj>/<func>,<sympos>: "old_sympos ? old_sympos : 1"
    # (kernel/livepatch/core.c, klp_init_func)
    assert listed == {(p, o, f, s) for p, funcs in facts.livepatches.items()
                      for o, f, s in funcs}
    by_name = {(k["patch"], k["function"]): k for k in klp}
    for func in ("rk_target_inner", "rk_target_work"):
        k = by_name[("rk_lp", func)]
        assert int(k["old_func"], 16) == facts.sym(func, "rk_target")
        assert int(k["new_func"], 16) == facts.sym(f"livepatch_{func}", "rk_lp")
        assert k["new_symbol"] == f"livepatch_{func}"
        assert k["patched"] and k["active"] and not k["transition"]
    busy = by_name[("livepatch_callbacks_demo", "busymod_work_func")]
    assert not busy["patched"] and busy["old_func"] == "0x0"  # its module is not loaded
    assert not busy["object_loaded"]
    # RK-FACT livepatch: every patch enabled=1
    assert all(k["patch_enabled"] for k in klp)
    # proc_cmdline: "test_klp_livepatch: this has been live patched": that patch's
    # cmdline_proc_show is the one on top of the klp_ops func_stack
    cmdline = (facts.path / "facts.txt").read_text().split("RK-FACT proc_cmdline ")[1]
    winner = cmdline.split(":")[0]
    (r,) = [r for r in doc["ftrace"]["redirects"] if r["owner"] == "vmlinux"]
    assert {k["patch"]: k["active"] for k in r["klp"]} == {
        winner: True, ({"livepatch_sample", "test_klp_livepatch"} - {winner}).pop(): False}


def test_module_filter_and_table(target: DrgnTarget, lp: LpFixture) -> None:
    report = ftrace_report(target, ["rk_target"])
    assert [r.symbol.split("+")[0] for r in report.redirects if r.symbol] == [
        "rk_target_inner", "rk_target_work"]
    text = render_table(report)
    assert "2 of" in text and "ftrace records redirected" in text
    assert "rk_lp: rk_target:rk_target_work -> livepatch_rk_target_work (active)" in text
    assert len(ftrace_report(target, ["vmlinux"]).redirects) == 1
    with pytest.raises(KlpError, match="no module named 'xfz'"):
        ftrace_report(target, ["xfz"])


class Overlay:
    """A target with some words of the dump replaced: damage for the checks to find."""

    def __init__(self, inner: DrgnTarget, patches: dict[int, bytes]) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.patches = patches

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self, address: int, size: int) -> bytes:
        data = bytearray(self.inner.read(address, size))
        for at, blob in self.patches.items():
            for i, byte in enumerate(blob):
                if address <= at + i < address + size:
                    data[at + i - address] = byte
        return bytes(data)


def _record_address(prog: drgn.Program, ip: int) -> drgn.Object:
    """The ``struct dyn_ftrace`` of ``ip``, found with drgn's own objects."""
    page = prog["ftrace_pages_start"]
    while page:
        for i in range(int(page.index)):
            rec = page.records[i]
            if int(rec.ip) == ip:
                return rec
        page = page.next
    raise AssertionError(hex(ip))


def test_findings_on_overlaid_dump(target: DrgnTarget, doc: dict[str, Any]) -> None:
    prog = target.prog
    redirects = {r["klp"][0]["function"]: r for r in doc["ftrace"]["redirects"]}
    nop = assemble("insn.s").text[0:4]  # index 0: nop
    work, inner = redirects["rk_target_work"], redirects["rk_target_inner"]
    dummy = redirects["dummy_alloc"]
    work_ip, inner_ip, dummy_ip = (int(r["ip"], 16) for r in (work, inner, dummy))
    enabled = int(prog.constant("FTRACE_FL_ENABLED"))
    inner_rec = _record_address(prog, inner_ip)
    funcs = {}
    for patch in _list(prog, prog["klp_patches"].address_, "struct klp_patch", "list"):
        for obj in _list(prog, patch.obj_list.address_, "struct klp_object", "node"):
            for func in _list(prog, obj.func_list.address_, "struct klp_func", "node"):
                funcs[func.old_name.string_().decode()] = func
    patched = funcs["dummy_alloc"].patched
    overlay = Overlay(target, {
        work_ip: nop,  # the site of a patched function made a nop
        int(inner_rec.flags.address_): (int(inner_rec.flags) & ~enabled).to_bytes(8, "little"),
        int(patched.address_): b"\0",  # a redirect whose klp_func is no longer patched
    })
    assert isinstance(overlay, LayoutSource)
    report = ftrace_report(overlay)  # type: ignore[arg-type]
    found = sorted((f.code, f.address) for f in report.findings)
    assert found == sorted([
        ("FTRACE_PATCHED_SITE_NOP", work_ip),
        ("FTRACE_PATCHED_SITE_NOP", int(inner["klp"][0]["old_func"], 16)),
        ("FTRACE_REDIRECT_NO_PATCH", dummy_ip),
    ])
    assert report.exit_status == 1


def _list(prog: drgn.Program, head: int, type_name: str, member: str) -> Iterator[drgn.Object]:
    from drgn.helpers.linux.list import list_for_each_entry

    yield from list_for_each_entry(type_name, drgn.Object(prog, "struct list_head *", head),
                                   member)


def test_unreadable_pages_are_a_finding(target: DrgnTarget) -> None:
    class Broken(Overlay):
        def read(self, address: int, size: int) -> bytes:
            if size > 4096:  # the record arrays
                raise MemoryReadError(address, size, "not in the dump")
            return self.inner.read(address, size)

    report = ftrace_report(Broken(target, {}))  # type: ignore[arg-type]
    assert [f.code for f in report.findings] == ["MEMORY_UNREADABLE"]
    assert "ftrace bookkeeping unreadable" in report.findings[0].message
    with pytest.raises(MemoryReadError):
        read_ftrace_records(Broken(target, {}))


def test_damaged_livepatch_lists_are_findings(target: DrgnTarget) -> None:
    """A ``klp_object.func_list`` that loops back to its first node is ``LIST_CORRUPT``
    and a NULL link ``MEMORY_UNREADABLE`` (the walk the module list uses), not a
    traceback; ``audit``'s OOL naming, which reads the same lists, goes on."""
    prog = target.prog
    patch = next(_list(prog, prog["klp_patches"].address_, "struct klp_patch", "list"))
    obj = next(_list(prog, patch.obj_list.address_, "struct klp_object", "node"))
    funcs = list(_list(prog, obj.func_list.address_, "struct klp_func", "node"))
    first, last = funcs[0], funcs[-1]
    link = int(last.node.next.address_)
    loop = Overlay(target, {link: int(first.node.address_).to_bytes(8, "little")})
    report = ftrace_report(loop)
    assert [f.code for f in report.findings] == ["LIST_CORRUPT"]
    assert report.findings[0].address == int(first.node.address_)
    assert "klp_object.func_list list loops" in report.findings[0].message
    assert livepatch_ops_names(loop) == {}
    null = Overlay(target, {link: bytes(8)})
    report = ftrace_report(null)
    assert [f.code for f in report.findings] == ["MEMORY_UNREADABLE"]
    assert "klp_object.func_list list is damaged at 0x0" in report.findings[0].message


def test_cli_and_drgn_plugin() -> None:
    """The subcommand and %klp-ftrace (7.2; the same code as in process) give the report;
    a bad name is one line."""
    lp = lp_fixture("7.2")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "klpinspect", "-c", str(lp.vmcore_elf),
            "-s", str(lp.vmlinux_debug)]
    proc = subprocess.run([*base, "--format", "json", "ftrace", "rk_target"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    redirects = json.loads(proc.stdout)["ftrace"]["redirects"]
    assert [r["klp"][0]["function"] for r in redirects] == ["rk_target_inner", "rk_target_work"]
    bad = subprocess.run([*base, "ftrace", "xfz"], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "no module named 'xfz'" in bad.stderr
    code = ("import sys\n"
            "from drgn.commands import CommandError, run_command\n"
            "run_command(prog, 'klp-ftrace rk_target')\n"
            "try:\n"
            "    run_command(prog, 'klp-ftrace xfz')\n"
            "except CommandError as e:\n"
            "    print(e, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-m", "drgn", "-q", "-c", str(lp.vmcore_elf), "-s",
                           str(lp.vmlinux_debug), "-e", code],
                          capture_output=True, text=True, env=drgn_env(), timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "rk_lp: rk_target:rk_target_inner -> livepatch_rk_target_inner (active)" in proc.stdout
    assert "klp-ftrace: no module named 'xfz'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_synthetic_target_without_layout_is_refused() -> None:
    from synthetic import SyntheticTarget

    from klpinspect.ftrace_view import FtraceUnsupported
    from klpinspect.target import KernelInfo

    with pytest.raises(FtraceUnsupported, match="cannot read ftrace records"):
        ftrace_report(SyntheticTarget(kernel_info=KernelInfo(release="x")))



def test_damaged_dump_is_findings(tmp_path: Path) -> None:
    """A dump cut after the kernel's own data: the ftrace pages are past the cut, which
    the view reports (with the back end's own note on the truncation) and survives."""
    lp = lp_fixture("6.1")
    cut = tmp_path / "cut.core"
    with open(lp.vmcore_elf, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(64 << 20))
    prog, kind = open_program(core=str(cut), symbols=[str(lp.vmlinux_debug)])
    report = ftrace_report(DrgnTarget(prog, kind))
    cut.unlink()
    assert {f.code for f in report.findings} == {"MEMORY_UNREADABLE"}
    messages = [f.message for f in report.findings]
    assert any(m.startswith("ftrace bookkeeping unreadable") for m in messages), messages
    assert any("core file truncated" in m for m in messages), messages
    assert report.redirects == [] and report.exit_status == 0


@pytest.mark.parametrize("name", ["vmcore.kdump", "vmcore.qemu.elf.xz"])
def test_other_dump_formats_agree(name: str) -> None:
    """6.1's kdump-compressed and raw QEMU dumps give vmcore.elf's ftrace view."""
    lp = lp_fixture("6.1")
    docs = []
    for core in (lp.vmcore_elf, lp.unpacked(name) if name.endswith(".xz") else lp.file(name)):
        prog, kind = open_program(core=str(core), symbols=[str(lp.vmlinux_debug)])
        doc = json.loads(render_json(ftrace_report(DrgnTarget(prog, kind))))
        docs.append((doc["ftrace"], doc["findings"]))
    assert docs[0] == docs[1]
    patched = {(o, f) for funcs in lp.facts.livepatches.values() for o, f, _ in funcs
               if o in _loaded(lp.facts)}
    assert len(docs[0][0]["redirects"]) == len(patched)
