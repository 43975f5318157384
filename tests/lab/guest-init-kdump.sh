#!/bin/sh
# /init of the lab's kdump first kernel (kdump.py): like guest-init-stock.sh
# (insmod the module set, print where VMCOREINFO is), then load the capture
# kernel with `kexec -p` (the same Debian vmlinux and a small capture
# initramfs, in the memory crashkernel= reserved), print RK-READY, and crash
# the kernel with sysrq-c: a real panic, and kdump takes over.
export PATH=/bin:/sbin
export LD_LIBRARY_PATH=/lib/powerpc64le-linux-gnu
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
echo "RK-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
/sbin/kexec -p /boot/vmlinux --initrd=/boot/capture.cpio.gz \
  --append="console=hvc0 irqpoll maxcpus=1 noirqdistrib reset_devices"
echo "RK: kexec -p rc=$? kexec_crash_loaded=$(cat /sys/kernel/kexec_crash_loaded)"
echo "RK-READY"
sleep 1
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
