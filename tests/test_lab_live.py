"""Live tests: a real ppc64le guest under QEMU, read over QMP, compared with its dump.

One guest of the fixture's 6.1 livepatch kernel is booted per test session
(25-45 s under TCG) by the lab (``tests/lab/lab.py``); it is killed by its
own pid at the end.  Against it: ``klpinspect --qemu`` (the CLI, a
subprocess), the ``%klp-stubs`` drgn command on a program from ``open_qmp``,
the gdbstub, and a ``dump-guest-memory`` dump of the same guest taken in the
same run, which must give the same modules, stub slots, kinds and targets.
Bad input: no socket, a QEMU that is not ppc64, a ppc64 QEMU with no kernel,
a guest that goes away in the middle of an audit.

Needs ``qemu-system-ppc64`` (Debian ``qemu-system-ppc``; ``tests/lab/deps.sh``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import drgn
import pytest
from conftest import lp_fixture
from labload import load_lab
from proxies import QMPRecorder, RSPRecorder, qmp_violations, rsp_violations

from klpinspect.backends.drgn.qmp import QMPClient, QMPPhysicalMemory, open_qmp, qmp_read_stats
from klpinspect.errors import TargetError

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = REPO / "tests" / "lab"
CLI_TIMEOUT = 300


lab = load_lab()


def klpinspect(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "klpinspect.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.fixture(scope="session")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The fixture kernel, booted and ready (``RK-READY``)."""
    lp_fixture("6.1").file("qemu-cmdline.txt")  # FixtureMissing without ../shared
    g = lab.Guest(lab.fixture_kernel(), tmp_path_factory.mktemp("guest"))
    with g:
        g.wait_ready(timeout=300)
        yield g
    assert not g.alive()


@pytest.fixture(scope="session")
def guest_facts(guest: Any) -> dict[str, dict[str, str]]:
    """``RK-FACT module`` lines of this boot: {name: {".text": ..., ".toc": ..., ...}}."""
    mods: dict[str, dict[str, str]] = {}
    for line in guest.facts():
        words = line.split()
        if words[0] == "module":
            mods[words[1]] = dict(w.split("=", 1) for w in words[2:] if "=" in w)
    assert len(mods) == 40
    return mods


@pytest.fixture(scope="session")
def live_audit(guest: Any, vmlinux_debug: Path) -> dict[str, Any]:
    r = klpinspect("--qemu", guest.qmp_path, "-s", str(vmlinux_debug), "--format", "json", "audit")
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


@pytest.fixture(scope="session")
def guest_dump(guest: Any, live_audit: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Path]:
    """A fixed-up ``dump-guest-memory`` vmcore of the guest, taken after the live audit."""
    path = tmp_path_factory.mktemp("dump") / "vmcore.elf"
    result = guest.dump(path)
    assert result.fixup is not None and result.fixup.vmcoreinfo_added
    yield path
    path.unlink(missing_ok=True)


def _slots(report: dict[str, Any]) -> dict[str, Any]:
    """What must agree between two audits of one kernel: per module its TOC,
    ``.stubs`` address, every slot (index, address, kind, target, symbol),
    both trampolines; the tasks with a livepatch stack; the finding codes."""
    mods = {}
    for m in report["modules"]:
        stubs = [
            (s["index"], s["address"], s["kind"], s.get("target"), s.get("target_symbol"))
            for s in m.get("stubs", [])
        ]
        tramps = tuple(
            (t["address"], t["kind"], t.get("target")) if t else None
            for t in (m.get("tramp"), m.get("tramp_regs"))
        )
        mods[m["name"]] = (m.get("toc"), m.get("stubs_section"), stubs, tramps)
    tasks = {
        t["pid"]: (t["comm"], [(f["r2"], f["lr"], f["magic_ok"]) for f in t["frames"]])
        for t in report["tasks"]
    }
    codes = sorted((f["code"], f.get("module") or "") for f in report["findings"])
    return {"kernel": report["kernel"], "modules": mods, "tasks": tasks, "codes": codes}


# ---- the guest and the CLI over QMP


