"""Debian's stock ppc64el kernel for the lab: for users without the fixtures.

Everything comes from Debian's archive by package name (``apt-get download``
of ppc64el packages; ``deps.sh --stock`` enables the architecture), into
``tests/lab/work/stock-<kver>/``, once:

* ``linux-image-<kver>`` (the kernel and its modules),
* ``linux-image-<kver>-dbg``: only ``vmlinux`` with its debug info is taken
  out of it (klpinspect ``-s``),
* ``busybox-static`` (the initramfs userland).

The initramfs (``initramfs.cpio.gz``, written here without cpio(1)) insmods
a set of real modules of the package that load without special hardware, in
dependency order (``modprobe --show-depends`` on the host, kmod), then prints
``RK-VMCOREINFO <paddr> <size>`` and ``RK-READY`` (``guest-init-stock.sh``).
No livepatches: Debian's kernel has ``CONFIG_LIVEPATCH`` but no patch module.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from lab import WORK, KernelSpec, LabError

__all__ = ("STOCK_MODULES", "build_initramfs", "fetch_debs", "stock_kernel", "stock_kver")

#: Modules that load without special hardware, plus virtio drivers for the
#: devices the guest gets; their dependencies come along.
STOCK_MODULES = (
    "virtio_pci virtio_console virtio_net virtio_blk virtio_balloon virtio_rng "
    "crc32c_vpmsum libcrc32c crc_itu_t crc7 crc8 crc64_rocksoft "
    "sha1_generic md5_ppc sha1_powerpc aes_generic tea cast6_generic serpent_generic "
    "ext4 xfs btrfs fuse overlay isofs squashfs vfat "
    "nf_tables nft_ct nft_chain_nat iptable_filter ip_tables nf_conntrack "
    "bridge 8021q tun veth dummy loop zram"
).split()

_HERE = Path(__file__).resolve().parent
_BUSYBOX_APPLETS = (
    "sh mount umount insmod rmmod lsmod cat echo sleep ls mkdir dmesg grep sed head "
    "tail uname poweroff sync true ps stat wc dd"
).split()


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} not found: run tests/lab/deps.sh --stock") from None
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["?"])[-1]
        raise LabError(f"{' '.join(argv[:3])} ...: {err}")
    return p.stdout


def stock_kver() -> str:
    """The kernel ABI name the ppc64el ``linux-image-powerpc64le`` package points at
    (``$KLP_STOCK_KVER`` overrides), e.g. ``6.1.0-50-powerpc64le``."""
    kver = os.environ.get("KLP_STOCK_KVER")
    if kver:
        return kver
    out = _run(["apt-cache", "depends", "linux-image-powerpc64le:ppc64el"])
    m = re.search(r"Depends: linux-image-(\S+-powerpc64le)(?::ppc64el)?\s", out)
    if not m:
        raise LabError(
            "apt knows no ppc64el linux-image-powerpc64le: run tests/lab/deps.sh --stock"
        )
    return m.group(1)


def fetch_debs(kver: str, debs: Path, dbg: bool = True) -> dict[str, Path]:
    """``apt-get download`` the ppc64el packages the stock guest needs, once."""
    debs.mkdir(parents=True, exist_ok=True)
    names = [f"linux-image-{kver}", "busybox-static"]
    if dbg:
        names.append(f"linux-image-{kver}-dbg")
    found: dict[str, Path] = {}
    for name in names:
        have = sorted(debs.glob(f"{name}_*_ppc64el.deb"))
        if not have:
            print(f"lab: apt-get download {name}:ppc64el", flush=True)
            _run(["apt-get", "-q", "download", f"{name}:ppc64el"], cwd=debs)
            have = sorted(debs.glob(f"{name}_*_ppc64el.deb"))
            if not have:
                raise LabError(f"apt-get download {name}:ppc64el gave no file")
        found[name] = have[-1]
    return found


def _extract(deb: Path, dest: Path, members: list[str] | None = None) -> None:
    """Unpack a .deb (only *members*, if given) into *dest*, once."""
    done = dest / ".extracted"
    if done.exists():
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if members is None:
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
    else:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                              stdout=subprocess.PIPE) as p:
            assert p.stdout is not None
            with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
                for ti in tar:
                    if ti.name in members and ti.isfile():
                        tar.extract(ti, dest, filter="data")
        if p.returncode != 0:
            raise LabError(f"dpkg-deb --fsys-tarfile {deb.name} failed")
    done.touch()


class _Cpio:
    """A gzip'ed ``newc`` cpio archive, the initramfs format."""

    def __init__(self, path: Path) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1, mtime=0)
        self._ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        )
        self._ino += 1
        out = io.BytesIO()
        out.write(hdr.encode() + name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
        self._gz.write(out.getvalue())

    def close(self) -> None:
        self.add("TRAILER!!!", 0)
        self._gz.close()
        self._raw.close()


def build_initramfs(root: Path, kver: str, busybox: Path, out: Path,
                    init: Path, modules: list[str]) -> int:
    """Write the stock guest's initramfs; returns how many modules it loads."""
    moddir = root / "lib" / "modules" / kver
    if not (moddir / "modules.dep").exists():
        # not shipped in the .deb (depmod runs at install time)
        _run(["depmod", "-b", str(root), kver])
    order: list[str] = []
    for m in modules:
        try:
            deps = _run(["modprobe", "-d", str(root), "-S", kver, "--show-depends", m])
        except LabError:
            continue  # not built for this kernel
        for line in deps.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod" and words[1] not in order:
                order.append(words[1])
    cpio = _Cpio(out)
    dirs = {"bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "root"}
    for rel in order:
        parts = Path(rel).relative_to(root).parent.parts
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    for d in sorted(dirs):
        cpio.add(d, stat.S_IFDIR | 0o755)
    cpio.add("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes())
    for a in _BUSYBOX_APPLETS:
        cpio.add(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox")
    cpio.add("init", stat.S_IFREG | 0o755, init.read_bytes())
    lst = "".join("/" + str(Path(rel).relative_to(root)) + "\n" for rel in order)
    cpio.add("etc/modlist", stat.S_IFREG | 0o644, lst.encode())
    for rel in order:
        cpio.add(str(Path(rel).relative_to(root)), stat.S_IFREG | 0o644, Path(rel).read_bytes())
    cpio.close()
    return len(order)


def stock_kernel(kver: str | None = None) -> KernelSpec:
    """Debian's stock ppc64el kernel with its debug info and a busybox initramfs
    (downloaded and built on first use: ~750 MB of packages, about a minute)."""
    kver = kver or stock_kver()
    base = WORK / f"stock-{kver}"
    debs = fetch_debs(kver, base / "debs")
    img = base / "x" / "image"
    _extract(debs[f"linux-image-{kver}"], img)
    bb = base / "x" / "busybox"
    _extract(debs["busybox-static"], bb)
    dbg = base / "x" / "dbg"
    dbg_vmlinux = f"./usr/lib/debug/boot/vmlinux-{kver}"
    _extract(debs[f"linux-image-{kver}-dbg"], dbg, [dbg_vmlinux])
    initrd = base / "initramfs.cpio.gz"
    init = _HERE / "guest-init-stock.sh"
    if not initrd.exists() or initrd.stat().st_mtime < init.stat().st_mtime:
        n = build_initramfs(img, kver, bb / "bin" / "busybox", initrd.with_suffix(".tmp"),
                            init, STOCK_MODULES)
        initrd.with_suffix(".tmp").replace(initrd)
        print(f"lab: stock initramfs with {n} modules: {initrd}", flush=True)
    disk = base / "disk.img"
    if not disk.exists():
        with open(disk, "wb") as f:
            f.truncate(16 << 20)
    args = [
        "-M", "pseries", "-cpu", "power9", "-m", "1G", "-smp", "2",
        "-kernel", "vmlinux", "-initrd", "initramfs.cpio.gz",
        "-append", "console=hvc0 loglevel=6",
        "-display", "none", "-vga", "none", "-monitor", "none", "-nic", "none",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-drive", "if=none,id=d0,file=disk.img,format=raw",
        "-device", "virtio-blk-pci,drive=d0",
        "-device", "virtio-rng-pci", "-device", "virtio-balloon-pci",
        "-device", "virtio-serial-pci",
    ]  # fmt: skip
    return KernelSpec(
        name="stock",
        qemu_args=args,
        files={
            "vmlinux": img / "boot" / f"vmlinux-{kver}",
            "initramfs.cpio.gz": initrd,
            "disk.img": disk,
        },
        symbols=[dbg / dbg_vmlinux],
        extra={"kver": kver},
    )
