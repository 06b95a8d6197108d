#!/bin/busybox sh
# /init of the test guest (busybox initramfs). Talks to the host test
# (tests/vm/vm_test.sh) through the serial console: lines starting with
# "FMTEST:" are steps the host waits for; the host acts over QMP (hot-plug,
# balloon) and the guest notices by polling, so no channel back is needed.
#
# Kernel command line: fmtest.mode=full|bench|idle|probe|hold  fmtest.mib=N
#   fmtest.content=text (hold only)
#   fmtest.pct=N (percent of free memory the hot-plug and after-balloon
#   memtests cover, default 85)  fmtest.balloon=N (MiB the host inflates
#   the balloon by, default 256)
#   bench: one memtest of fmtest.mib MiB, then power off
#   full:  bench, then hot-plug and balloon steps
#   idle:  boot and wait (the host kills QEMU mid-run)
#   hold:  fill fmtest.mib MiB, say "holding" and wait (bench/vm_store.sh)
#   probe: boot and power off (does a Linux guest run under KVM here?)
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^fmtest\.$1=//p"; }
mode=$(arg mode); mib=$(arg mib); pct=$(arg pct); balloon=$(arg balloon)
pct=${pct:-85}; balloon=${balloon:-256}
memtotal() { awk '/^MemTotal/ {print int($2 / 1024)}' /proc/meminfo; }
fail() { echo "FMTEST: FAIL $*"; poweroff -f; }
# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	t=$(($1 * 10)); shift
	while ! "$@"; do
		t=$((t - 1)); [ $t -gt 0 ] || return 1
		usleep 100000
	done
}

echo "FMTEST: booted $(uname -r), MemTotal $(memtotal) MiB, mode $mode"
[ "$mode" = probe ] && poweroff -f
if [ "$mode" = full ]; then
	# The cloud kernel has virtio-pci and the balloon as modules.
	for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon; do
		grep -q "^$m " /proc/modules || insmod /lib/modules/$m.ko || fail "insmod $m"
	done
	[ -d /sys/bus/virtio/drivers/virtio_balloon ] || fail "virtio_balloon did not load"
fi
[ "$mode" = idle ] && { echo "FMTEST: idle"; while :; do sleep 1; done; }
if [ "$mode" = hold ]; then
	# bench/vm_store.sh: fill fmtest.mib MiB (fmtest.content=text: English-like
	# text) and hold it while the host measures; the host kills QEMU.
	topt=; [ "$(arg content)" = text ] && topt=--text
	/guest_memtest --label hold --mib "${mib:-256}" --passes 1 $topt --hold /tmp/never &
	wait_for 3600 test -e /tmp/never.holding || fail "hold memtest did not start"
	echo "FMTEST: holding MemTotal $(memtotal) MiB"
	while :; do sleep 1; done
fi

/guest_memtest --label main --mib "${mib:-256}" --passes 3 || fail "main memtest"
echo "FMTEST: main-done"
[ "$mode" = full ] || { echo "FMTEST: done"; poweroff -f; }

# ---- hot-plug: the host attaches DIMMs (scripts/attach-memory) ----
echo "FMTEST: hotplug-ready"
has_offline() { grep -qx offline /sys/devices/system/memory/memory*/state; }
wait_for 120 has_offline || fail "no hot-plugged memory appeared"
usleep 500000   # let a second DIMM's blocks appear too
/guest-online-memory || fail "onlining hot-plugged memory"
echo "FMTEST: hotplug-online MemTotal $(memtotal) MiB"
# More than the boot RAM has free: the pattern must cover the new DIMMs.
/guest_memtest --label hotplug --percent $pct --passes 2 || fail "hotplug memtest"
echo "FMTEST: hotplug-done"

# ---- balloon: a pattern held across inflate and deflate ----
full=$(memtotal)
/guest_memtest --label balloon --mib 64 --passes 1 --seed 7 --hold /tmp/deflated &
held=$!
wait_for 600 test -e /tmp/deflated.holding || fail "balloon memtest did not start"
echo "FMTEST: balloon-ready MemTotal $full MiB"
inflated() { [ $(memtotal) -le $((full - balloon * 3 / 4)) ]; }   # well below deflated()
wait_for 300 inflated || fail "balloon did not inflate"
echo "FMTEST: balloon-inflated MemTotal $(memtotal) MiB"
deflated() { [ $(memtotal) -ge $((full - 8)) ]; }
wait_for 300 deflated || fail "balloon did not deflate"
echo "FMTEST: balloon-deflated MemTotal $(memtotal) MiB"
touch /tmp/deflated
wait $held || fail "pattern held across the balloon"
# Memory the balloon gave back must work like any other.
/guest_memtest --label after-balloon --percent $pct --passes 2 --seed 9 || fail "after-balloon memtest"
echo "FMTEST: done"
poweroff -f
