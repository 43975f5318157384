#!/usr/bin/env python3
"""The ppc64le lab: boot a real ppc64le kernel under QEMU, dump it, tear it down.

A guest is ``qemu-system-ppc64 -M pseries -cpu power9 -m 512M -smp 2`` (TCG)
with a busybox initramfs that loads real modules, its console (hvc0) in a
file, a QMP socket for klpinspect (``qmp.sock``), a second QMP socket for the
lab itself (``lab.sock``: QEMU serves one client per socket), and a gdbstub on
127.0.0.1 at a free port.  Nothing listens beyond this machine.

Kernels:

``fixture``
    the 6.1 livepatch kernel of ``../shared/fixtures/ppc64le-6.1-lp``, booted
    with the exact QEMU command line of its ``qemu-cmdline.txt`` (only the
    host-side files and ports differ).  Its ``/init`` parks the ``rk_target``
    kthread in a livepatched function and prints ``RK-READY``.
``stock``
    Debian's ``linux-image-<ver>-powerpc64le`` with a busybox initramfs that
    insmods some 60 of its modules (``stock.py``; needs ``deps.sh --stock``).

As a library (``Guest`` is a context manager; QEMU is killed on exit, by its
own pid)::

    with Guest(fixture_kernel()) as g:
        g.wait_ready()
        subprocess.run(["klpinspect", "--qemu", g.qmp_path, ...])
        g.dump("vmcore.elf")

As a command: ``lab.py up|status|dump|down|fixup|demo|kdump`` (``lab.py -h``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

if __name__ == "__main__":  # one module object, whether run or imported (stock.py)
    sys.modules.setdefault("lab", sys.modules["__main__"])

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from qemucore import CoreFixup, QemuCoreError, fixup_qemu_core  # noqa: E402

from klpinspect.backends.drgn.qmp import QMPClient  # noqa: E402
from klpinspect.errors import TargetError  # noqa: E402

__all__ = (
    "DumpResult",
    "Guest",
    "KernelSpec",
    "LabError",
    "fixture_dir",
    "fixture_kernel",
    "free_port",
    "kernel_spec",
)

WORK = HERE / "work"
QEMU = "qemu-system-ppc64"
# Console lines that mean the guest will never become ready.
_FATAL = ("Kernel panic", "kernel BUG at", "Oops:", "Unable to mount root")
_PR_SET_PDEATHSIG = 1
# Options of qemu-cmdline.txt that name host-side files or ports: replaced.
_HOST_OPTS = {"-serial": 1, "-qmp": 1, "-pidfile": 1, "-gdb": 1, "-daemonize": 0}


class LabError(Exception):
    """The lab could not do what was asked; the text is a one-line reason."""


@dataclass
class KernelSpec:
    """A kernel the lab can boot.

    :param name: short name (``fixture``, ``stock``)
    :param qemu_args: QEMU arguments that define the guest (machine, CPU,
        memory, kernel, initrd, command line, devices), without console, QMP,
        gdbstub and pidfile; file names relative to the guest's work directory
    :param files: files linked into the work directory: {name there: source}
    :param symbols: debug info for klpinspect ``-s`` (vmlinux or its .debug)
    :param ready_marker: console line that says the guest is ready
    :param dumps_dir: where the lab keeps dumps of this kernel
    """

    name: str
    qemu_args: list[str]
    files: dict[str, Path]
    symbols: list[Path]
    ready_marker: str = "RK-READY"
    extra: dict[str, str] = field(default_factory=dict)


def fixture_dir() -> Path:
    """The 6.1 livepatch fixture (``$KLPINSPECT_FIXTURES/ppc64le-6.1-lp``)."""
    base = os.environ.get("KLPINSPECT_FIXTURES", str(REPO.parent / "shared" / "fixtures"))
    return Path(base).resolve() / "ppc64le-6.1-lp"


def _strip_host_options(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _HOST_OPTS:
            i += 1 + _HOST_OPTS[a]
            continue
        out.append(a)
        i += 1
    return out


def fixture_kernel(directory: Path | None = None) -> KernelSpec:
    """The fixture's 6.1 livepatch kernel, with its exact QEMU command line."""
    d = directory or fixture_dir()
    cmdline = d / "qemu-cmdline.txt"
    if not cmdline.exists():
        raise LabError(f"fixture missing: {cmdline} (../shared must sit beside the checkout)")
    argv = shlex.split(cmdline.read_text())
    if not argv or not argv[0].endswith(QEMU):
        raise LabError(f"{cmdline}: not a {QEMU} command line")
    args = _strip_host_options(argv[1:])
    files = {}
    for opt in ("-kernel", "-initrd"):
        if opt not in args:
            raise LabError(f"{cmdline}: no {opt}")
        name = args[args.index(opt) + 1]
        files[name] = d / name
    return KernelSpec(
        name="fixture",
        qemu_args=args,
        files=files,
        symbols=[d / "vmlinux.debug"],
        extra={"modules": str(d / "modules")},
    )


