#!/usr/bin/env python3
"""Livepatch kernels the lab builds itself (7.2 with clang 22: OOL ftrace stubs; 6.12 with gcc).

Debian's ppc64el kernels lack ``CONFIG_LIVEPATCH``, and the 7.2 fixture
(``../shared/fixtures/ppc64le-7.2-lp``) was built with gcc 12, which cannot
produce out-of-line (OOL) ftrace stubs: ``CONFIG_PPC_FTRACE_OUT_OF_LINE`` is
``def_bool PPC64 && ARCH_USING_PATCHABLE_FUNCTION_ENTRY``, and the kernel's
``check-fpatchable-function-entry.sh`` wants the patchable nop *after* the
ELFv2 local entry point, which gcc 12 puts before the global entry.  clang 22
(Debian 12's ``clang-22``/``lld-22``/``llvm-22``, bookworm-security) passes.

Adapted from the reference recipes in ``../shared/lab-recipes/7.2/``
(``20-build-lp-kernel.sh``, ``21-build-rkmods.sh``, ``22-lp-initramfs.sh``,
``guest-init-lp.sh``, ``23-run-lp.sh``; README "Third variant: out-of-line
ftrace stubs with clang 22"), rewritten on the lab's own code: the source
comes by package name from sid's signed index (:mod:`debarchive`, newest
version served), the initramfs is written by :class:`stock.Initramfs`, the
guest is a :class:`lab.Guest`.  The config fragments in ``lpkernel/`` are the
recipes' ``lp-kernel.config``, ``lp-kernel-ool.config`` and
``lp-kernel-pcrel.config``; ``lpkernel/rkmods/`` their ``rk_lib``,
``rk_target`` and ``rk_lp`` (livepatch) modules; ``lpkernel/guest-init-lp.sh``
their guest ``/init``.

Everything is cached under ``$KLP_LP_CACHE`` (default: the parent of the
Debian cache, ``/work/cache`` on the project's machine): ``lpsrc/VERSION/``
(the unpacked source), ``lpbuild-VARIANT/`` (``O=`` tree, the modules
installed in ``mods/``, out-of-tree modules in ``rkmods/`` and ``klptest/``).
A stamp over every input (source version, config, flags, module sources)
makes a re-run a no-op; a changed input re-runs ``make`` (incremental).

The ``612`` variant is the 6.12 era: trixie's ``linux-source-6.12`` (newest
version served) with gcc 12 and ``lp-kernel-612.config`` (the ppc crypto and
crc modules 7.x dropped); each :class:`Variant` names its source package,
suite and era, the source is unpacked in ``lpsrc/VERSION/`` all the same.

Usage: ``lpkernel.py build [VARIANT]`` (``ool``, ``pcrel``, ``612``), ``lpkernel.py
paths [VARIANT]``.  Host: ``deps.sh --stock --lp``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import debarchive  # noqa: E402

__all__ = (
    "VARIANTS",
    "LpBuild",
    "Variant",
    "build",
    "kernel_source",
    "lp_cache",
)

LPDIR = HERE / "lpkernel"
SOURCE_PACKAGE = "linux-source-7.2"
SOURCE_SUITE = "sid"
LLVM = "/usr/lib/llvm-22/bin/"
NICE = os.environ.get("KLP_LP_NICE", "19")
JOBS = int(os.environ.get("KLP_LP_JOBS", "2"))


@dataclass(frozen=True)
class Variant:
    """One livepatch kernel build: config fragments, toolchain, what must hold."""

    name: str
    fragments: tuple[str, ...]
    require: tuple[str, ...]
    llvm: bool = True
    btf: bool = False
    cpu: str = "power9"
    #: Debian source package and the suite whose index serves it (newest served)
    source_package: str = "linux-source-7.2"
    suite: str = "sid"
    #: the era's kernel line, for names and docs ("7.2", "6.12")
    era: str = "7.2"


_BASE_REQUIRE = (
    "CONFIG_LIVEPATCH=y", "CONFIG_LIVEPATCH_64=y", "CONFIG_KALLSYMS_ALL=y",
    "CONFIG_DYNAMIC_FTRACE=y", "CONFIG_DYNAMIC_FTRACE_WITH_REGS=y",
    "CONFIG_DYNAMIC_FTRACE_WITH_ARGS=y", "CONFIG_MODULES=y",
    "CONFIG_DEBUG_INFO_DWARF5=y", "CONFIG_DEBUG_INFO_COMPRESSED_ZLIB=y",
    "CONFIG_SAMPLE_LIVEPATCH=m", "CONFIG_PPC_PSERIES=y", "CONFIG_HVC_CONSOLE=y",
    "CONFIG_CRASH_DUMP=y", "CONFIG_VSX=y", "CONFIG_PPC_64K_PAGES=y",
)

VARIANTS: dict[str, Variant] = {
    # clang 22: patchable-function-entry after the local entry -> OOL ftrace stubs.
    # No BTF: pahole 1.24 (Debian 12) writes an invalid vmlinux BTF from clang 22's
    # DWARF ("BPF: Invalid offset"), and the kernel then refuses every module.
    "ool": Variant(
        "ool", ("lp-kernel.config", "lp-kernel-ool.config"),
        _BASE_REQUIRE + ("CONFIG_PPC_FTRACE_OUT_OF_LINE=y", "CONFIG_CC_IS_CLANG=y"),
    ),
    # POWER10 pc-relative kernel: r2 holds no TOC; boots with -cpu power10.  gcc
    # (Debian 12's cross gcc 12), not clang: arch/powerpc/Kconfig's CC_HAS_PCREL is
    # "PPC64 && CC_IS_GCC && ..." (clang emits no pcrel code with -msoft-float /
    # -mno-altivec / -mno-vsx: llvm-project issue 62372), so no OOL stubs here;
    # with gcc, pahole 1.24's BTF is good.
    "pcrel": Variant(
        "pcrel", ("lp-kernel.config", "lp-kernel-pcrel.config"),
        _BASE_REQUIRE + ("CONFIG_PPC_KERNEL_PCREL=y", "CONFIG_POWER10_CPU=y",
                         "CONFIG_CC_IS_GCC=y", "CONFIG_DEBUG_INFO_BTF=y"),
        llvm=False, btf=True, cpu="power10",
    ),
    # The 6.12 era (Debian trixie's kernel line) with gcc 12: module memory in
    # mod->mem[] (v6.4), section attributes still module_sect_attrs with
    # battrs (the v6.14 bin_attribute const change not yet), stubs ended by the
    # sentinel (no stub_count: v6.18), no OOL stubs (PPC_FTRACE_OUT_OF_LINE is
    # v6.13).  lp-kernel-612.config puts back the ppc crypto/crc modules 7.x
    # folded into lib/ (crc32c-vpmsum, md5-ppc, sha1-powerpc, libcrc32c).
    "612": Variant(
        "612", ("lp-kernel.config", "lp-kernel-612.config"),
        _BASE_REQUIRE + ("CONFIG_CC_IS_GCC=y", "CONFIG_DEBUG_INFO_BTF=y",
                         "CONFIG_CRYPTO_CRC32C_VPMSUM=m"),
        llvm=False, btf=True, source_package="linux-source-6.12", suite="trixie",
        era="6.12",
    ),
}


class LpError(Exception):
    """A livepatch kernel could not be had; the text is a one-line reason."""


def lp_cache() -> Path:
    """Where sources and builds live (``$KLP_LP_CACHE``, else beside the Debian cache)."""
    env = os.environ.get("KLP_LP_CACHE")
    return Path(env) if env else debarchive.cache_dir().parent


def _run(argv: Sequence[str], log: Path | None = None, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> None:
    """Run a build step at low priority; its output goes to *log* (the tail on failure)."""
    full = ["nice", "-n", NICE, *argv]
    if log is None:
        p = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True)
        out = p.stdout + p.stderr
    else:
        with log.open("a") as f:
            f.write(f"+ {' '.join(argv)}\n")
            f.flush()
            p = subprocess.run(full, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                               text=True)
        out = log.read_text(errors="replace")[-4000:]
    if p.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-25:])
        raise LpError(f"{' '.join(argv[:4])} ... failed (exit {p.returncode}):\n{tail}")


def kernel_source(package: str = SOURCE_PACKAGE, suite_name: str = SOURCE_SUITE
                  ) -> tuple[Path, str]:
    """Debian's *package* (``linux-source-7.2``: the newest version *suite_name*'s
    index has and the mirror serves), unpacked once: (source tree, package version)."""
    suite = debarchive.Suite(suite_name)
    cands = suite.candidates(package)
    deb = suite.fetch(package)
    version = next((p.version for p in cands if deb.name == Path(p.filename).name),
                   deb.name.split("_")[1])
    dest = lp_cache() / "lpsrc" / version
    tree = dest / package
    done = dest / ".unpacked"
    if done.exists() and tree.is_dir():
        return tree, version
    dest.mkdir(parents=True, exist_ok=True)
    print(f"lab: unpacking {deb.name} into {dest}", flush=True)
    tarball = dest / f"{package}.tar.xz"
    with tarball.open("wb") as out:
        p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        p2 = subprocess.run(["tar", "-xO", f"./usr/src/{package}.tar.xz"],
                            stdin=p1.stdout, stdout=out)
        p1.wait()
    if p1.returncode or p2.returncode:
        raise LpError(f"could not unpack {deb}")
    _run(["tar", "-C", str(dest), "-xJf", str(tarball)])
    tarball.unlink()
    done.touch()
    return tree, version


@dataclass(frozen=True)
class LpBuild:
    """A built livepatch kernel: everything the guest and the tools need."""

    variant: Variant
    source: Path
    version: str
    out: Path

    @property
    def vmlinux(self) -> Path:
        return self.out / "vmlinux"

    @property
    def mods(self) -> Path:
        """``INSTALL_MOD_PATH``: ``lib/modules/KVER/...`` below it."""
        return self.out / "mods"

    @property
    def kver(self) -> str:
        return (self.out / "include/config/kernel.release").read_text().strip()

    @property
    def rkmods(self) -> Path:
        return self.out / "rkmods"

    @property
    def klptest(self) -> Path:
        return self.out / "klptest"


def _make_env(b: LpBuild) -> tuple[dict[str, str], list[str]]:
    # Keep the build machine's directories out of the DWARF, as distribution
    # builds do (sources relative to the tree, the object tree "."), and a fixed
    # user@host in the version string.
    dirs = [b.rkmods, b.klptest]
    kcflags = " ".join([f"-fdebug-prefix-map={b.source}/="]
                       + [f"-fdebug-prefix-map={d}=." for d in (b.out, *dirs)])
    env = dict(os.environ, ARCH="powerpc", CROSS_COMPILE="powerpc64le-linux-gnu-",
               KBUILD_BUILD_USER="rk", KBUILD_BUILD_HOST="lab")
    env.pop("KCFLAGS", None)
    args = ["make", "-C", str(b.source), f"O={b.out}", f"KCFLAGS={kcflags}",
            f"KAFLAGS={kcflags}"]
    if b.variant.llvm:
        args.append(f"LLVM={LLVM}")
    return env, args


def _stamp(b: LpBuild, config_in: bytes, make_args: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(b.version.encode())
    h.update(config_in)
    h.update("\0".join(make_args).encode())
    for f in sorted((LPDIR / "rkmods").iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def build(variant: str = "ool", quiet: bool = False) -> LpBuild:
    """Build (or find built) the kernel, its modules, the livepatch selftest
    modules and rk_lib/rk_target/rk_lp for *variant*."""
    if variant not in VARIANTS:
        raise LpError(f"unknown livepatch variant {variant!r} (one of {', '.join(VARIANTS)})")
    v = VARIANTS[variant]
    if v.llvm and not Path(LLVM, "clang").exists():
        raise LpError(f"{LLVM}clang not found: run tests/lab/deps.sh --lp")
    src, version = kernel_source(v.source_package, v.suite)
    out = lp_cache() / f"lpbuild-{v.name}"
    b = LpBuild(v, src, version, out)
    out.mkdir(parents=True, exist_ok=True)
    env, make = _make_env(b)
    config_in = b"".join((LPDIR / f).read_bytes() for f in v.fragments)
    stamp = _stamp(b, config_in, make)
    stamp_file = out / ".lab-stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp and b.vmlinux.exists():
        return b
    log = out / "build.log"
    log.write_text("")
    t0 = time.monotonic()
    if not quiet:
        print(f"lab: building the {v.name} livepatch kernel {version} in {out} "
              f"(-j{JOBS}, log {log}; 20-40 min on 2 cores)", flush=True)
    used = out / "lp-kernel.config.used"
    if not (out / ".config").exists() or not used.exists() or used.read_bytes() != config_in:
        (out / ".config").write_bytes(config_in)
        _run([*make, "olddefconfig"], log, env)
        used.write_bytes(config_in)
    config = (out / ".config").read_text().splitlines()
    missing = [o for o in v.require if o not in config]
    if missing:
        raise LpError(f"{v.name}: after olddefconfig these do not hold: {' '.join(missing)}"
                      f" (see {out / '.config'})")
    if v.btf and "CONFIG_DEBUG_INFO_BTF=y" not in config:
        raise LpError(f"{v.name}: CONFIG_DEBUG_INFO_BTF lost")
    _run([*make, f"-j{JOBS}", "vmlinux", "modules"], log, env)
    if b.mods.exists():
        shutil.rmtree(b.mods)
    _run([*make, f"INSTALL_MOD_PATH={b.mods}", "modules_install"], log, env)
    # out of tree: rk_lib, rk_target, rk_lp; the livepatch selftest modules
    # (7.x: tools/testing/selftests/livepatch/test_modules, no CONFIG_TEST_LIVEPATCH)
    for d in (b.rkmods, b.klptest):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
    for f in (LPDIR / "rkmods").iterdir():
        shutil.copy(f, b.rkmods / f.name)
    tm = src / "tools/testing/selftests/livepatch/test_modules"
    for f in tm.glob("*.c"):
        shutil.copy(f, b.klptest / f.name)
    obj: list[str] = []
    grab = False
    for line in (tm / "Makefile").read_text().splitlines():
        if line.startswith("obj-m"):
            grab = True
        if grab:
            if not line.strip():
                break
            obj.append(line)
    (b.klptest / "Kbuild").write_text(
        "# obj-m of tools/testing/selftests/livepatch/test_modules/Makefile\n"
        + "\n".join(obj) + "\n")
    _run([*make, f"M={b.rkmods}", "modules"], log, env)
    _run([*make, f"M={b.klptest}", "modules"], log, env)
    _run([*make, f"M={b.klptest}", f"INSTALL_MOD_PATH={b.mods}",
          "INSTALL_MOD_DIR=selftests-livepatch", "modules_install"], log, env)
    stamp_file.write_text(stamp)
    dt = time.monotonic() - t0
    (out / "build-time.txt").write_text(f"{dt:.0f}\n")
    if not quiet:
        print(f"lab: {v.name} livepatch kernel built in {dt / 60:.1f} min", flush=True)
    return b


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lpkernel.py", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("build", "paths"))
    ap.add_argument("variant", nargs="?", default="ool", choices=tuple(VARIANTS))
    a = ap.parse_args(argv)
    try:
        b = build(a.variant)
    except (LpError, debarchive.ArchiveError) as e:
        print(f"lpkernel: {e}", file=sys.stderr)
        return 2
    print(f"vmlinux {b.vmlinux}\nmods {b.mods}\nkver {b.kver}\nrkmods {b.rkmods}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
