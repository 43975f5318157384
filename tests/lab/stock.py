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
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from debarchive import ArchiveError, Suite, cache_dir
from lab import WORK, KernelSpec, LabError

__all__ = (
    "FLAVOURS",
    "STOCK_MODULES",
    "SUITES",
    "DebianKernel",
    "Initramfs",
    "build_initramfs",
    "debian_kernel",
    "extract",
    "fetch_debs",
    "kernel_by_name",
    "pick_kernel",
    "resolve_in",
    "stock_kernel",
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


def fetch_debs(debs: Path, names: list[str]) -> dict[str, Path]:
    """``apt-get download`` ppc64el packages by name into *debs*, once
    (the host's own suite: kexec-tools, makedumpfile and their libraries)."""
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


def _wanted(name: str, members: list[str] | Callable[[str], bool] | None) -> bool:
    if members is None:
        return True
    if callable(members):
        return members(name)
    return name in members


def extract(deb: Path, dest: Path, members: list[str] | Callable[[str], bool] | None = None,
            tag: str = "", done_when: Callable[[], bool] | None = None) -> None:
    """Unpack a .deb (only *members*: names, or a predicate on ``./path`` names)
    into *dest*, once (a marker file per *tag* remembers it; several packages
    can be unpacked into one tree with different tags).

    Symbolic links among the wanted members are kept as links (made here,
    relative to *dest* when absolute); :func:`resolve_in` follows them.
    *done_when* stops reading the package as soon as it is true (a ``-dbg``
    package is ~5 GB unpacked; the vmlinux comes early in it).
    """
    done = dest / f".extracted{'-' + tag if tag else ''}"
    if done.exists():
        return
    if not tag:
        shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    if members is None:
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
    else:
        stopped = False
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as p:
            assert p.stdout is not None
            with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
                for ti in tar:
                    if not _wanted(ti.name, members):
                        continue
                    if ti.isfile():
                        tar.extract(ti, dest, filter="data")
                    elif ti.issym():
                        link = dest / ti.name
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.unlink(missing_ok=True)
                        link.symlink_to(ti.linkname)
                    if done_when is not None and done_when():
                        stopped = True
                        break
            if stopped:
                p.kill()  # our own child: the rest of the package is not needed
        if p.returncode != 0 and not stopped:
            raise LabError(f"dpkg-deb --fsys-tarfile {deb.name} failed")
    done.touch()


def resolve_in(root: Path, rel: str) -> Path:
    """*rel* under *root*, following symbolic links as the package meant them:
    an absolute link target is taken relative to *root*, not the host's ``/``
    (the trixie/sid ``-dbg`` package's ``boot/vmlinux-KVER`` is a link to
    ``lib/modules/KVER/vmlinux``)."""
    path = root / rel.lstrip("./")
    for _ in range(16):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        if target.startswith("/"):
            path = root / target.lstrip("/")
        else:
            path = Path(os.path.normpath(path.parent / target))
    raise LabError(f"{rel}: too many symbolic links under {root}")


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
        ``etc/modlist`` lists them in load order.  Returns that list.

        Modules are found under ``lib/modules/KVER`` (bookworm) or
        ``usr/lib/modules/KVER`` (trixie, sid: merged /usr; a ``lib`` link is
        made for kmod).  Compressed modules (``.ko.xz``, trixie on) are
        decompressed here, so that the guest's busybox insmod takes them
        whatever its build supports; the guest sees ``.../foo.ko``.
        """
        if not (root / "lib").exists() and (root / "usr" / "lib" / "modules").is_dir():
            (root / "lib").symlink_to("usr/lib")
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
        guest: list[str] = []
        for rel in order:
            src = root / rel.lstrip("/")
            if rel.endswith(".ko.xz"):
                rel = rel.removesuffix(".xz")
                self.file(rel, lzma.decompress(src.read_bytes()))
            elif rel.endswith(".ko.zst"):
                raise LabError(f"{src.name}: zstd-compressed modules are not handled yet")
            else:
                self.file(rel, src)
            guest.append(rel)
        self.file("etc/modlist", "".join(r + "\n" for r in guest).encode())
        return guest

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


#: Debian's ppc64el kernel flavours: 4K and 64K pages.
FLAVOURS = ("powerpc64le", "powerpc64le-64k")
#: The suites the lab boots (oldstable, stable, unstable as of 2026).
SUITES = ("bookworm", "trixie", "sid")


@dataclass(frozen=True)
class DebianKernel:
    """A kernel of one suite and flavour, as the suite's index names it.

    :param image_packages: what holds the kernel image and modules: one
        ``linux-image-KVER`` (bookworm, trixie), or sid's split
        ``linux-binary-KVER`` + ``linux-modules-KVER`` (its
        ``linux-image-KVER`` being an empty dependency package)
    """

    suite: str
    flavour: str
    kver: str
    version: str
    image_packages: tuple[str, ...]
    dbg_package: str

    @property
    def name(self) -> str:
        """The lab's name for it: ``trixie``, ``sid-64k``..."""
        return self.suite + ("-64k" if self.flavour.endswith("-64k") else "")

    @property
    def page_size(self) -> str:
        return "64K" if self.flavour.endswith("-64k") else "4K"


def _packages_for(suite: Suite, kver: str) -> tuple[str, ...]:
    if suite.candidates(f"linux-binary-{kver}"):
        return (f"linux-binary-{kver}", f"linux-modules-{kver}")
    return (f"linux-image-{kver}",)


def pick_kernel(suite_name: str, flavour: str = "powerpc64le",
                kver: str | None = None) -> DebianKernel:
    """The newest kernel of *suite_name* and *flavour* whose packages the
    mirror serves: the one the ``linux-image-FLAVOUR`` metapackage depends on
    first, then every other ABI in the index, newest first (an index can name a
    version the pool no longer has)."""
    if flavour not in FLAVOURS:
        raise LabError(f"unknown flavour {flavour!r} ({' or '.join(FLAVOURS)})")
    try:
        suite = Suite(suite_name)
        kvers: list[str] = []
        if kver:
            kvers.append(kver)
        else:
            meta = suite.candidates(f"linux-image-{flavour}")
            if meta:
                m = re.search(rf"linux-image-(\S+-{re.escape(flavour)})\b(?!-)", meta[0].depends)
                if m:
                    kvers.append(m.group(1))
            rx = rf"linux-image-(\d\S*-{re.escape(flavour)})"
            others = [n.removeprefix("linux-image-") for n in suite.names(rx)]
            others.sort(key=lambda k: [int(x) for x in re.findall(r"\d+", k)], reverse=True)
            kvers += [k for k in others if k not in kvers]
        if not kvers:
            raise LabError(f"{suite_name} has no ppc64el {flavour} kernel")
        tried: list[str] = []
        for k in kvers:
            pkgs = _packages_for(suite, k)
            dbg = f"linux-image-{k}-dbg"
            if all(suite.serves(n) for n in (*pkgs, dbg)):
                version = suite.candidates(pkgs[0])[0].version
                return DebianKernel(suite_name, flavour, k, version, pkgs, dbg)
            tried.append(k)
    except ArchiveError as e:
        raise LabError(str(e)) from None
    raise LabError(f"{suite_name}: the mirror serves none of {', '.join(tried)} (with -dbg)")


def _elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _find_image(root: Path, kver: str) -> Path:
    """The bootable ELF vmlinux in an unpacked image package: bookworm and
    trixie ``boot/vmlinux-KVER``, sid ``usr/lib/modules/KVER/vmlinuz`` (on
    ppc64el an ELF vmlinux despite the name)."""
    cands = [f"boot/vmlinux-{kver}", f"usr/lib/modules/{kver}/vmlinuz",
             f"lib/modules/{kver}/vmlinuz", f"boot/vmlinuz-{kver}"]
    for c in cands:
        p = resolve_in(root, c)
        if _elf(p):
            return p
    raise LabError(f"no ELF kernel image in {root} (looked for {', '.join(cands)})")


def _find_dbg(root: Path, kver: str) -> Path:
    """The debug vmlinux of an unpacked ``-dbg`` package: ``usr/lib/debug/boot/
    vmlinux-KVER``, which on trixie and sid is a symbolic link to
    ``lib/modules/KVER/vmlinux`` (the link's target is what was unpacked)."""
    for c in (f"usr/lib/debug/boot/vmlinux-{kver}", f"usr/lib/debug/lib/modules/{kver}/vmlinux",
              f"usr/lib/debug/usr/lib/modules/{kver}/vmlinux"):
        p = resolve_in(root, c)
        if _elf(p):
            return p
    raise LabError(f"no debug vmlinux for {kver} in {root}")


def _has_dbg(root: Path, kver: str) -> bool:
    try:
        _find_dbg(root, kver)
    except LabError:
        return False
    return True


def _find_busybox(root: Path) -> Path:
    """busybox-static's binary: ``bin/busybox`` (bookworm), ``usr/bin/busybox`` (trixie on)."""
    for c in ("bin/busybox", "usr/bin/busybox"):
        p = resolve_in(root, c)
        if _elf(p):
            return p
    raise LabError(f"no busybox in {root}")


def _dbg_member(kver: str) -> Callable[[str], bool]:
    def want(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return "/debug/" in name and (
            base == f"vmlinux-{kver}" or (base == "vmlinux" and f"/{kver}/" in name)
        )
    return want


def debian_kernel(suite_name: str, flavour: str = "powerpc64le", kver: str | None = None,
                  name: str | None = None) -> KernelSpec:
    """A Debian ppc64el kernel of *suite_name* and *flavour* with its debug
    vmlinux and a busybox initramfs that insmods :data:`STOCK_MODULES`.

    Packages come from the suite's own index (:mod:`debarchive`, cached in
    ``/work/cache/debian``: ~1 GB per kernel, mostly ``-dbg``) and are unpacked
    once under the cache's ``kernels/KVER/``; the initramfs is written in
    ``tests/lab/work/debian-KVER/``.
    """
    k = pick_kernel(suite_name, flavour, kver)
    try:
        suite = Suite(suite_name)
        debs = {n: suite.fetch(n) for n in (*k.image_packages, k.dbg_package, "busybox-static")}
    except ArchiveError as e:
        raise LabError(str(e)) from None
    shared = cache_dir() / "kernels" / k.kver
    img = shared / "image"
    for n in k.image_packages:
        extract(debs[n], img, tag=n)
    dbg = shared / "dbg"
    extract(debs[k.dbg_package], dbg, _dbg_member(k.kver), tag=k.dbg_package,
            done_when=lambda: _has_dbg(dbg, k.kver))
    bb = shared / f"busybox-{suite_name}"
    extract(debs["busybox-static"], bb)
    vmlinux = _find_image(img, k.kver)
    dbg_vmlinux = _find_dbg(dbg, k.kver)
    base = WORK / f"debian-{k.kver}"
    spec = _guest_spec(base, img, k.kver, _find_busybox(bb), vmlinux, dbg_vmlinux,
                       name or k.name)
    spec.extra.update(suite=k.suite, flavour=k.flavour, version=k.version,
                      page_size=k.page_size, image_root=str(img), busybox=str(_find_busybox(bb)),
                      modules=str(resolve_in(img, f"lib/modules/{k.kver}")))
    return spec


def _guest_spec(base: Path, img: Path, kver: str, busybox: Path, vmlinux: Path,
                dbg_vmlinux: Path, name: str) -> KernelSpec:
    base.mkdir(parents=True, exist_ok=True)
    initrd = base / "initramfs.cpio.gz"
    init = _HERE / "guest-init-stock.sh"
    if not initrd.exists() or initrd.stat().st_mtime < max(
        init.stat().st_mtime, Path(__file__).stat().st_mtime
    ):
        n = build_initramfs(img, kver, busybox, initrd.with_suffix(".tmp"), init, STOCK_MODULES)
        initrd.with_suffix(".tmp").replace(initrd)
        print(f"lab: {name} initramfs with {n} modules: {initrd}", flush=True)
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
        name=name,
        qemu_args=args,
        files={"vmlinux": vmlinux, "initramfs.cpio.gz": initrd, "disk.img": disk},
        symbols=[dbg_vmlinux],
        extra={"kver": kver},
    )


def kernel_by_name(name: str) -> KernelSpec:
    """``stock`` (``$KLP_STOCK_SUITE``, default bookworm, 4K pages, or
    ``$KLP_STOCK_KVER``), or ``SUITE`` / ``SUITE-64k`` for SUITE in
    :data:`SUITES` (``trixie``, ``sid-64k``...)."""
    if name == "stock":
        return stock_kernel()
    suite, _, rest = name.partition("-")
    if suite not in SUITES or rest not in ("", "4k", "64k"):
        raise LabError(f"unknown kernel {name!r}: stock, or one of "
                       + ", ".join(f"{s}, {s}-64k" for s in SUITES))
    flavour = "powerpc64le-64k" if rest == "64k" else "powerpc64le"
    return debian_kernel(suite, flavour)


def stock_kernel(kver: str | None = None) -> KernelSpec:
    """Debian's stock ppc64el kernel with its debug info and a busybox initramfs
    (downloaded and built on first use: ~750 MB of packages, about a minute):
    ``$KLP_STOCK_SUITE`` (default bookworm), 4K pages; ``$KLP_STOCK_KVER``
    or *kver* picks an ABI of that suite."""
    suite = os.environ.get("KLP_STOCK_SUITE", "bookworm")
    return debian_kernel(suite, "powerpc64le", kver or os.environ.get("KLP_STOCK_KVER"),
                         name="stock")
