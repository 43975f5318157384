"""Recording proxies for the "read-only, proven" tests: QMP and the gdb remote protocol.

:class:`QMPRecorder` is a Unix-socket man-in-the-middle between a QMP client
(``klpinspect --qemu``) and QEMU's QMP socket; :class:`RSPRecorder` is a TCP
man-in-the-middle on 127.0.0.1 between gdb and QEMU's gdbstub.  Both forward
every byte unchanged and record what the client sent, so that a test can
assert that nothing but reads ever reached the guest.  They only listen on
this machine (a Unix socket, or the loopback address) and stop when the
client goes away or :meth:`close` is called.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "QMP_READ_ONLY",
    "QMPRecorder",
    "RSPRecorder",
    "ScratchFile",
    "qmp_violations",
    "rsp_violations",
)

#: QMP commands that never change the guest.  ``pmemsave``/``memsave``/
#: ``dump-guest-memory`` copy guest memory into a host file (checked to be
#: private by the recorder); ``human-monitor-command`` only with ``info ...``.
QMP_READ_ONLY = frozenset({"qmp_capabilities", "pmemsave", "memsave", "dump-guest-memory"})
_HMP_READ = re.compile(r"^\s*info\s+\S")


@dataclass
class ScratchFile:
    """A host file a QMP command told QEMU to write guest memory into, as the
    recorder saw it just before forwarding the command."""

    path: str
    file_mode: int | None  # None: no such file yet
    dir_mode: int
    dir_uid: int


class _Relay:
    """What both recorders share: accept clients, connect each to the upstream,
    copy upstream -> client as is and hand client data to :meth:`_forward`."""

    _lock: threading.Lock
    _socks: list[socket.socket]
    _server: socket.socket

    def _start(self, server: socket.socket) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._socks = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._spawn(self._serve, client)

    def _connect(self) -> socket.socket:
        raise NotImplementedError

    def _forward(self, buf: bytes, data: bytes, up: socket.socket) -> bytes:
        """Record (and send up) what the client sent; return what is left over.
        Raise ``ConnectionAbortedError`` to cut both sides."""
        raise NotImplementedError

    def _serve(self, client: socket.socket) -> None:
        try:
            up = self._connect()
        except OSError:
            client.close()
            return
        with self._lock:
            self._socks += [client, up]

        def down() -> None:
            with contextlib.suppress(OSError):
                while data := up.recv(65536):
                    client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

        self._spawn(down)
        buf = b""
        try:
            while data := client.recv(65536):
                buf = self._forward(buf + data, data, up)
        except OSError:
            pass
        finally:
            for s in (client, up):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        """Stop: drop every connection and wait until the upstream ones are gone.

        ``shutdown`` first: a plain ``close`` of a socket another thread is
        blocked in ``recv`` on leaves the connection open (Linux), and QEMU's
        QMP serves one client at a time, so a leaked upstream connection would
        keep the next client from ever getting its greeting.
        """
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._server.close()
        self._thread.join(5)
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        for s in socks:
            s.close()


@dataclass
class QMPRecorder(_Relay):
    """A recording QMP proxy: listens on *path*, forwards to *upstream*.

    :param cut_after: close both sides instead of forwarding the
        (cut_after+1)-th ``pmemsave`` (QEMU "dies" in the middle of a read)
    """

    upstream: str
    path: str
    cut_after: int | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)
    scratch: list[ScratchFile] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(4)
        self._start(server)

    def _record(self, line: bytes) -> bool:
        """Record one client line; False: cut the connection instead."""
        try:
            msg = json.loads(line)
        except ValueError:
            self.malformed.append(line)
            return True
        if not isinstance(msg, dict):
            self.malformed.append(line)
            return True
        with self._lock:
            self.commands.append(msg)
            name = msg.get("execute")
            args = msg.get("arguments") or {}
            if name in ("pmemsave", "memsave", "dump-guest-memory"):
                fname = args.get("filename") or str(args.get("protocol", "")).removeprefix("file:")
                self.scratch.append(_scratch(fname))
            if name == "pmemsave" and self.cut_after is not None:
                n = sum(1 for c in self.commands if c.get("execute") == "pmemsave")
                if n > self.cut_after:
                    return False
        return True

    def _connect(self) -> socket.socket:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.upstream)
        except OSError:
            up.close()
            raise
        return up

    def _forward(self, buf: bytes, data: bytes, up: socket.socket) -> bytes:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not self._record(line):
                raise ConnectionAbortedError
            up.sendall(line + b"\n")
        return buf

    def names(self) -> list[str]:
        with self._lock:
            return [str(c.get("execute")) for c in self.commands]

    def close(self) -> None:
        super().close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __enter__(self) -> QMPRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scratch(fname: str) -> ScratchFile:
    d = os.path.dirname(fname) or "."
    st_d = os.stat(d)
    try:
        fmode: int | None = stat.S_IMODE(os.stat(fname).st_mode)
    except FileNotFoundError:
        fmode = None
    return ScratchFile(fname, fmode, stat.S_IMODE(st_d.st_mode), st_d.st_uid)


def qmp_violations(commands: list[dict[str, Any]]) -> list[str]:
    """Every recorded command that is not a read (empty: all were reads)."""
    bad = []
    for c in commands:
        name = str(c.get("execute"))
        if name.startswith("query-") or name in QMP_READ_ONLY:
            continue
        if name == "human-monitor-command":
            line = str((c.get("arguments") or {}).get("command-line", ""))
            if _HMP_READ.match(line):
                continue
        bad.append(json.dumps(c))
    return bad


# ---- the gdb remote serial protocol

#: Packets gdb may send without changing the guest, by their leading
#: characters: reads (m g p ?), queries (q...), and the connection and feature
#: negotiation gdb needs (QStartNoAckMode, vMustReplyEmpty, H thread selection,
#: T thread-alive, ``vCont?`` which only asks what vCont supports, D detach).
RSP_READ_PREFIXES = ("m", "g", "p", "?", "q", "QStartNoAckMode", "vMustReplyEmpty", "H", "T",
                     "vCont?", "D", "vFile:setfs:", "vFile:pread:", "vFile:close:",
                     "vFile:fstat:")
# gdb 13 probes the remote file system with ``vFile:open:<"just probing">,0,1c``
# (flags 0: O_RDONLY); any other open flags would be a write.
_VFILE_OPEN_RDONLY = re.compile(r"^vFile:open:[0-9a-fA-F]*,0,[0-9a-fA-F]+$")
#: Packets that change the guest: memory and register writes, breakpoints,
#: resumption, kill and reset.
RSP_WRITE_PREFIXES = ("M", "X", "P", "G", "Z", "z", "c", "C", "s", "S", "vCont;", "k", "R",
                      "r", "!", "vRun", "vKill", "vAttach", "i", "I", "A", "B", "b", "W")


def rsp_violations(packets: list[str]) -> list[str]:
    """Packets that are not on the read list, or are on the write list."""
    bad = []
    for p in packets:
        if p in ("\x03",):
            bad.append("^C (interrupt)")
            continue
        if _VFILE_OPEN_RDONLY.match(p):
            continue
        if p.startswith(RSP_WRITE_PREFIXES) and not p.startswith(("vCont?", "qC")):
            bad.append(p[:40])
        elif not p.startswith(RSP_READ_PREFIXES):
            bad.append(p[:40])
    return bad


_PACKET = re.compile(rb"\$([^#]*)#[0-9a-fA-F]{2}")


class RSPRecorder(_Relay):
    """A recording gdb remote-protocol proxy on 127.0.0.1 (a free port).

    ``packets``: the payload of every packet the client (gdb) sent, in order;
    a bare ``\\x03`` (interrupt) is recorded as such.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.packets: list[str] = []
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self.address = f"127.0.0.1:{server.getsockname()[1]}"
        self._start(server)

    def _connect(self) -> socket.socket:
        up = socket.create_connection(self.upstream, timeout=30)
        up.settimeout(None)
        return up

    def _forward(self, buf: bytes, data: bytes, up: socket.socket) -> bytes:
        while True:
            # acks ('+', '-') and interrupts between packets
            i = buf.find(b"$")
            head = buf if i < 0 else buf[:i]
            if b"\x03" in head:
                with self._lock:
                    self.packets.append("\x03")
            if i < 0:
                buf = b""
                break
            buf = buf[i:]
            m = _PACKET.match(buf)
            if m is None:
                break
            with self._lock:
                self.packets.append(m.group(1).decode("latin-1"))
            buf = buf[m.end() :]
        up.sendall(data)
        return buf

    def __enter__(self) -> RSPRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
