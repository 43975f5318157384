#!/bin/sh
# guest-init-lp.sh - /init of the livepatch-kernel initramfs (lpkernel.py).
# From ../shared/lab-recipes/7.2/guest-init-lp.sh; the lab's changes: the
# module list is /etc/modlist (ordinary modules and their dependencies, from
# stock.Initramfs.modules) then /etc/modlist-lp (the livepatches and rk_*,
# with arguments), and the kernel's own section view is also printed as the
# stock guest's RK-SECT lines (matrix.guest_view reads them), and
# /sys/kernel/tracing/enabled_functions as RK-FACT ftrace_enabled lines.  Loads a set of
# ordinary modules, the in-tree livepatch samples/tests, then rk_lib,
# rk_target and the rk_lp livepatch; waits for every livepatch transition to
# finish, sets rk_lib.hold=1 so the rk_target kthread parks inside the
# patched rk_target_inner (livepatch stack depth 2), prints what the kernel
# itself says about modules, livepatches, ftrace entry points and the parked
# task ("RK-FACT ..." lines between RK-FACTS-BEGIN/END), prints where the
# VMCOREINFO note is, then idles.
# The module files are deleted from the rootfs once loaded (boot with
# init_on_free=1 and their page-cache pages are zero in the dump, which then
# compresses far better); kernel parameter rk.keepfiles=1 keeps them.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
keepfiles=0
for w in $(cat /proc/cmdline); do
  case $w in rk.keepfiles=1) keepfiles=1 ;; esac
done
echo "RK: init start, kernel $(uname -r)"

wait_transitions() {
  i=0
  while [ $i -lt 180 ]; do
    busy=0
    for t in /sys/kernel/livepatch/*/transition; do
      [ -f "$t" ] && [ "$(cat "$t")" != 0 ] && busy=1
    done
    [ $busy = 0 ] && return 0
    sleep 1; i=$((i+1))
  done
  echo "RK: livepatch transition still pending after ${i}s"
}

cat /etc/modlist /etc/modlist-lp > /tmp/modlist
ok=0; bad=0
while read -r m args; do
  if insmod "$m" $args 2>/tmp/err; then ok=$((ok+1)); else
    bad=$((bad+1)); echo "RK: insmod FAILED $m: $(cat /tmp/err)"; fi
  case $m in *livepatch*|*klp*|*rk_lp*) wait_transitions ;; esac
done < /tmp/modlist
echo "RK: insmod ok=$ok failed=$bad"
[ $keepfiles = 1 ] || rm -rf /lib/modules /rk
cat /proc/cmdline > /dev/null   # runs the (livepatched) cmdline_proc_show
echo 1 > /sys/module/rk_lib/parameters/hold
sleep 3
pid=""
for d in /proc/[0-9]*; do
  [ "$(cat "$d/comm" 2>/dev/null)" = rk_target ] && pid=${d#/proc/}
done

sec() {  # address of section $2 of module $1, or -
  if [ -f "/sys/module/$1/sections/$2" ]; then cat "/sys/module/$1/sections/$2"; else echo -; fi
}
echo "RK-FACTS-BEGIN"
echo "RK-FACT kernel $(uname -r) $(uname -v) $(uname -m)"
echo "RK-FACT proc_cmdline $(cat /proc/cmdline)"
echo "RK-FACT modules_loaded $(wc -l < /proc/modules)"
while read -r name size refs deps state base flags; do
  echo "RK-FACT module $name base=$base size=$size .text=$(sec "$name" .text)" \
       ".toc=$(sec "$name" .toc) .stubs=$(sec "$name" .stubs) ${flags:-}"
done < /proc/modules
for p in /sys/kernel/livepatch/*; do
  funcs=""
  for o in "$p"/*/; do
    o=${o%/}
    for f in "$o"/*/; do
      [ -d "$f" ] || continue
      f=${f%/}; funcs="$funcs $(basename "$o"):$(basename "$f")"
    done
  done
  echo "RK-FACT livepatch $(basename "$p") enabled=$(cat "$p/enabled")" \
       "transition=$(cat "$p/transition") funcs=${funcs# }"
done
grep -E ' (ftrace_caller|ftrace_regs_caller|ftrace_call|ftrace_regs_call|livepatch_handler|ftrace_stub|_mcount|ftrace_ool_stub_text|ftrace_ool_stub_text_end|ftrace_ool_stub_inittext)$' \
  /proc/kallsyms | while read -r a t n; do echo "RK-FACT kallsyms $n $a $t"; done
grep -E '[[:space:]](rk_target_thread|rk_target_work|rk_target_inner|livepatch_rk_target_work|livepatch_rk_target_inner|rk_lib_sleep)[[:space:]]' \
  /proc/kallsyms | while read -r a t n m; do echo "RK-FACT kallsyms $n $a $t $m"; done
# the kernel's own list of redirected ftrace sites (kernel/trace/ftrace.c t_show:
# "func [mod] (refs) R I  O M \tops: OPS (FUNC)"), between two markers
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
if [ -r /sys/kernel/tracing/enabled_functions ]; then
  echo "RK-FACT ftrace_enabled_begin"
  sed 's/^/RK-FACT ftrace_enabled /' /sys/kernel/tracing/enabled_functions
  echo "RK-FACT ftrace_enabled_end"
fi
read -r _ _ st _ < /proc/$pid/stat
echo "RK-FACT task pid=$pid comm=$(cat /proc/$pid/comm) state=$st" \
     "wchan=$(cat /proc/$pid/wchan) patch_state=$(cat /proc/$pid/patch_state 2>/dev/null)" \
     "rk_lib.hold=$(cat /sys/module/rk_lib/parameters/hold)"
sed 's/^/RK-FACT stack /' /proc/$pid/stack
echo "RK-FACT kallsyms_count $(wc -l < /proc/kallsyms)"
echo "RK-FACTS-END"
echo "RK-MODULES-BEGIN"; cat /proc/modules; echo "RK-MODULES-END"
for d in /sys/module/*/sections; do
  m=${d%/sections}; m=${m##*/}
  for s in .stubs .toc .text; do
    [ -r "$d/$s" ] && echo "RK-SECT $m $s $(cat "$d/$s")"
  done
done
echo "RK-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
echo "RK-READY"
exec sh
