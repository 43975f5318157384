#!/bin/sh
# /init of the lab's kdump capture initramfs (kdump.py): load the virtio
# block driver, then save the crashed kernel's memory to /dev/vda:
#   at 0        makedumpfile -F -c -d 31 /proc/vmcore (flattened, kdump-compressed)
#   at 512 MiB  a raw copy of /proc/vmcore (the crashed kernel's own ELF headers:
#               VMCOREINFO note, linear-map p_vaddr)
# print the sizes, and power off.
export PATH=/bin:/sbin
export LD_LIBRARY_PATH=/lib/powerpc64le-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "RK: capture kernel $(uname -r) up"
while read -r m; do insmod "$m" || echo "RK: insmod FAILED $m"; done < /etc/modlist
i=0; while [ ! -b /dev/vda ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
echo "RK-VMCORE-SIZE $(stat -c %s /proc/vmcore)"
/bin/makedumpfile -F -c -d 31 /proc/vmcore > /dev/vda
echo "RK: makedumpfile rc=$?"
dd if=/proc/vmcore of=/dev/vda bs=1M seek=512 2>/tmp/dd.err
echo "RK: dd rc=$? $(tail -1 /tmp/dd.err)"
sync
echo "RK-KDUMP-DONE"
poweroff -f
