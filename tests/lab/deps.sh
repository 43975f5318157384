#!/bin/bash
# deps.sh - install what the ppc64le lab needs, from Debian packages by name.
#
#   tests/lab/deps.sh            the fixture kernel lab: qemu-system-ppc
#   tests/lab/deps.sh --stock    + what the Debian kernel lab needs on the host:
#                                kmod (depmod/modprobe), gpgv and
#                                debian-archive-keyring (stock.py reads each
#                                suite's signed index itself: debarchive.py),
#                                gdb-multiarch (make matrix), and the ppc64el
#                                architecture, so that kdump.py can `apt-get
#                                download` kexec-tools and makedumpfile for
#                                ppc64el; nothing of ppc64el is installed)
#   tests/lab/deps.sh --lp       + what the lab's own livepatch kernel builds need
#                                (lpkernel.py, make matrix MATRIX=lp-ool): clang,
#                                lld and llvm 22 (Debian 12: bookworm-security;
#                                out-of-line ftrace stubs need clang), the
#                                ppc64el cross binutils/gcc (CROSS_COMPILE, the
#                                kernel's host tools), and the kernel build tools
#                                (libelf-dev: objtool, for the gcc PCREL build)
#   tests/lab/deps.sh --check    only say what is missing (exit 1 if anything)
#
# Idempotent: when everything is there it only runs dpkg-query (well under a
# second).  Needs root (or sudo) to install.
set -euo pipefail

stock=0 check=0 lp=0
for a in "$@"; do
  case $a in
    --stock) stock=1 ;;
    --lp) stock=1 lp=1 ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "deps.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

pkgs=(qemu-system-ppc)
if [ $stock = 1 ]; then
  pkgs+=(kmod gpgv debian-archive-keyring gdb-multiarch)
fi

if [ $lp = 1 ]; then
  pkgs+=(clang-22 lld-22 llvm-22 gcc-powerpc64le-linux-gnu binutils-powerpc64le-linux-gnu
         make bc flex bison libssl-dev libelf-dev dwarves kmod xz-utils perl)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
need_arch=0
if [ $stock = 1 ] && ! dpkg --print-foreign-architectures | grep -qx ppc64el; then
  need_arch=1
fi

if [ $check = 1 ]; then
  [ ${#missing[@]} = 0 ] && [ $need_arch = 0 ] && { echo "lab deps: all present"; exit 0; }
  [ ${#missing[@]} = 0 ] || echo "lab deps missing: ${missing[*]}"
  [ $need_arch = 0 ] || echo "lab deps: dpkg architecture ppc64el not enabled"
  exit 1
fi
if [ ${#missing[@]} = 0 ] && [ $need_arch = 0 ]; then
  echo "lab deps: all present (${pkgs[*]})"
  exit 0
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: run as root (or install sudo)" >&2; exit 2; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
if [ $need_arch = 1 ]; then
  echo "+ dpkg --add-architecture ppc64el"
  $SUDO dpkg --add-architecture ppc64el
fi
echo "+ apt-get update"
# a mirror that is mid-sync fails some index files: go on with the others
$SUDO apt-get update -q >/dev/null 2>&1 || echo "deps.sh: apt-get update had errors; installing anyway"
if [ ${#missing[@]} -gt 0 ]; then
  echo "+ apt-get install ${missing[*]}"
  log=$(mktemp)
  if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
fi
echo "lab deps: installed (${pkgs[*]})"
