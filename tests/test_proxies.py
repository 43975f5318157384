"""The recording proxies themselves: closing one must drop its upstream connection.

QEMU's QMP socket serves one client at a time; a recorder that kept its upstream
connection open after :meth:`QMPRecorder.close` left the next client (the next
``klpinspect --qemu`` of a live test) waiting for a greeting that never came.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from proxies import QMPRecorder

GREETING = b'{"QMP": {"version": {}, "capabilities": []}}\r\n'


class OneClientServer:
    """A Unix-socket server that, like QEMU's QMP, serves one client at a time
    and greets it; :attr:`open` counts connections the server has not yet seen close."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.open = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(8)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
            conn.sendall(GREETING)
            try:
                while data := conn.recv(4096):
                    if b"execute" in data:
                        conn.sendall(b'{"return": {}}\r\n')
            except OSError:
                pass
            conn.close()
            with self._lock:
                self.open -= 1

    def wait_idle(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self.open == 0:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()


def test_close_drops_upstream_connection(tmp_path: Path) -> None:
    """The client goes away and the recorder is closed at once, as after a
    ``klpinspect`` that exits through ``os._exit``: the upstream must see the
    connection close every time, or the next client never gets its greeting."""
    upstream = OneClientServer(str(tmp_path / "qmp.sock"))
    try:
        for i in range(40):
            rec = QMPRecorder(upstream.path, str(tmp_path / "rec.sock"))
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(5)
            c.connect(rec.path)
            assert c.recv(4096) == GREETING, i
            c.sendall(b'{"execute": "qmp_capabilities"}\n')
            assert b"return" in c.recv(4096), i
            c.close()
            rec.close()
            assert upstream.wait_idle(2), f"round {i}: upstream connection left open"
            assert rec.names() == ["qmp_capabilities"]
    finally:
        upstream.close()
