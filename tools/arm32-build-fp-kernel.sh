#!/usr/bin/env bash
# Cross-build a small ARM (armhf, ARM mode) Linux 6.1 kernel with APCS frame
# pointers and the function tracer, from Debian's linux-source-6.1 package, for
# the `klpinspect prologue` measurement (docs/arm32.md).  Not run by CI: its
# output is cached outside the repository.
#
#   tools/arm32-build-fp-kernel.sh [OUTDIR]      (default: $KLPINSPECT_CACHE/arm32-fp,
#                                                 else .cache/arm32-fp)
#
# Leaves OUTDIR/build/vmlinux and OUTDIR/modules/**/*.ko.  Needs (Debian):
# gcc-arm-linux-gnueabihf binutils-arm-linux-gnueabihf make flex bison bc gcc.
#
# Config: vexpress_defconfig (ARMv7, few drivers) plus
#   UNWINDER_FRAME_POINTER -> FRAME_POINTER: arch/arm/Makefile then adds
#       -fno-omit-frame-pointer -mapcs -mno-sched-prolog (GCC), the APCS frame;
#   FUNCTION_TRACER (+ DYNAMIC_FTRACE): -pg, i.e. `push {lr}; bl __gnu_mcount_nc`;
#   THUMB2_KERNEL off (ARM mode), no debug info (faster), a few modules =m.
# Built with `nice -n 19 make -j2` (the machine is shared).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-${KLPINSPECT_CACHE:+$KLPINSPECT_CACHE/arm32-fp}}
OUT=${OUT:-.cache/arm32-fp}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd -P)
CROSS=arm-linux-gnueabihf-
JOBS=${JOBS:-2}

for t in ${CROSS}gcc make flex bison bc; do
  command -v "$t" >/dev/null || { echo "$0: $t not found" >&2; exit 2; }
done

# 1. the source: Debian's linux-source-6.1 (the version apt's index offers)
SRC=$OUT/src
if [ ! -f "$SRC/Makefile" ]; then
  deb=$(ls "$OUT"/linux-source-6.1_*_all.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    (cd "$OUT" && apt-get download linux-source-6.1)
    deb=$(ls "$OUT"/linux-source-6.1_*_all.deb | head -1)
  fi
  rm -rf "$OUT/deb" "$SRC"
  mkdir -p "$OUT/deb" "$SRC"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$OUT/deb" --wildcards './usr/src/linux-source-6.1.tar.xz'
  tar -xJf "$OUT/deb/usr/src/linux-source-6.1.tar.xz" -C "$SRC" --strip-components=1
  rm -rf "$OUT/deb"
fi

# 2. the config
B=$OUT/build
mkdir -p "$B"
mk() { nice -n 19 make -C "$SRC" O="$B" ARCH=arm CROSS_COMPILE=$CROSS "$@"; }
if [ ! -f "$B/.config.klpinspect" ]; then
  mk vexpress_defconfig >/dev/null
  "$SRC/scripts/config" --file "$B/.config" \
    -d THUMB2_KERNEL \
    -d UNWINDER_ARM -e UNWINDER_FRAME_POINTER -e FRAME_POINTER \
    -e FTRACE -e FUNCTION_TRACER -e DYNAMIC_FTRACE -d FUNCTION_GRAPH_TRACER \
    -d DEBUG_INFO -d DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT -e DEBUG_INFO_NONE \
    -e MODULES -e MODULE_UNLOAD -d MODULE_SIG -d MODULE_COMPRESS_XZ \
    -m EXT2_FS -m FAT_FS -m VFAT_FS -m MSDOS_FS -m ISO9660_FS -m UDF_FS \
    -m BLK_DEV_LOOP -m NLS_CODEPAGE_437 -m NLS_ISO8859_1 -m NLS_UTF8 \
    -m CRYPTO_SHA256 -m CRYPTO_SHA512 -m CRYPTO_AES -m CRYPTO_CBC -m CRC_ITU_T -m CRC7 \
    -m LIBCRC32C -m ZLIB_DEFLATE -m TEST_KSTRTOX
  mk olddefconfig >/dev/null
  for opt in FRAME_POINTER FUNCTION_TRACER; do
    grep -q "^CONFIG_$opt=y" "$B/.config" || { echo "$0: CONFIG_$opt did not stick" >&2; exit 1; }
  done
  if grep -q '^CONFIG_THUMB2_KERNEL=y' "$B/.config"; then
    echo "$0: CONFIG_THUMB2_KERNEL is on" >&2; exit 1
  fi
  cp "$B/.config" "$B/.config.klpinspect"
fi

# 3. build vmlinux and the modules; install the modules unstripped
mk -j"$JOBS" vmlinux modules
rm -rf "$OUT/modules"
mk INSTALL_MOD_PATH="$OUT/modules" INSTALL_MOD_STRIP= modules_install >/dev/null
echo "vmlinux: $B/vmlinux"
echo "modules: $(find "$OUT/modules" -name '*.ko' | wc -l) under $OUT/modules"
