#!/usr/bin/env bash
# Install what klpinspect and its test suite need on a Debian machine, by
# package name from Debian and PyPI only.  Idempotent: fast when done before.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(
  binutils-powerpc64le-linux-gnu   # assembler for the stub test vectors (ELFv2 LE)
  binutils-powerpc64-linux-gnu     # ELFv1 / big-endian vectors
  gcc-powerpc64le-linux-gnu        # objects that reproduce bad call sites (.ko lint)
  gcc-powerpc64-linux-gnu          # the same, big-endian ELFv1
  qemu-system-ppc                  # the live ppc64le lab guest
  gdb-multiarch                    # gdb front end tests
  python3-tabulate                 # gdb's embedded (system) Python renders tables with it
  gcc                              # a native program for the gdb wrong-architecture test
  xz-utils
)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY -c 'import klpinspect, drgn, capstone, tabulate, elftools, pytest, hypothesis' 2>/dev/null \
   || ! $PY -m pip show -q klpinspect >/dev/null 2>&1; then
  $PY -m pip install -q --disable-pip-version-check -e '.[test]'
fi