def kernel_spec(name: str) -> KernelSpec:
    """The kernel called *name*: ``fixture``, ``stock``, or a Debian suite's
    kernel: ``bookworm``, ``trixie``, ``sid``, ``trixie-64k``, ``sid-64k``
    (``stock.kernel_by_name``), or the lab's livepatch build ``lp-ool``
    (``lpmatrix.lp_kernel_spec``)."""
    if name == "fixture":
        return fixture_kernel()
    if name.startswith("lp-"):  # the lab's own livepatch builds (lpmatrix.py)
        import lpmatrix

        lp: KernelSpec = lpmatrix.lp_kernel_spec(name)
        return lp
    import stock

    spec: KernelSpec = stock.kernel_by_name(name)
    return spec


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _set_pdeathsig() -> None:
    """In the QEMU child: die with the process that started it (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    os.setpgrp()  # keep the terminal's ^C for the lab, which then stops QEMU itself


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _pid_is_ours(pid: int, marker: str) -> bool:
    """Whether *pid* is a QEMU whose command line mentions *marker* (our socket)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(QEMU.encode()) and any(
        marker.encode() in a for a in argv
    )


@dataclass
class DumpResult:
    """A ``dump-guest-memory`` capture: the file QEMU wrote, the fixed-up copy."""

    raw: Path | None
    path: Path
    dump_seconds: float
    fixup_seconds: float
    fixup: CoreFixup | None


