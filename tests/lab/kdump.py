"""A real post-panic vmcore: crash Debian's stock ppc64el kernel into kdump.

The first kernel boots with ``crashkernel=320M``, loads the stock module set,
loads a capture kernel with ``kexec -p`` (kexec-tools of Debian's ppc64el
packages; the capture kernel is the same vmlinux with a small initramfs) and
panics through sysrq-c (``guest-init-kdump.sh``).  The capture kernel saves
``/proc/vmcore`` on a virtio disk: ``makedumpfile -F -c -d 31`` (Debian's
ppc64el makedumpfile) at 0, a raw copy at 512 MiB (``guest-init-capture.sh``),
and powers off.  The host then cuts the raw copy out (``vmcore.proc.elf``:
the crashed kernel's own ELF headers and VMCOREINFO) and turns the flattened
stream into a kdump-compressed file (``vmcore.kdump``), in Python.

    python3 tests/lab/lab.py --kernel stock kdump OUTDIR
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import stock
from lab import WORK, Guest, KernelSpec, LabError

__all__ = ("KdumpResult", "capture_kdump", "unflatten")

_HERE = Path(__file__).resolve().parent
_CAPTURE_MODULES = ["virtio_pci", "virtio_blk"]
_USERSPACE = ["kexec-tools", "makedumpfile"]
# makedumpfile's and kexec's shared libraries (Depends, and libdw1's)
_LIBS = ["libc6", "zlib1g", "liblzma5", "libbz2-1.0", "libelf1", "libdw1", "liblzo2-2", "libzstd1"]
_DISK = 1400 << 20
_RAW_AT = 512 << 20
_MDF_HEADER = 4096  # makedumpfile.h: MAX_SIZE_MDF_HEADER


@dataclass
class KdumpResult:
    vmcore: Path  # raw /proc/vmcore of the capture kernel
    kdump: Path | None  # makedumpfile -c -d 31, kdump-compressed
    boot_seconds: float
    crash_to_done_seconds: float
    console: str


def unflatten(src: Path, dst: Path, start: int = 0) -> int:
    """Rebuild a file from makedumpfile's flattened format (``-F``), as
    ``makedumpfile -R`` does: a 4 KiB header (``makedumpfile`` signature),
    then records of big-endian (offset, size) and data, ended by (-1, -1).

    :returns: the size of the rebuilt file
    """
    end = 0
    with open(src, "rb") as f, open(dst, "wb") as o:
        f.seek(start)
        if not f.read(_MDF_HEADER).startswith(b"makedumpfile"):
            raise LabError(f"{src}: no makedumpfile flattened header at {start:#x}")
        while True:
            hdr = f.read(16)
            if len(hdr) < 16:
                raise LabError(f"{src}: flattened data ends without its end marker")
            off, size = struct.unpack(">qq", hdr)
            if off == -1 and size == -1:
                break
            if off < 0 or size < 0 or size > 1 << 32:
                raise LabError(f"{src}: bad flattened record ({off}, {size})")
            data = f.read(size)
            if len(data) != size:
                raise LabError(f"{src}: flattened record runs past the end")
            o.seek(off)
            o.write(data)
            end = max(end, off + size)
        o.truncate(end)
    return end


def _kdump_spec(base: KernelSpec, work: Path) -> KernelSpec:
    kver = base.extra["kver"]
    root = work.parent  # tests/lab/work/stock-<kver>
    debs = stock.fetch_debs(root / "debs", _USERSPACE + _LIBS)
    for name, deb in debs.items():
        stock.extract(deb, root / "x" / name)
    img = Path(base.extra["image_root"])
    bb = Path(base.extra["busybox"])
    libs = [root / "x" / n for n in _LIBS]
    work.mkdir(parents=True, exist_ok=True)

    capture = work / "capture.cpio.gz"
    c = stock.Initramfs(capture)
    c.busybox(bb)
    c.file("init", _HERE / "guest-init-capture.sh", 0o755)
    c.modules(img, kver, _CAPTURE_MODULES)
    c.libraries(libs)
    c.file("bin/makedumpfile", root / "x" / "makedumpfile" / "usr" / "bin" / "makedumpfile", 0o755)
    c.close()

    first = work / "initramfs.cpio.gz"
    k = stock.Initramfs(first)
    k.busybox(bb)
    k.file("init", _HERE / "guest-init-kdump.sh", 0o755)
    k.modules(img, kver, stock.STOCK_MODULES)
    k.libraries(libs)
    k.file("sbin/kexec", root / "x" / "kexec-tools" / "sbin" / "kexec", 0o755)
    k.file("boot/vmlinux", base.files["vmlinux"])
    k.file("boot/capture.cpio.gz", capture)
    k.close()

    disk = work / "disk.img"
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as f:
        f.truncate(_DISK)
    # As few devices as can be: the capture kernel starts with whatever the
    # crashed kernel left running; one disk only (probing a second virtio-blk
    # hung in the capture kernel).
    args = [
        "-M", "pseries", "-cpu", "power9", "-m", "1G", "-smp", "2",
        "-kernel", "vmlinux", "-initrd", "initramfs.cpio.gz",
        "-append", "console=hvc0 loglevel=6 crashkernel=320M",
        "-display", "none", "-vga", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
        "-drive", "if=none,id=d1,file=disk.img,format=raw", "-device", "virtio-blk-pci,drive=d1",
    ]  # fmt: skip
    return KernelSpec(
        name="kdump",
        qemu_args=args,
        files={"vmlinux": base.files["vmlinux"], "initramfs.cpio.gz": first, "disk.img": disk},
        symbols=base.symbols,
        extra=dict(base.extra),
    )


def capture_kdump(out: Path, timeout: float = 900.0) -> KdumpResult:
    """Boot the stock kernel, panic it into kdump, and save the vmcores into *out*."""
    base = stock.stock_kernel()
    work = WORK / f"stock-{base.extra['kver']}" / "kdump"
    spec = _kdump_spec(base, work)
    out.mkdir(parents=True, exist_ok=True)
    with Guest(spec, work / "guest", gdb=False) as g:
        boot = g.wait_ready(timeout)
        t0 = time.monotonic()
        g.wait_ready(timeout, marker="RK-KDUMP-DONE", fatal=False)
        done = time.monotonic() - t0
        end = time.monotonic() + 60
        while g.alive() and time.monotonic() < end:  # the capture kernel powers off
            time.sleep(0.2)
        console = g.console_text()
    m = re.findall(r"RK-VMCORE-SIZE (\d+)", console)
    if not m or int(m[-1]) == 0:
        raise LabError("the capture kernel saw no /proc/vmcore (see its console)")
    size = int(m[-1])
    disk = work / "disk.img"
    vmcore = out / "vmcore.proc.elf"
    with open(disk, "rb") as f, open(vmcore, "wb") as o:
        f.seek(_RAW_AT)
        left = size
        while left:
            buf = f.read(min(left, 1 << 24))
            if not buf:
                raise LabError("raw /proc/vmcore copy on the disk is short")
            o.write(buf)
            left -= len(buf)
    kdump: Path | None = out / "vmcore.kdump"
    assert kdump is not None
    try:
        unflatten(disk, kdump)
    except LabError:
        kdump = None
    disk.unlink()
    (out / "console.log").write_text(console)
    return KdumpResult(vmcore, kdump, boot, done, console)
