"""A QMP server over a QEMU ``dump-guest-memory`` file: ``--qemu`` without a guest.

:class:`QMPDumpServer` listens on a Unix socket and answers the few QMP
commands ``klpinspect --qemu`` sends (:mod:`klpinspect.backends.drgn.qmp`) from
a dump QEMU itself wrote: ``query-target``, ``query-memory-size-summary``,
``human-monitor-command info registers`` (the MSR from the dump's
``NT_PRSTATUS`` note) and ``pmemsave`` (guest physical memory from the
dump's ``PT_LOAD`` segments into the file the client names).  Any other
command gets a QMP error, so a client that tries to change the guest fails.
It serves one client at a time, as QEMU does, until :meth:`close`.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import threading
from pathlib import Path
from typing import Any

from klpinspect.backends.elfcore import read_elf_core

__all__ = ("QMPDumpServer",)


class QMPDumpServer:
    """Serve QMP at *path* from the QEMU ELF dump *dump*.

    :ivar commands: every command received, in order (``execute`` names)
    """

    def __init__(self, dump: Path, path: Path) -> None:
        with open(dump, "rb") as f:
            core = read_elf_core(dump, f, f.read(4096))
            self._mem = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._loads = [ld for ld in core.loads if ld.memsz]
        self._msr = core.msr or 0
        self._ram = max(ld.paddr + ld.memsz for ld in self._loads)
        self.commands: list[str] = []
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
        self._mem.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self) -> QMPDumpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _physical(self, address: int, size: int) -> bytes:
        out = bytearray(size)
        for ld in self._loads:
            lo, hi = max(address, ld.paddr), min(address + size, ld.paddr + ld.filesz)
            if lo < hi:
                start = ld.offset + lo - ld.paddr
                out[lo - address : hi - address] = self._mem[start : start + hi - lo]
        return bytes(out)

    def _answer(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("execute")
        args = req.get("arguments") or {}
        self.commands.append(str(cmd))
        if cmd == "qmp_capabilities":
            return {"return": {}}
        if cmd == "query-target":
            return {"return": {"arch": "ppc64"}}
        if cmd == "query-memory-size-summary":
            return {"return": {"base-memory": self._ram}}
        if cmd == "human-monitor-command" and args.get("command-line") == "info registers":
            return {"return": f"NIP 0000000000000000   LR 0000000000000000\nMSR {self._msr:016x}\n"}
        if cmd == "pmemsave":
            with open(args["filename"], "wb") as f:
                f.write(self._physical(int(args["val"]), int(args["size"])))
            return {"return": {}}
        return {"error": {"class": "GenericError", "desc": f"{cmd}: not served from a dump"}}

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn, conn.makefile("rwb") as f:
                greeting = {"QMP": {"version": {"qemu": {"major": 9, "minor": 0, "micro": 0}},
                                    "capabilities": []}}
                f.write(json.dumps(greeting).encode() + b"\n")
                f.flush()
                for line in f:
                    f.write(json.dumps(self._answer(json.loads(line))).encode() + b"\n")
                    f.flush()