class Guest:
    """One QEMU ppc64 pseries guest, started in a work directory.

    :param spec: the kernel (:func:`fixture_kernel`, :func:`kernel_spec`)
    :param workdir: directory for console log, sockets, pidfile (default
        ``tests/lab/work/<kernel>``)
    :param gdb: start a gdbstub on 127.0.0.1 at a free port
    :param daemonize: let QEMU outlive this process (``lab.py up``); else QEMU
        is this process's child and gets SIGKILL if this process dies
    """

    def __init__(
        self,
        spec: KernelSpec,
        workdir: Path | str | None = None,
        *,
        gdb: bool = True,
        daemonize: bool = False,
    ) -> None:
        self.spec = spec
        self.workdir = Path(workdir) if workdir else WORK / spec.name
        self.workdir = self.workdir.resolve()
        self.gdb = gdb
        self.daemonize = daemonize
        self.console_path = self.workdir / "console.log"
        self.pidfile = self.workdir / "qemu.pid"
        self.qemu_log = self.workdir / "qemu.log"
        self.gdb_port: int | None = None
        self.pid: int | None = None
        self.boot_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._t0 = 0.0
        # unix socket paths are limited to 107 bytes: fall back to a short dir
        sockdir = self.workdir
        if len(str(sockdir / "qmp.sock")) > 100:
            sockdir = Path(tempfile.mkdtemp(prefix="klplab-"))
        self.qmp_path = str(sockdir / "qmp.sock")
        self.lab_qmp_path = str(sockdir / "lab.sock")

    # ---- life cycle

    @property
    def gdb_address(self) -> str | None:
        """``127.0.0.1:PORT`` of the gdbstub (``target remote`` it), or None."""
        return f"127.0.0.1:{self.gdb_port}" if self.gdb_port else None

    def argv(self) -> list[str]:
        """The full QEMU command line (run in :attr:`workdir`)."""
        argv = [QEMU, *self.spec.qemu_args]
        argv += ["-serial", "file:console.log"]
        argv += ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        argv += ["-qmp", f"unix:{self.lab_qmp_path},server=on,wait=off"]
        argv += ["-pidfile", "qemu.pid"]
        if self.gdb_port:
            argv += ["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"]
        if self.daemonize:
            argv += ["-daemonize"]
        return argv

    def start(self) -> None:
        """Start QEMU (it boots in the background; see :meth:`wait_ready`)."""
        if shutil.which(QEMU) is None:
            raise LabError(f"{QEMU} not found: run tests/lab/deps.sh (Debian qemu-system-ppc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.pidfile.exists():
            old = self._read_pidfile()
            if old and _pid_alive(old) and _pid_is_ours(old, self.lab_qmp_path):
                raise LabError(f"a guest already runs in {self.workdir} (pid {old}): lab.py down")
        for p in (self.console_path, self.pidfile, Path(self.qmp_path), Path(self.lab_qmp_path)):
            p.unlink(missing_ok=True)
        for name, src in self.spec.files.items():
            if not src.exists():
                raise LabError(f"missing {src}")
            dst = self.workdir / name
            dst.unlink(missing_ok=True)
            dst.symlink_to(src)
        if self.gdb:
            self.gdb_port = free_port()
        argv = self.argv()
        (self.workdir / "qemu-cmdline.txt").write_text(shlex.join(argv) + "\n")
        self._t0 = time.monotonic()
        with open(self.qemu_log, "wb") as log:
            if self.daemonize:
                rc = subprocess.run(
                    argv, cwd=self.workdir, stdout=log, stderr=log, timeout=60
                ).returncode
                if rc != 0:
                    raise LabError(f"{QEMU} failed (exit {rc}): {self._qemu_log_tail()}")
                self.pid = self._read_pidfile()
            else:
                self._proc = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_set_pdeathsig,
                )
                self.pid = self._proc.pid

    def _read_pidfile(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _qemu_log_tail(self) -> str:
        try:
            lines = [
                ln for ln in self.qemu_log.read_text(errors="replace").splitlines()
                if "TCG doesn't support requested feature" not in ln
            ]
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def console_text(self) -> str:
        """The guest's console (hvc0) so far, without carriage returns."""
        try:
            return self.console_path.read_bytes().decode("utf-8", "replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def wait_ready(
        self, timeout: float = 300.0, marker: str | None = None, fatal: bool = True
    ) -> float:
        """Wait until the console shows the ready marker; return seconds since start.

        :param marker: a console line other than the kernel's ready marker
        :param fatal: give up when the console shows a panic or oops
        :raises LabError: QEMU exited, the kernel panicked, or *timeout* passed
        """
        marker = marker or self.spec.ready_marker
        pat = re.compile(rf"^{re.escape(marker)}\s*$", re.M)
        deadline = self._t0 + timeout
        while True:
            text = self.console_text()
            if pat.search(text):
                secs = time.monotonic() - self._t0
                if marker == self.spec.ready_marker:
                    self.boot_seconds = secs
                if self.pid is None:
                    self.pid = self._read_pidfile()
                return secs
            for bad in _FATAL if fatal else ():
                if bad in text:
                    line = next(ln for ln in text.splitlines() if bad in ln)
                    raise LabError(f"guest failed to boot: {line.strip()}")
            if not self.alive():
                raise LabError(f"{QEMU} exited during boot: {self._qemu_log_tail()}")
            if time.monotonic() > deadline:
                tail = text.strip().splitlines()[-1:] or ["(console empty)"]
                raise LabError(
                    f"guest not ready after {timeout:g} s (no {marker!r}); last console "
                    f"line: {tail[0][:120]}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop QEMU: QMP ``quit``, then SIGTERM, then SIGKILL, each wait bounded.

        Only the pid this guest started (or its pidfile names, when that
        process is a QEMU with this guest's sockets) is signalled.
        """
        pid = self.pid or self._read_pidfile()
        if pid is None:
            return
        if self._proc is None and not _pid_is_ours(pid, self.lab_qmp_path):
            self.pid = None
            return
        if self.alive():
            try:
                with QMPClient(self.lab_qmp_path, timeout=3) as q:
                    q.execute("quit")
            except TargetError:
                pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.alive():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            end = time.monotonic() + (timeout if sig is None else 5.0)
            while self.alive() and time.monotonic() < end:
                time.sleep(0.05)
            if not self.alive():
                break
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for p in (Path(self.qmp_path), Path(self.lab_qmp_path), self.pidfile):
            p.unlink(missing_ok=True)
        self.pid = None

    def __enter__(self) -> Guest:
        if self.pid is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- guest facts and dumps

    def qmp(self, timeout: float = 60.0) -> QMPClient:
        """A QMP client on the lab's own socket (close it: ``with g.qmp() as q``)."""
        return QMPClient(self.lab_qmp_path, timeout=timeout)

    def vmcoreinfo_location(self) -> tuple[int, int] | None:
        """(physical address, size) of the VMCOREINFO note the guest printed, if it did."""
        found = re.findall(
            r"RK-VMCOREINFO (?:0x)?([0-9a-fA-F]+) (?:0x)?([0-9a-fA-F]+)", self.console_text()
        )
        if not found:
            return None
        return int(found[-1][0], 16), int(found[-1][1], 16)

    def facts(self) -> list[str]:
        """The ``RK-FACT`` lines the guest printed (without the prefix)."""
        return [
            ln[len("RK-FACT ") :]
            for ln in self.console_text().splitlines()
            if ln.startswith("RK-FACT ")
        ]

    def dump(self, path: Path | str, fixup: bool = True, keep_raw: bool = False) -> DumpResult:
        """Dump guest memory with QMP ``dump-guest-memory`` (ELF, ``paging`` false).

        With *fixup*, *path* is the fixed-up vmcore (:mod:`qemucore`: LE
        headers, linear-map ``p_vaddr``, ``pr_pid``, VMCOREINFO note copied out
        of guest memory at the address the guest printed, else found by
        search); QEMU's own file is kept beside it as ``<path>.qemu`` only
        with *keep_raw*.  Without *fixup*, *path* is QEMU's file.
        """
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = path.with_name(path.name + ".qemu") if fixup else path
        raw.unlink(missing_ok=True)
        t0 = time.monotonic()
        with self.qmp(timeout=300) as q:
            q.execute(
                "dump-guest-memory",
                {"paging": False, "protocol": f"file:{raw}", "format": "elf"},
            )
            status = q.execute("query-dump") or {}
        if status.get("status") != "completed":
            raise LabError(f"dump-guest-memory did not complete: {status}")
        t1 = time.monotonic()
        if not fixup:
            return DumpResult(None, path, t1 - t0, 0.0, None)
        loc = self.vmcoreinfo_location()
        try:
            fx = fixup_qemu_core(raw, path, *(loc or (None, None)))
        except QemuCoreError as e:
            raise LabError(f"fix-up of {raw}: {e}") from None
        t2 = time.monotonic()
        if not keep_raw:
            raw.unlink()
        return DumpResult(raw if keep_raw else None, path, t1 - t0, t2 - t1, fx)


# ---- command line


def _klpinspect(args: Sequence[str]) -> list[str]:
    # this interpreter's klpinspect (the checkout's), not whichever is on PATH
    return [sys.executable, "-m", "klpinspect", *args]


def _guest_from_workdir(a: argparse.Namespace) -> Guest:
    g = Guest(kernel_spec(a.kernel), a.workdir, daemonize=True)
    g.pid = g._read_pidfile()
    return g


def cmd_up(a: argparse.Namespace) -> int:
    g = Guest(kernel_spec(a.kernel), a.workdir, gdb=not a.no_gdb, daemonize=True)
    g.start()
    try:
        secs = g.wait_ready(a.timeout)
    except BaseException:
        g.stop()
        raise
    (g.workdir / "lab.json").write_text(
        json.dumps({"qmp": g.qmp_path, "gdb": g.gdb_address, "pid": g.pid}) + "\n"
    )
    print(f"guest up in {secs:.1f} s: pid {g.pid}")
    print(f"  QMP     {g.qmp_path}")
    print(f"  gdbstub {g.gdb_address or '-'}")
    print(f"  console {g.console_path}")
    syms = " ".join(f"-s {s}" for s in g.spec.symbols)
    print(f"  try     klpinspect --qemu {g.qmp_path} {syms} audit")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    g = _guest_from_workdir(a)
    if g.pid and _pid_alive(g.pid) and _pid_is_ours(g.pid, g.lab_qmp_path):
        state = g.workdir / "lab.json"
        info = state.read_text().strip() if state.exists() else ""
        print(f"running: pid {g.pid} {info}")
        return 0
    print("not running")
    return 1


def cmd_dump(a: argparse.Namespace) -> int:
    g = _guest_from_workdir(a)
    if not (g.pid and g.alive()):
        raise LabError(f"no guest runs in {g.workdir}: lab.py up first")
    r = g.dump(a.out, fixup=not a.raw, keep_raw=a.keep_raw)
    print(f"dump {r.dump_seconds:.2f} s, fix-up {r.fixup_seconds:.2f} s: {r.path}")
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    g = _guest_from_workdir(a)
    g.stop()
    print("guest stopped")
    return 0


def cmd_fixup(a: argparse.Namespace) -> int:
    try:
        r = fixup_qemu_core(
            a.src,
            a.dst,
            int(a.paddr, 16) if a.paddr else None,
            int(a.size, 0) if a.size else None,
        )
    except (QemuCoreError, OSError) as e:
        raise LabError(f"fix-up of {a.src}: {e}") from None
    where = f"{r.vmcoreinfo_paddr:#x}" if r.vmcoreinfo_paddr is not None else "-"
    print(f"wrote {r.output}: {r.cpus} CPUs, VMCOREINFO from {where}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    spec = kernel_spec(a.kernel)
    with Guest(spec, a.workdir) as g:
        print(f"booting {spec.name} kernel: {QEMU} -M pseries (TCG) ...", flush=True)
        secs = g.wait_ready(a.timeout)
        print(f"guest ready in {secs:.1f} s; QMP {g.qmp_path}, gdbstub {g.gdb_address}")
        args = ["--qemu", g.qmp_path]
        for s in spec.symbols:
            args += ["-s", str(s)]
        args += ["--format", a.format, "audit"]
        print("+ klpinspect " + shlex.join(args), flush=True)
        t0 = time.monotonic()
        rc = subprocess.run(_klpinspect(args), timeout=600).returncode
        print(f"klpinspect audit: exit {rc} in {time.monotonic() - t0:.1f} s", flush=True)
    return 0 if rc in (0, 1) else rc


def cmd_kdump(a: argparse.Namespace) -> int:
    if a.kernel != "stock":
        raise LabError("kdump needs --kernel stock (the fixture initramfs has no kexec)")
    import kdump

    out = Path(a.out)
    r = kdump.capture_kdump(out, a.timeout)
    print(f"first kernel ready (kexec -p loaded) in {r.boot_seconds:.1f} s; "
          f"panic -> capture done in {r.crash_to_done_seconds:.1f} s")
    print(f"  {r.vmcore} ({r.vmcore.stat().st_size} bytes, raw /proc/vmcore)")
    if r.kdump:
        print(f"  {r.kdump} ({r.kdump.stat().st_size} bytes, makedumpfile -c -d 31)")
    syms = " ".join(f"-s {s}" for s in kernel_spec("stock").symbols)
    print(f"  try     klpinspect -c {r.vmcore} {syms} audit")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default="fixture",
                    help="fixture (default), stock, bookworm, trixie, sid, trixie-64k, sid-64k")
    ap.add_argument("--workdir", help="guest directory (default tests/lab/work/<kernel>)")
    sp = ap.add_subparsers(dest="cmd", required=True)
    s = sp.add_parser("up", help="boot a guest and leave it running")
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--no-gdb", action="store_true")
    sp.add_parser("status", help="is the guest running")
    s = sp.add_parser("dump", help="dump-guest-memory + fix-up into OUT")
    s.add_argument("out")
    s.add_argument("--raw", action="store_true", help="keep QEMU's file as it is, no fix-up")
    s.add_argument("--keep-raw", action="store_true", help="also keep QEMU's file (OUT.qemu)")
    sp.add_parser("down", help="stop the guest")
    s = sp.add_parser("fixup", help="fix up a QEMU ppc64 ELF dump into a vmcore")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--paddr", help="VMCOREINFO note physical address (hex)")
    s.add_argument("--size", help="its size")
    s = sp.add_parser("demo", help="boot, klpinspect --qemu audit, stop")
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--format", default="table", choices=("table", "json"))
    s = sp.add_parser("kdump", help="stock kernel only: panic into kdump, save vmcores in OUT")
    s.add_argument("out")
    s.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args(argv)
    if a.workdir is None:
        a.workdir = str(WORK / a.kernel)
    try:
        rc: int = globals()["cmd_" + a.cmd](a)
    except (LabError, TargetError) as e:
        print(f"lab.py: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
