#!/usr/bin/env bash
# Fetch Debian's armhf kernel image package (linux-image-<abi>-armmp, ~45 MB; the
# modules, not the -dbg vmlinux) into a cache dir and unpack it; print the
# unpacked lib/modules/<version> directory.  For tests/test_arm32_debian.py (CI)
# and docs/arm32.md.  The version is whatever Debian's index offers today: the
# meta-package linux-image-armmp:armhf names it.
#
#   tests/arm32/fetch.sh [CACHEDIR]        (default: .cache/arm32 in the checkout)
#
# Adds the armhf architecture to dpkg (and runs apt-get update) when needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-.cache/arm32}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)

found=$(ls -d "$OUT"/image/lib/modules/*/kernel 2>/dev/null | head -1 || true)
if [ -n "$found" ]; then
  dirname "$found"
  exit 0
fi

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
apt_update() {
  # other users of apt on the machine take the same lock
  $SUDO flock /tmp/apt.lock apt-get update -qq >/dev/null 2>&1 ||
    echo "fetch.sh: apt-get update had errors; going on" >&2
}
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
  $SUDO dpkg --add-architecture armhf
  apt_update
fi
pkg=$(apt-cache depends linux-image-armmp:armhf 2>/dev/null |
      awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  apt_update
  pkg=$(apt-cache depends linux-image-armmp:armhf 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "fetch.sh: apt knows no linux-image-armmp:armhf" >&2; exit 1; }
case $pkg in *:armhf) ;; *) pkg=$pkg:armhf ;; esac

tmp=$(mktemp -d "$OUT/dl.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
  (cd "$tmp" && apt-get download "$pkg" >&2)   # again, to show apt's error
rm -rf "$OUT/image"
dpkg-deb -x "$tmp"/*.deb "$OUT/image"
dirname "$(ls -d "$OUT"/image/lib/modules/*/kernel | head -1)"