def test_guest_is_up(guest: Any) -> None:
    assert guest.alive()
    assert os.path.exists(guest.qmp_path)
    assert "RK-FACT kernel 6.1.192" in guest.console_text()
    assert guest.boot_seconds is not None and guest.boot_seconds < 300
    # the exact command line of the fixture, plus host-side files and ports only
    fixture = shlex.split((lab.fixture_dir() / "qemu-cmdline.txt").read_text())
    host = {"-serial", "-qmp", "-pidfile", "-gdb", "-daemonize"}
    kept = [a for i, a in enumerate(fixture) if a not in host and fixture[i - 1] not in host]
    assert guest.argv()[: len(kept)] == kept
    assert {"-M", "pseries", "-cpu", "power9", "-m", "512M", "-smp", "2"} <= set(kept)


def test_qemu_audit_reads_this_boot(live_audit: dict[str, Any], guest_facts: dict[str, Any]
                                    ) -> None:
    assert live_audit["target"]["kind"] == "qemu"
    assert live_audit["target"]["release"] == "6.1.192"
    assert live_audit["findings"] == []
    names = [m["name"] for m in live_audit["modules"]]
    assert sorted(names) == sorted(guest_facts)
    total = 0
    for m in live_audit["modules"]:
        fact = guest_facts[m["name"]]
        assert m["stubs_section"] == fact[".stubs"], m["name"]
        toc = (int(fact[".toc"], 16) & ~0xFF) + 0x8000
        assert int(m["toc"], 16) == toc, m["name"]
        assert m["tramp"]["target_symbol"] == "ftrace_caller"
        assert m["tramp_regs"]["target_symbol"] == "ftrace_regs_caller"
        total += sum(1 for s in m["stubs"] if s["kind"] != "empty")
    assert total == 1917  # as in the fixture dump: the same modules, the same slots
    (task,) = live_audit["tasks"]
    assert task["comm"] == "rk_target" and len(task["frames"]) == 2


def test_qemu_audit_equals_dump_audit(live_audit: dict[str, Any], guest_dump: Path,
                                      vmlinux_debug: Path) -> None:
    r = klpinspect("-c", str(guest_dump), "-s", str(vmlinux_debug), "--format", "json", "audit")
    assert r.returncode == 0, r.stderr
    dump_audit = json.loads(r.stdout)
    assert dump_audit["target"]["kind"] == "vmcore"
    live, dump = _slots(live_audit), _slots(dump_audit)
    assert live["kernel"] == dump["kernel"]
    assert live["modules"].keys() == dump["modules"].keys()
    for name in live["modules"]:
        assert live["modules"][name] == dump["modules"][name], name
    assert live["tasks"] == dump["tasks"]
    assert live["codes"] == dump["codes"]


def test_module_memory_equal_live_and_dump(guest: Any, guest_dump: Path,
                                           vmlinux_debug: Path) -> None:
    from drgn.helpers.linux.module import for_each_module

    live = open_qmp(guest.qmp_path)
    live.load_debug_info([str(vmlinux_debug)])
    dump = drgn.program_from_core_dump(str(guest_dump))
    dump.load_debug_info([str(vmlinux_debug)])
    assert live["init_uts_ns"].name.release.string_() == b"6.1.192"
    live_mods = {m.name.string_(): m for m in for_each_module(live)}
    dump_mods = {m.name.string_(): m for m in for_each_module(dump)}
    assert live_mods.keys() == dump_mods.keys() and len(live_mods) == 40
    stats = qmp_read_stats(live)
    assert stats is not None
    before = stats.copy()
    for name, m in live_mods.items():
        base, size = m.core_layout.base.value_(), m.core_layout.text_size.value_()
        assert base == dump_mods[name].core_layout.base.value_()
        assert live.read(base, size) == dump.read(base, size), name
    fetched = stats.round_trips - before.round_trips
    assert 0 < fetched <= 2 * len(live_mods) + 100  # cached and batched, not per read
    live.cache["klpinspect.qmp"].close()


def test_drgn_klp_stubs_command_over_qmp(guest: Any, vmlinux_debug: Path) -> None:
    import drgn.commands

    import klpinspect.backends.drgn.commands  # noqa: F401  (registers %klp-*)

    prog = open_qmp(guest.qmp_path)
    try:
        prog.load_debug_info([str(vmlinux_debug)])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            drgn.commands.run_command(prog, "klp-stubs rk_lp")
        text = out.getvalue()
        assert "rk_lib_sleep" in text and "ftrace_caller" in text, text
    finally:
        prog.cache["klpinspect.qmp"].close()


