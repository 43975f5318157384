"""Live QEMU guests over QMP: a drgn Program for a running ppc64 pseries guest.

``drgn --qemu SOCK`` does not recognise a ppc64 pseries guest as a Linux
kernel (the guest has no vmcoreinfo device, so nothing tells drgn where the
kernel is).  :func:`open_qmp` builds the program by hand instead: a
``Program`` for the PPC64 platform, the guest's physical memory as a physical
segment read through QMP ``pmemsave``, ``set_linux_kernel_custom()`` with the
guest's VMCOREINFO (given, found through the debug file's
``vmcoreinfo_note`` symbol, or searched for in guest RAM), and the kernel's linear map
(``PAGE_OFFSET`` = ``0xc000000000000000``) as a virtual segment so that only
vmalloc and module addresses go through drgn's radix page-table walker.

QMP costs a round trip per command (about 0.5 ms for up to 64 KiB), so reads
are cached by aligned chunk and a run of missing chunks is fetched with one
``pmemsave``; drgn's many small reads then mostly hit the cache.  The cache
holds a snapshot: memory the guest changes after it was read is not seen
again (see :meth:`QMPPhysicalMemory.flush`).  Nothing is ever written to the
guest.

Only the standard library talks QMP (:class:`QMPClient`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import drgn

from klpinspect.backends.chunkcache import ChunkCache
from klpinspect.backends.vmcoreinfo import find_vmcoreinfo_note, read_vmcoreinfo_file
from klpinspect.errors import TargetError
from klpinspect.ppc64.radix import PAGE_OFFSET
from klpinspect.symtab import elf_symbol_value

__all__ = (
    "PAGE_OFFSET",
    "QMPClient",
    "QMPPhysicalMemory",
    "QMPReadStats",
    "find_vmcoreinfo",
    "read_vmcoreinfo_note",
    "open_qmp",
    "qmp_read_stats",
)

# Key under which open_qmp() leaves its QMPPhysicalMemory in ``prog.cache``.
_CACHE_KEY = "klpinspect.qmp"

# MSR_LE (bit 63 in IBM numbering, value 1): the CPU runs little-endian.
_MSR_LE = 1



class QMPClient:
    """A minimal QMP client over a unix socket: handshake, execute, events ignored.

    QEMU serves one client per QMP socket at a time; a second client gets no
    greeting until the first disconnects, which is reported after
    *greeting_timeout* seconds (QEMU greets at once otherwise).

    :param path: the QMP socket (``-qmp unix:PATH,server=on,wait=off``)
    :param timeout: seconds to wait for any one reply
    """

    def __init__(self, path: str, timeout: float = 30.0, greeting_timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._closed = False
        if not os.path.exists(path):
            raise TargetError(f"QMP socket {path}: no such file")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise TargetError(f"QMP socket {path}: cannot connect: {e.strerror or e}") from None
        self._file = self._sock.makefile("rwb")
        self._sock.settimeout(min(timeout, greeting_timeout))
        greeting = self._receive("greeting")
        if "QMP" not in greeting:
            self.close()
            raise TargetError(f"QMP socket {path}: not a QMP monitor (no greeting)")
        self._sock.settimeout(timeout)
        self.execute("qmp_capabilities")

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in (self._file, self._sock):
            try:
                c.close()
            except OSError:
                pass

    def _gone(self, what: str) -> TargetError:
        self.close()
        return TargetError(f"QEMU guest at {self.path} went away ({what})")

    def _receive(self, command: str) -> dict[str, Any]:
        while True:
            try:
                line = self._file.readline()
            except TimeoutError:
                waited = self._sock.gettimeout() or 0.0
                self.close()
                raise TargetError(
                    f"QMP {command}: no reply from {self.path} within {waited:g} s"
                    " (QEMU hung, or another QMP client is connected)"
                ) from None
            except OSError as e:
                raise self._gone(f"QMP {command}: {e.strerror or e}") from None
            if not line:
                raise self._gone(f"QMP connection closed during {command}")
            try:
                msg = json.loads(line)
            except ValueError:
                raise self._gone(f"QMP {command}: malformed reply") from None
            if not isinstance(msg, dict):
                raise self._gone(f"QMP {command}: malformed reply")
            if "event" in msg:  # asynchronous events are of no interest here
                continue
            return msg

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value.

        :raises TargetError: the command failed, timed out, or QEMU went away
        """
        if self._closed:
            raise TargetError(f"QEMU guest at {self.path} went away (QMP connection closed)")
        req: dict[str, Any] = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        try:
            self._file.write(json.dumps(req).encode() + b"\n")
            self._file.flush()
        except OSError as e:
            raise self._gone(f"QMP {command}: {e.strerror or e}") from None
        msg = self._receive(command)
        if "error" in msg:
            err = msg["error"]
            desc = err.get("desc", err) if isinstance(err, dict) else err
            raise TargetError(f"QMP {command}: {desc}")
        return msg.get("return")

    def hmp(self, line: str) -> str:
        """Run one human monitor command (``human-monitor-command``) and return its output."""
        out = self.execute("human-monitor-command", {"command-line": line})
        return str(out)


