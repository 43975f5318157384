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
  qemu-user-static                 # runs Debian's ppc64el makedumpfile (gdb on its ELF output)
  python3-tabulate                 # gdb's embedded (system) Python renders tables with it
  gcc                              # a native program for the gdb wrong-architecture test
  strace                           # proves --live opens /proc/kcore read-only
  xz-utils
  binutils-arm-linux-gnueabihf     # ARM32 prologue vectors (klpinspect prologue)
  gcc-arm-linux-gnueabihf          # real GCC -mapcs-frame -pg shapes for the same tests
  bpftool                          # BTF reader tests: bpftool's dump is the oracle
  clang                            # BTF with every kind (DECL_TAG, TYPE_TAG) for the BTF tests
  dwarves                          # pahole -J: ENUM64 BTF for the BTF tests
  kmod                             # depmod/modprobe: module order of Debian kernels (tests/lab/stock.py)
  gpgv                             # checks Debian suites' InRelease (tests/lab/debarchive.py)
  debian-archive-keyring           # ... against Debian's archive keys
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

# The Python to install into: $PYTHON if given, else python3 when pip may
# install into it, else (Debian's system Python: no pip, PEP 668) a venv of
# our own in .venv.  scripts/python prints the choice for the other scripts.
PY=${PYTHON:-}
if [ -z "$PY" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
  if python3 -m pip --version >/dev/null 2>&1 && ! python3 -c '
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    PY=python3
  else
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      SUDO=""
      [ "$(id -u)" = 0 ] || SUDO=sudo
      $SUDO apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
    fi
    python3 -m venv .venv
    PY=.venv/bin/python
  fi
fi
mkdir -p .cache
printf '%s\n' "$PY" > .cache/python

# (Re)install when anything is missing or klpinspect resolves to another checkout.
here=$(pwd -P)
if [ "$($PY -c 'import os, klpinspect, drgn, capstone, tabulate, elftools, pytest, hypothesis, mypy
print(os.path.dirname(os.path.dirname(os.path.realpath(klpinspect.__file__))))' 2>/dev/null)" != "$here" ]
then
  $PY -m pip install -q --disable-pip-version-check -e '.[test]'
fi
