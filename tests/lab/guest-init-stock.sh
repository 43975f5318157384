#!/bin/sh
# /init of the lab's stock-kernel initramfs (stock.py): mount the pseudo
# filesystems, insmod every module in /etc/modlist (dependency order), print
# the module list, where the VMCOREINFO note is (the host's dump fix-up copies
# it from there) and RK-READY, then keep a shell on the console.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "RK: init start, kernel $(uname -r)"
ok=0; bad=0
while read -r m; do
  if insmod "$m" 2>/tmp/err; then ok=$((ok+1)); else
    bad=$((bad+1)); echo "RK: insmod FAILED $m: $(cat /tmp/err)"; fi
done < /etc/modlist
echo "RK: insmod ok=$ok failed=$bad"
echo "RK-MODULES-BEGIN"; cat /proc/modules; echo "RK-MODULES-END"
# the kernel's own view of each module's stub and TOC sections (root sees
# the real addresses), for the lab's matrix to check klpinspect against
for d in /sys/module/*/sections; do
  m=${d%/sections}; m=${m##*/}
  for s in .stubs .toc .text; do
    [ -r "$d/$s" ] && echo "RK-SECT $m $s $(cat "$d/$s")"
  done
done
echo "RK-PAGESIZE $(getconf PAGESIZE 2>/dev/null || echo -)"
echo "RK-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
echo "RK-READY"
exec sh