@dataclass
class QMPReadStats:
    """Counters of one :class:`QMPPhysicalMemory`.

    ``requests``: reads asked for (by drgn and by klpinspect);
    ``round_trips``: QMP ``pmemsave`` commands issued;
    ``bytes_fetched``: bytes those brought over; ``seconds``: time spent in them.
    """

    requests: int = 0
    round_trips: int = 0
    bytes_fetched: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.requests = self.round_trips = self.bytes_fetched = 0
        self.seconds = 0.0

    def copy(self) -> QMPReadStats:
        return QMPReadStats(self.requests, self.round_trips, self.bytes_fetched, self.seconds)


def _remove_scratch(fd: int, path: str) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)


class QMPPhysicalMemory:
    """Guest physical memory read through QMP ``pmemsave``, cached by aligned chunk.

    ``pmemsave`` writes guest memory to a file that QEMU opens by name; the
    file is in a private temporary directory (``/dev/shm`` when there is one),
    which is removed when this object goes away.  QEMU must run on this
    machine, as the same user or one that may write there.

    :param client: a connected :class:`QMPClient`
    :param size: bytes of guest RAM, from physical address 0
    :param chunk: cache granule in bytes (a power of two)
    :param cache_bytes: most bytes kept cached (least recently used dropped)
    """

    def __init__(
        self,
        client: QMPClient,
        size: int,
        chunk: int = 1 << 16,
        cache_bytes: int = 256 << 20,
    ) -> None:
        if chunk <= 0 or chunk & (chunk - 1):
            raise ValueError("chunk must be a power of two")
        self.client = client
        self.size = size
        self.chunk = chunk
        self.max_chunks = max(1, cache_bytes // chunk)
        self.stats = QMPReadStats()
        self._cache = ChunkCache(self.read_uncached, chunk, self.max_chunks)
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self._dir = tempfile.mkdtemp(prefix="klpinspect-qmp-", dir=base)
        self._file = os.path.join(self._dir, "pmem")
        # QEMU opens the file by name with O_TRUNC for each pmemsave, which
        # keeps the inode: one descriptor of ours reads every result.
        self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._finalizer = weakref.finalize(self, _remove_scratch, self._fd, self._dir)

    def close(self) -> None:
        """Drop the cache, remove the scratch file and close the QMP connection."""
        self._cache.clear()
        self._finalizer()
        self.client.close()

    def flush(self) -> None:
        """Forget cached memory, so that later reads see the guest as it is now."""
        self._cache.clear()

    def read_uncached(self, address: int, size: int) -> bytes:
        """Read guest physical memory with one ``pmemsave``, bypassing the cache."""
        if address < 0 or size < 0 or address + size > self.size:
            raise drgn.FaultError("outside guest RAM", address)
        if size == 0:
            return b""
        t0 = time.perf_counter()
        self.client.execute("pmemsave", {"val": address, "size": size, "filename": self._file})
        try:
            data = os.pread(self._fd, size, 0)
        except OSError as e:
            raise TargetError(f"QMP pmemsave wrote no readable file: {e}") from None
        if len(data) != size:
            raise TargetError(f"QMP pmemsave returned {len(data)} of {size} bytes at {address:#x}")
        st = self.stats
        st.round_trips += 1
        st.bytes_fetched += size
        st.seconds += time.perf_counter() - t0
        return data

    def read(self, address: int, size: int) -> bytes:
        """Read guest physical memory through the chunk cache.

        Missing chunks that are adjacent are fetched together, so a read of
        N uncached chunks costs one round trip, not N.
        """
        self.stats.requests += 1
        if address < 0 or size < 0 or address + size > self.size:
            raise drgn.FaultError("outside guest RAM", address)
        if size == 0:
            return b""
        return self._cache.read(address, size)

    # drgn segment callbacks: (address, count, offset, physical)
    def _read_physical(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        return self.read(address, count)

    def _read_linear(self, address: int, count: int, offset: int, physical: bool) -> bytes:
        return self.read(offset, count)


def _check_vmcoreinfo(text: bytes, origin: str) -> bytes:
    if not text.startswith(b"OSRELEASE=") or b"\nPAGESIZE=" not in text:
        raise TargetError(f"{origin}: not VMCOREINFO text (OSRELEASE=..., PAGESIZE=...)")
    return text if text.endswith(b"\n") else text + b"\n"


def find_vmcoreinfo(mem: QMPPhysicalMemory, scan_chunk: int = 32 << 20) -> tuple[bytes, str]:
    """Find the kernel's VMCOREINFO ELF note in guest RAM.

    The kernel keeps it in ``vmcoreinfo_note`` (kernel/crash_core.c), a
    buffer whose physical address it only tells through
    ``/sys/kernel/vmcoreinfo``.  RAM is read in large uncached pieces (about
    40 ms per 32 MiB) and searched for the note header, from low addresses up;
    the note is allocated early in boot, so the scan usually stops soon.

    :returns: (VMCOREINFO text, byte order of the note header: ``"little"``
        or ``"big"``)
    :raises TargetError: no such note in guest RAM
    """
    overlap = 1 << 16  # the note (~3 KiB of text) may straddle two pieces
    pos = 0
    while pos < mem.size:
        data = mem.read_uncached(pos, min(scan_chunk + overlap, mem.size - pos))
        found = find_vmcoreinfo_note(data)
        if found is not None:
            return _check_vmcoreinfo(found[0], "guest RAM"), found[1]
        pos += scan_chunk
    raise TargetError(
        f"no VMCOREINFO note in guest RAM ({mem.size >> 20} MiB scanned): is it running a "
        "Linux kernel?  Give its text with --vmcoreinfo FILE"
    )


def read_vmcoreinfo_note(
    mem: QMPPhysicalMemory, pointer: int, little: bool | None
) -> tuple[bytes, str] | None:
    """VMCOREINFO through the kernel's ``u32 *vmcoreinfo_note``, two reads
    where :func:`find_vmcoreinfo` scans RAM (~0.1 s for the first 64 MiB).

    A pseries kernel runs from real address 0 (``__after_prom_start`` in
    arch/powerpc/kernel/head_64.S copies it down), so the variable's physical
    address is its link address less ``PAGE_OFFSET``.  What it points to must
    be a whole VMCOREINFO note, else ``None`` (a kdump kernel running
    elsewhere, a debug file of another build): the caller scans then.

    :param pointer: link address of ``vmcoreinfo_note`` (``u32 **``)
    :param little: the guest's byte order, ``None``: unknown
    :returns: (VMCOREINFO text, byte order of the note header) or ``None``
    """
    phys = pointer - PAGE_OFFSET
    if not 0 <= phys <= mem.size - 8:
        return None
    raw = mem.read(phys, 8)
    for order in ("little", "big") if little is None else ("little" if little else "big",):
        note = int.from_bytes(raw, order) - PAGE_OFFSET
        if not 0 <= note < mem.size:
            continue
        # the note: header, "VMCOREINFO\0" padded, at most a page of text
        found = find_vmcoreinfo_note(mem.read(note, min(mem.size - note, 24 + (64 << 10))))
        if found is not None and found[1] == order:
            return found
    return None


class _DropOurFailures(logging.Filter):
    """Drop drgn's warnings that only repeat a :class:`TargetError` of ours.

    When QEMU goes away while drgn enumerates modules during debug-info
    loading, drgn logs the read error as a warning and goes on; the same
    error then ends the command with its own one-line message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "TargetError: QEMU guest at" not in record.getMessage()


_DROP_OUR_FAILURES = _DropOurFailures()


def _guest_little_endian(client: QMPClient) -> bool | None:
    """Whether CPU 0 runs little-endian (MSR_LE), or None if QEMU does not say."""
    out = client.hmp("info registers")
    m = re.search(r"\bMSR\s+([0-9a-fA-F]+)", out)
    if m is None:
        return None
    return bool(int(m.group(1), 16) & _MSR_LE)


def _ram_size(client: QMPClient) -> int:
    summary = client.execute("query-memory-size-summary")
    try:
        return int(summary["base-memory"])
    except (KeyError, TypeError, ValueError):
        raise TargetError("QMP query-memory-size-summary: no base-memory") from None


def open_qmp(
    socket_path: str,
    vmcoreinfo: str | bytes | None = None,
    *,
    timeout: float = 30.0,
    chunk: int = 1 << 16,
    symbols: Sequence[str] = (),
) -> drgn.Program:
    """Open a running ppc64 QEMU guest's kernel as a live drgn program over QMP.

    Debug info is not loaded; the caller does that (``prog.load_debug_info``).
    The reader and its counters stay in ``prog.cache`` (:func:`qmp_read_stats`).

    :param socket_path: the guest's QMP unix socket
    :param vmcoreinfo: path of a file with the guest's VMCOREINFO text, or
        the text itself as bytes; ``None``: find it in guest RAM
    :param timeout: seconds to wait for any one QMP reply
    :param chunk: cache granule in bytes
    :param symbols: debug files (``-s``): the first that defines
        ``vmcoreinfo_note`` spares the scan of guest RAM for VMCOREINFO
        (:func:`read_vmcoreinfo_note`)
    :raises TargetError: no socket, not a QMP monitor, not a ppc64 guest, no
        VMCOREINFO, or QEMU went away
    """
    text: bytes | None = None
    if isinstance(vmcoreinfo, str):
        text = _check_vmcoreinfo(read_vmcoreinfo_file(vmcoreinfo), vmcoreinfo)
    elif vmcoreinfo is not None:
        text = _check_vmcoreinfo(vmcoreinfo.rstrip(b"\0"), "vmcoreinfo")

    client = QMPClient(socket_path, timeout=timeout)
    try:
        arch = (client.execute("query-target") or {}).get("arch")
        if arch != "ppc64":
            raise TargetError(
                f"QEMU guest at {socket_path} is {arch or 'of unknown architecture'},"
                " not ppc64"
            )
        mem = QMPPhysicalMemory(client, _ram_size(client), chunk=chunk)
        little = _guest_little_endian(client)
        if text is None:
            found = None
            for path in symbols:
                pointer = elf_symbol_value(path, "vmcoreinfo_note")
                if pointer is not None:
                    found = read_vmcoreinfo_note(mem, pointer, little)
                    break
            if found is not None:
                text, order = _check_vmcoreinfo(found[0], "guest RAM"), found[1]
            else:
                text, order = find_vmcoreinfo(mem)
            if little is None:
                little = order == "little"
        if little is None:
            little = True  # ppc64le is what pseries guests run nowadays
        flags = drgn.PlatformFlags.IS_64_BIT
        if little:
            flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
        prog = drgn.Program(drgn.Platform(drgn.Architecture.PPC64, flags))
        prog.add_memory_segment(0, mem.size, mem._read_physical, True)
        try:
            prog.set_linux_kernel_custom(text, True)
        except (ValueError, drgn.FaultError) as e:
            raise TargetError(f"QEMU guest at {socket_path}: bad VMCOREINFO: {e}") from None
        # Added after set_linux_kernel_custom(): a later segment takes precedence
        # over its catch-all page-table segment, so linear-map reads skip the walk.
        prog.add_memory_segment(PAGE_OFFSET, mem.size, mem._read_linear, False)
        prog.cache[_CACHE_KEY] = mem
        logging.getLogger("drgn").addFilter(_DROP_OUR_FAILURES)  # idempotent
    except BaseException:
        client.close()
        raise
    return prog


def qmp_read_stats(prog: drgn.Program) -> QMPReadStats | None:
    """The read counters of a program made by :func:`open_qmp`, else None."""
    mem = prog.cache.get(_CACHE_KEY)
    return mem.stats if isinstance(mem, QMPPhysicalMemory) else None
