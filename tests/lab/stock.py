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

__all__ = (
    "STOCK_MODULES",
    "Initramfs",
    "build_initramfs",
    "extract",
    "fetch_debs",
    "stock_kernel",
    "stock_kver",
)

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


def fetch_debs(debs: Path, names: list[str]) -> dict[str, Path]:
    """``apt-get download`` ppc64el packages by name into *debs*, once."""
    debs.mkdir(parents=True, exist_ok=True)
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


def extract(deb: Path, dest: Path, members: list[str] | None = None) -> None:
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


class Initramfs:
    """A gzip'ed ``newc`` cpio archive (the initramfs format), written without cpio(1).

    Parent directories are added as needed; :meth:`close` writes the trailer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw = open(path, "wb")  # noqa: SIM115
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1, mtime=0)
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
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

    def dir(self, name: str) -> None:
        name = name.strip("/")
        if not name or name in self._dirs:
            return
        self.dir(str(Path(name).parent) if "/" in name else "")
        self._dirs.add(name)
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes | Path, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(str(Path(name).parent))
        raw = data.read_bytes() if isinstance(data, Path) else data
        self._entry(name, stat.S_IFREG | mode, raw)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(str(Path(name).parent))
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def busybox(self, busybox: Path) -> None:
        for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "root"):
            self.dir(d)
        self.file("bin/busybox", busybox, 0o755)
        for a in _BUSYBOX_APPLETS:
            self.symlink(f"bin/{a}", "busybox")

    def modules(self, root: Path, kver: str, names: list[str] | tuple[str, ...]) -> list[str]:
        """Add *names* and their dependencies from the unpacked package at *root*;
        ``etc/modlist`` lists them in load order.  Returns that list."""
        if not (root / "lib" / "modules" / kver / "modules.dep").exists():
            # not shipped in the .deb (depmod runs at install time)
            _run(["depmod", "-b", str(root), kver])
        order: list[str] = []
        for m in names:
            try:
                deps = _run(["modprobe", "-d", str(root), "-S", kver, "--show-depends", m])
            except LabError:
                continue  # not built for this kernel
            for line in deps.splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "insmod":
                    rel = "/" + str(Path(words[1]).relative_to(root))
                    if rel not in order:
                        order.append(rel)
        for rel in order:
            self.file(rel, root / rel.lstrip("/"))
        self.file("etc/modlist", "".join(r + "\n" for r in order).encode())
        return order

    def libraries(self, roots: list[Path]) -> None:
        """Add the ppc64el shared libraries of unpacked packages (and the
        dynamic loader's ``/lib64/ld64.so.2``) under ``/lib/powerpc64le-linux-gnu``."""
        for r in roots:
            for f in sorted(r.rglob("*.so*")):
                if "powerpc64le-linux-gnu" not in str(f) or not (f.is_file() or f.is_symlink()):
                    continue
                dst = f"lib/powerpc64le-linux-gnu/{f.name}"
                if f.is_symlink():
                    self.symlink(dst, os.readlink(f).rsplit("/", 1)[-1])
                else:
                    self.file(dst, f, 0o755)
        self.symlink("lib64/ld64.so.2", "/lib/powerpc64le-linux-gnu/ld64.so.2")

    def close(self) -> None:
        self._entry("TRAILER!!!", 0)
        self._gz.close()
        self._raw.close()


def build_initramfs(root: Path, kver: str, busybox: Path, out: Path,
                    init: Path, modules: list[str] | tuple[str, ...]) -> int:
    """Write the stock guest's initramfs; returns how many modules it loads."""
    ird = Initramfs(out)
    ird.busybox(busybox)
    ird.file("init", init, 0o755)
    n = len(ird.modules(root, kver, modules))
    ird.close()
    return n


def stock_kernel(kver: str | None = None) -> KernelSpec:
    """Debian's stock ppc64el kernel with its debug info and a busybox initramfs
    (downloaded and built on first use: ~750 MB of packages, about a minute)."""
    kver = kver or stock_kver()
    base = WORK / f"stock-{kver}"
    debs = fetch_debs(
        base / "debs", [f"linux-image-{kver}", "busybox-static", f"linux-image-{kver}-dbg"]
    )
    img = base / "x" / "image"
    extract(debs[f"linux-image-{kver}"], img)
    bb = base / "x" / "busybox"
    extract(debs["busybox-static"], bb)
    dbg = base / "x" / "dbg"
    dbg_vmlinux = f"./usr/lib/debug/boot/vmlinux-{kver}"
    extract(debs[f"linux-image-{kver}-dbg"], dbg, [dbg_vmlinux])
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