class _RSP:
    """Just enough of the gdb remote protocol: send a packet, read a reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def ask(self, payload: str, stop_reply: bool = False) -> str:
        self.sock.sendall(f"${payload}#{sum(payload.encode()) & 0xFF:02x}".encode())
        while True:
            m = re.search(rb"\$([^#]*)#[0-9a-fA-F]{2}", self.buf)
            if m is None:
                chunk = self.sock.recv(65536)
                assert chunk, "gdbstub closed the connection"
                self.buf += chunk
                continue
            self.buf = self.buf[m.end() :]
            self.sock.sendall(b"+")
            reply = m.group(1).decode()
            if not stop_reply and reply[:1] in ("T", "S"):
                continue  # a stop notice (QEMU sends one when gdb attaches)
            # run-length encoding: "X*n" repeats X (ord(n) - 29) more times
            return re.sub(r"(.)\*(.)", lambda r: r.group(1) * (ord(r.group(2)) - 28), reply)


def test_gdbstub_reads_what_qmp_reads(guest: Any, vmlinux_debug: Path) -> None:
    assert guest.gdb_address and guest.gdb_address.startswith("127.0.0.1:")
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with open(vmlinux_debug, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        syms = symtab.get_symbol_by_name("init_uts_ns")
        assert syms is not None and len(syms) == 1
        addr = syms[0]["st_value"]
    host, port = guest.gdb_address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        rsp = _RSP(s)
        assert rsp.ask("?", stop_reply=True).startswith("T")
        data = bytes.fromhex(rsp.ask(f"m{addr:x},{200:x}"))
        assert rsp.ask("D") == "OK"  # detach: the guest runs on
    assert b"6.1.192" in data
    with QMPClient(guest.qmp_path) as q:
        mem = QMPPhysicalMemory(q, 512 << 20)
        assert mem.read(addr - 0xC000000000000000, 200) == data
        mem.close()


# ---- bad input: one-line error, exit 2, nothing left running


def _one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_qemu_socket_missing(tmp_path: Path, vmlinux_debug: Path) -> None:
    r = klpinspect("--qemu", str(tmp_path / "nope.sock"), "-s", str(vmlinux_debug), "audit")
    _one_line_error(r, "nope.sock", "no such file")


@contextlib.contextmanager
def _bare_qemu(tmp_path: Path, *argv: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A QEMU with no guest running (-S), QMP only; killed by its pid afterwards."""
    sock = str(tmp_path / "bare.sock")
    p = subprocess.Popen(
        [*argv, "-S", "-nodefaults", "-display", "none",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if os.path.exists(sock) or p.poll() is not None:
                break
            time.sleep(0.05)
        assert p.poll() is None and os.path.exists(sock), "QEMU did not start"
        yield sock, p
    finally:
        p.kill()
        p.wait(timeout=10)


def test_qemu_not_ppc64(tmp_path: Path, vmlinux_debug: Path) -> None:
    with _bare_qemu(tmp_path, "qemu-system-ppc", "-M", "none") as (sock, _p):
        r = klpinspect("--qemu", sock, "-s", str(vmlinux_debug), "audit", timeout=60)
    _one_line_error(r, "not ppc64")


def test_qemu_without_kernel(tmp_path: Path, vmlinux_debug: Path) -> None:
    with _bare_qemu(tmp_path, "qemu-system-ppc64", "-M", "pseries", "-m", "512M") as (sock, _p):
        r = klpinspect("--qemu", sock, "-s", str(vmlinux_debug), "audit", timeout=60)
    _one_line_error(r, "VMCOREINFO")


def test_guest_killed_mid_read(tmp_path: Path) -> None:
    with _bare_qemu(tmp_path, "qemu-system-ppc64", "-M", "pseries", "-m", "512M") as (sock, p):
        client = QMPClient(sock, timeout=10)
        mem = QMPPhysicalMemory(client, 512 << 20)
        assert mem.read(0, 64) is not None
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(TargetError, match="went away"):
            mem.read(1 << 20, 64)
        assert time.monotonic() - t0 < 5
        mem.close()


def _audit_pmemsaves(guest: Any, vmlinux_debug: Path, tmp_path: Path) -> int:
    """How many ``pmemsave`` round trips a whole ``-s`` audit of the guest takes
    (it depends on the reader's chunk size: cut points are derived from it)."""
    with QMPRecorder(guest.qmp_path, str(tmp_path / "count.sock")) as rec:
        r = klpinspect("--qemu", rec.path, "-s", str(vmlinux_debug), "audit", timeout=120)
    assert r.returncode in (0, 1), r.stderr
    n = rec.names().count("pmemsave")
    assert n >= 20, n  # the open takes 3 (types from the BTF): half is mid-audit
    return n


@pytest.mark.parametrize(("extra", "cut_after"),
                         [(["--dwarf"], 30), ([], 2), ([], None)],
                         ids=["loading-debug-info", "reading-btf", "auditing"])
def test_guest_dies_mid_audit(guest: Any, live_audit: dict[str, Any], tmp_path: Path,
                              vmlinux_debug: Path, extra: list[str],
                              cut_after: int | None) -> None:
    # measured: opening with the DWARF takes ~104 pmemsave round trips with the
    # reader's 64 KiB chunks (~67 with 256 KiB ones), without it (types from the
    # BTF) 3; a whole audit ~145 (~90): "auditing" cuts at half of a whole
    # audit's, counted first, so that it stays mid-audit whatever the chunk size
    if cut_after is None:
        cut_after = _audit_pmemsaves(guest, vmlinux_debug, tmp_path) // 2
    with QMPRecorder(guest.qmp_path, str(tmp_path / "cut.sock"), cut_after=cut_after) as proxy:
        r = klpinspect("--qemu", proxy.path, "-s", str(vmlinux_debug), *extra, "audit",
                       timeout=120)
    _one_line_error(r, "went away")
    assert guest.alive()  # only the connection was cut


def test_audit_reads_are_cached_and_batched(guest: Any, vmlinux_debug: Path) -> None:
    from klpinspect.backends.drgn.program import open_program
    from klpinspect.backends.drgn.target import DrgnTarget
    from klpinspect.cli import make_parser
    from klpinspect.commands import run_parsed

    prog, kind = open_program(qemu=guest.qmp_path, symbols=[str(vmlinux_debug)])
    try:
        stats = qmp_read_stats(prog)
        assert stats is not None
        opened = stats.copy()
        args = make_parser().parse_args(["--format", "json", "audit"])
        text, status = run_parsed(DrgnTarget(prog, kind), "audit", args, "json")
        modules = len(json.loads(text)["modules"])
        assert modules == 40
        round_trips = stats.round_trips - opened.round_trips
        requests = stats.requests - opened.requests
        # measured: ~3 QMP round trips per module for ~770 reads per module
        assert round_trips <= 8 * modules, (round_trips, requests)
        assert requests >= 20 * round_trips
    finally:
        prog.cache["klpinspect.qmp"].close()


# ---- read-only, proven: recording proxies between the tools and the guest


# What gdb 13 + the klp-* commands send to QEMU 7.2's gdbstub (measured), by kind:
# handshake, thread and feature queries, one register read, memory reads, detach.
GDB_PACKET_KINDS = {
    "qSupported", "vMustReplyEmpty", "Hg", "qTStatus", "?", "qfThreadInfo", "qsThreadInfo",
    "qAttached", "Hc", "qOffsets", "g", "qSymbol", "qXfer:features:read", "vFile:setfs",
    "vFile:open", "m", "D",
}  # fmt: skip


def _packet_kind(p: str) -> str:
    if p[:1] in ("m", "g", "p", "?", "D"):
        return p[:1]
    if p[:1] == "H":
        return p[:2]
    if p.startswith("qXfer:"):
        return ":".join(p.split(":")[:3])
    return ":".join(p.split(":")[:2]) if p.startswith("vFile:") else p.split(":")[0]


def _run_state(guest: Any) -> str:
    with guest.qmp() as q:
        return str(q.execute("query-status")["status"])


def _assert_private_and_gone(rec: QMPRecorder) -> None:
    assert rec.scratch, "no guest memory was copied to a host file"
    for s in rec.scratch:
        assert s.file_mode == 0o600, (s.path, oct(s.file_mode or 0))
        assert s.dir_mode == 0o700 and s.dir_uid == os.getuid(), (s.path, oct(s.dir_mode))
        assert not os.path.exists(os.path.dirname(s.path)), s.path  # removed afterwards


@pytest.mark.parametrize("state", ["running", "paused"])
def test_qmp_sends_only_reads(guest: Any, live_audit: dict[str, Any], vmlinux_debug: Path,
                              tmp_path: Path, state: str) -> None:
    """Every QMP command of ``audit`` and ``bt`` is a read; scratch files are private
    and removed; a running guest runs on and a paused one stays paused."""
    pid = str(live_audit["tasks"][0]["pid"])
    with guest.qmp() as q:
        q.execute("stop" if state == "paused" else "cont")  # the test's own socket
    try:
        for argv in (["audit"], ["bt", pid], ["lpstack"]):
            with QMPRecorder(guest.qmp_path, str(tmp_path / "rec.sock")) as rec:
                r = klpinspect("--qemu", rec.path, "-s", str(vmlinux_debug),
                               "--format", "json", *argv)
            assert r.returncode == 0, r.stderr
            json.loads(r.stdout)
            names = rec.names()
            assert names[0] == "qmp_capabilities" and "pmemsave" in names, names
            assert qmp_violations(rec.commands) == [] and rec.malformed == []
            _assert_private_and_gone(rec)
            assert _run_state(guest) == state
    finally:
        with guest.qmp() as q:
            q.execute("cont")
    assert _run_state(guest) == "running"


def test_qmp_scratch_removed_when_audit_fails(guest: Any, vmlinux_debug: Path,
                                              tmp_path: Path) -> None:
    """QEMU goes away in the middle of the audit: exit 2, scratch files removed."""
    cut_after = _audit_pmemsaves(guest, vmlinux_debug, tmp_path) // 2
    with QMPRecorder(guest.qmp_path, str(tmp_path / "cut.sock"), cut_after=cut_after) as rec:
        r = klpinspect("--qemu", rec.path, "-s", str(vmlinux_debug), "audit", timeout=120)
    _one_line_error(r, "went away")
    assert qmp_violations(rec.commands) == []
    _assert_private_and_gone(rec)
    assert guest.alive() and _run_state(guest) == "running"


@pytest.mark.parametrize("state,end", [("running", "detach"), ("paused", "disconnect")])
def test_gdbstub_sends_only_reads(guest: Any, vmlinux_debug: Path, tmp_path: Path,
                                  state: str, end: str) -> None:
    """gdb + klp-audit/klp-lpstack/klp-bt through a recording proxy: only read packets.

    QEMU's gdbstub stops the guest when gdb connects and resumes it on ``D``
    (detach), even if it was paused before; so a running guest is left with
    ``detach`` and a paused one with ``disconnect`` (gdb/README.md).
    """
    from test_gdb import PPC64, SCRIPT, assert_clean, run_gdb

    assert guest.gdb_address
    host, port = guest.gdb_address.split(":")
    with guest.qmp() as q:
        q.execute("stop" if state == "paused" else "cont")
    try:
        assert _run_state(guest) == state
        out = tmp_path / "audit.json"
        with RSPRecorder((host, int(port))) as rec:
            proc = run_gdb(*PPC64, "-ex", f"file {vmlinux_debug}",
                           "-ex", f"target remote {rec.address}", "-ex", f"source {SCRIPT}",
                           "-ex", f"pipe klp-audit --format json | cat > {out}",
                           "-ex", "klp-lpstack", "-ex", "klp-stubs rk_lib", "-ex", end)  # fmt: skip
        assert_clean(proc)
        assert len(json.loads(out.read_text())["modules"]) == 40
        assert rsp_violations(rec.packets) == []
        kinds = {_packet_kind(p) for p in rec.packets}
        assert kinds <= GDB_PACKET_KINDS, kinds - GDB_PACKET_KINDS
        assert {"m", "g"} <= kinds
        assert ("D" in kinds) == (end == "detach")
        assert sum(1 for p in rec.packets if p.startswith("m")) > 1000
        assert _run_state(guest) == state
    finally:
        with guest.qmp() as q:
            q.execute("cont")
