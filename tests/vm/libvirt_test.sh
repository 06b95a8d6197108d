#!/usr/bin/env bash
# libvirt_test.sh BUILD_DIR SOURCE_DIR: a real libvirt (Debian's
# libvirt-daemon-system, libvirtd started here, no systemd) runs a TCG domain
# whose <emulator> is a fluidmem wrapper, with QEMU as libvirt-qemu:
#  1. define + start: the domain's RAM is a region named after the domain,
#     and its faults grow while the guest runs a memtest;
#  2. hot-plug a DIMM with `virsh attach-device` from the XML of
#     `scripts/attach-memory --xml-only`: a second region, used by the guest;
#  3. balloon with `virsh setmem` down and back up, a pattern held across;
#  4. the guest powers off: regions and stored pages are freed.
# These are the libvirt-level steps of the nova recipe in docs/libvirt.md.
#
# libvirtd runs in a private mount namespace (unshare -m): its /etc/libvirt,
# /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are
# directories of this run, so the host's libvirt is neither read nor touched.
# There, /dev/userfaultfd is a node of this run with group kvm and mode 0660:
# what the udev rule of docs/libvirt.md makes on a real host.
# Exit 0 pass, 1 fail, 77 skip (with the reason).
# Environment: FM_LIBVIRT_KEEP=1 keeps the run directory.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh" "$@"
DOM=fluidmem-libvirt-test
NOVA=instance-0000002a   # step 5: a domain as nova writes it
GUEST_MIB=256        # boot RAM (one NUMA cell)
DIMM_MIB=128         # one Linux memory block
BALLOON_MIB=64       # virsh setmem takes this much back, then returns it: QEMU discards
                     # each 4 KiB page with its own event, slow on a busy machine
BUDGET_PAGES=98304   # 384 MiB: all the guest has. Eviction is vm_test.sh's; here TCG must stay quick
QEMU=/usr/bin/qemu-system-x86_64

[ "$(id -u)" -eq 0 ] || skip "needs root: libvirtd runs privileged (qemu:///system) in a private mount namespace"
for c in libvirtd virsh; do
	command -v $c >/dev/null ||
		skip "$c not found: install libvirt-daemon-system and libvirt-clients (scripts/lib.sh FM_PACKAGES)"
done
[ -x $QEMU ] || skip "$QEMU not found: install qemu-system-x86 (scripts/lib.sh FM_PACKAGES)"
command -v unshare >/dev/null || skip "unshare (util-linux) not found"
unshare -m true 2>/dev/null || skip "cannot make a mount namespace here (unshare -m): libvirtd could not get private directories"
qemu_uid=$(id -u libvirt-qemu 2>/dev/null) ||
	skip "no libvirt-qemu user: libvirt-daemon-system is not set up"
vm_prepare

vm_rundir fmvirt FM_LIBVIRT_KEEP
chmod 755 "$run"   # QEMU runs as libvirt-qemu: it reaches the socket and the guest files here
reg="$run/fm/register.sock" ctl="$run/fm/control.sock"
glog="$run/guest/serial.log"
libvirtd_pid=
vm_fail_logs=("$run/fm/fluidmemd.log" "$run/libvirtd.log" "$glog" "$run/libvirt-log/qemu/$DOM.log")
V=(virsh -q -c "qemu:///system?socket=$run/libvirt-run/libvirt-sock")
# stop_libvirt: the domains, libvirtd, and a QEMU that libvirt lost track
# of (libvirtd died first): what this run started, nothing of the host's.
stop_libvirt() {
	local qp d
	if [ -n "$libvirtd_pid" ] && kill -0 "$libvirtd_pid" 2>/dev/null; then
		for d in "$DOM" "$NOVA"; do   # bounded: a stuck libvirtd must not keep us
			timeout 30 "${V[@]}" destroy "$d" >/dev/null 2>&1
			timeout 30 "${V[@]}" undefine "$d" >/dev/null 2>&1
		done
		kill "$libvirtd_pid"
		for _ in $(seq 100); do
			kill -0 "$libvirtd_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$libvirtd_pid" 2>/dev/null
		wait "$libvirtd_pid" 2>/dev/null
	fi
	libvirtd_pid=
	for d in "$DOM" "$NOVA"; do
		qp=$(cat "$run/libvirt-run/qemu/$d.pid" 2>/dev/null)
		[ -n "$qp" ] && kill -0 "$qp" 2>/dev/null && grep -q "guest=$d" "/proc/$qp/cmdline" 2>/dev/null &&
			kill -9 "$qp"
	done
}

# regions_of NAME: "id faults resident" of each region named NAME, one a line.
regions_of() {
	ctljson regions | python3 -c '
import json, sys
for r in json.load(sys.stdin)["regions"]:
    if r["name"] == sys.argv[1]:
        print(r["id"], r["faults"], r["resident"])' "$1"
}
guest_alive() { [ "$("${V[@]}" domstate "$DOM" 2>/dev/null)" = running ]; }
# The whole run must end (and clean up: libvirtd, QEMU) before ctest's
# timeout kills it: every wait is also bounded by this.
END=$((SECONDS + ${FM_LIBVIRT_TIMEOUT:-1080}))
# ---- fluidmemd: the uid of libvirt's QEMU may register ----
mkdir -p "$run/fm" "$run/guest"
chmod 755 "$run/fm" "$run/guest"
# Group and mode of /dev/userfaultfd as the udev rule of docs/libvirt.md sets them.
if mknod -m 0660 "$run/userfaultfd" c 10 257 2>/dev/null && chgrp kvm "$run/userfaultfd" 2>/dev/null; then
	qemu_user=libvirt-qemu
else
	qemu_user=root   # no device nodes here (nodev): QEMU has the syscall as root
fi
start_daemon "$run/fm/fluidmemd.log" --config "$src/configs/local.toml" \
	--set "register.path=\"$reg\"" --set "control.path=\"$ctl\"" \
	--set "memory.resident_pages=$BUDGET_PAGES" \
	--set "register.mode=0o666" --set "register.allowed_uids=[$qemu_uid]"
say "fluidmemd: budget $((BUDGET_PAGES / 256)) MiB, register.allowed_uids=[$qemu_uid] (libvirt-qemu), socket mode 0666"

# ---- the emulator: a wrapper that runs QEMU under fluidmem-run ----
# fluidmem-run names the regions after QEMU's -name guest=, the domain's name.
# A sanitizer build's shim brings the ASan runtime into QEMU (lib.sh).
asan=$(vm_shim_asan)
[ -z "$asan" ] || asan="export ASAN_OPTIONS=$asan"
cat >"$run/qemu-fluidmem" <<EOF
#!/bin/sh
$asan
exec $bin/fluidmem-run --socket $reg -- $QEMU "\$@"
EOF
chmod 755 "$run/qemu-fluidmem"
# libvirt's DAC driver chowns the kernel and initrd to libvirt-qemu: copies.
cp "$vm/vmlinuz" "$vm/initrd.gz" "$run/guest/"
chmod 644 "$run/guest/vmlinuz" "$run/guest/initrd.gz"

# ---- libvirtd, with private directories ----
mkdir -p "$run/libvirt-run"
cp -a /etc/libvirt "$run/libvirt-etc"
cp -a /var/lib/libvirt "$run/libvirt-lib"
cp -a /var/log/libvirt "$run/libvirt-log"
cp -a /var/cache/libvirt "$run/libvirt-cache"
rm -f "$run"/libvirt-etc/qemu/*.xml "$run"/libvirt-etc/qemu/autostart/* \
	"$run"/libvirt-etc/qemu/networks/autostart/*   # no domains or networks of the host
# Appended settings win over the package's (commented) defaults.
cat >>"$run/libvirt-etc/qemu.conf" <<EOF

# ---- fluidmem libvirt test (tests/vm/libvirt_test.sh) ----
user = "$qemu_user"
# QEMU's private /dev (namespaces = ["mount"], the default) gets the nodes
# listed here: fluidmem needs /dev/userfaultfd in it.
cgroup_device_acl = [ "/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom",
                      "/dev/ptmx", "/dev/kvm", "/dev/userfaultfd" ]
# Test machine only: no virtlogd, and no cgroups made on the host.
stdio_handler = "file"
cgroup_controllers = [ ]
EOF
cat >"$run/libvirt-etc/libvirtd.conf" <<EOF
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$run/libvirtd.log"
EOF
cat >"$run/libvirtd-ns.sh" <<EOF
set -e
mount -t tmpfs -o mode=755 tmpfs /run   # nothing of the host's /run (its libvirt sockets)
mkdir -p /run/libvirt
mount --bind $run/libvirt-run /run/libvirt
mount --bind $run/libvirt-etc /etc/libvirt
mount --bind $run/libvirt-lib /var/lib/libvirt
mount --bind $run/libvirt-log /var/log/libvirt
mount --bind $run/libvirt-cache /var/cache/libvirt
[ ! -e $run/userfaultfd ] || mount --bind $run/userfaultfd /dev/userfaultfd
exec libvirtd -f /etc/libvirt/libvirtd.conf -p $run/libvirtd.pid
EOF
on_exit stop_libvirt   # first, before the daemon
unshare -m --propagation private bash "$run/libvirtd-ns.sh" >"$run/libvirtd.out" 2>&1 &
libvirtd_pid=$!
for _ in $(seq 300); do
	"${V[@]}" version >/dev/null 2>&1 && break
	kill -0 "$libvirtd_pid" 2>/dev/null ||
		{ cat "$run/libvirtd.out"; die "libvirtd exited at start (output above)"; }
	sleep 0.1
done
"${V[@]}" version >/dev/null 2>&1 || die "libvirtd does not answer on $run/libvirt-run/libvirt-sock"
secmodel=$("${V[@]}" capabilities | sed -n '/<secmodel>/,/<\/secmodel>/s:.*<model>\(.*\)</model>.*:\1:p' | tr '\n' ' ')
say "libvirtd $(libvirtd --version | awk '{print $NF}') up (pid $libvirtd_pid); QEMU runs as $qemu_user; security models: ${secmodel:-none} ($([ -d /sys/kernel/security/apparmor ] && echo "AppArmor on" || echo "no AppArmor in this kernel"))"

# ---- 1. define and start the domain ----
cat >"$run/domain.xml" <<EOF
<domain type='qemu'>
  <name>$DOM</name>
  <maxMemory slots='4' unit='MiB'>$((GUEST_MIB + 4 * DIMM_MIB))</maxMemory>
  <memory unit='MiB'>$GUEST_MIB</memory>
  <vcpu>1</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$run/guest/vmlinuz</kernel>
    <initrd>$run/guest/initrd.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet mitigations=off fmtest.mode=full fmtest.mib=32 fmtest.pct=20 fmtest.balloon=$BALLOON_MIB</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='maximum'>
    <numa><cell id='0' cpus='0' memory='$GUEST_MIB' unit='MiB'/></numa>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$run/qemu-fluidmem</emulator>
    <serial type='file'><source path='$glog'/><target port='0'/></serial>
    <memballoon model='virtio'/>
  </devices>
</domain>
EOF
say "1. virsh define + start: $DOM, $GUEST_MIB MiB memfd RAM, TCG, emulator $run/qemu-fluidmem"
"${V[@]}" define "$run/domain.xml" >/dev/null || die "virsh define"
"${V[@]}" start "$DOM" >/dev/null || die "virsh start"
qpid=$(cat "$run/libvirt-run/qemu/$DOM.pid")
quser=$(ps -o user= -p "$qpid")
grep -q libfluidmem-preload "/proc/$qpid/environ" || die "QEMU (pid $qpid) does not run under fluidmem-run"
mapfile -t regs < <(regions_of "$DOM")
[ ${#regs[@]} -eq 1 ] || die "expected one region named $DOM, daemon has: $(ctljson regions)"
read -r ram_id _ _ <<<"${regs[0]}"
say "   QEMU pid $qpid runs as $quser; its RAM is region $ram_id, named \"$DOM\""
f0=$(dstat faults)
wait_serial "$glog" 'FMTEST: booted' 600   # TCG on a busy 2-CPU machine: minutes
wait_serial "$glog" 'FMTEST: main-done' 300
f1=$(dstat faults) e1=$(dstat evictions)
[ "$f1" -gt $((f0 + 32 * 256)) ] || die "faults went only from $f0 to $f1 during a 32 MiB memtest"
read -r _ ram_faults _ <<<"$(regions_of "$DOM" | head -1)"
grep 'memtest\[main\]' "$glog" | sed 's/^/   guest: /'
say "   served: faults $f0 -> $f1 while the guest booted and ran its memtest; region faults $ram_faults, evictions $e1"

# ---- 2. hot-plug a DIMM through libvirt ----
wait_serial "$glog" 'FMTEST: hotplug-ready' 60
python3 "$src/scripts/attach-memory" --xml-only --size "$DIMM_MIB" --node 0 >"$run/dimm.xml" 2>"$run/dimm.hints"
head -c1 "$run/dimm.xml" | grep -q '<' || die "attach-memory --xml-only does not start with XML: $(head -1 "$run/dimm.xml")"
say "2. virsh attach-device --live from attach-memory --xml-only ($(tr -s '\n ' ' ' <"$run/dimm.xml"))"
r0=$(dstat registrations)
"${V[@]}" attach-device "$DOM" "$run/dimm.xml" --live >/dev/null || die "virsh attach-device"
[ $(($(dstat registrations) - r0)) -eq 1 ] || die "the DIMM was not registered with fluidmemd"
mapfile -t regs < <(regions_of "$DOM")
[ ${#regs[@]} -eq 2 ] || die "expected 2 regions named $DOM after the hot-plug: $(ctljson regions)"
"${V[@]}" dumpxml "$DOM" | grep -c "<memory model='dimm'" >/dev/null || die "libvirt does not list the DIMM"
wait_serial "$glog" 'FMTEST: hotplug-done' 300
grep -E 'FMTEST: hotplug-online|memtest\[hotplug\]: (write|verify|OK)' "$glog" | sed 's/^/   guest: /'
dimm_faults=0
while read -r id faults _; do
	[ "$id" = "$ram_id" ] || dimm_faults=$faults
done < <(regions_of "$DOM")
[ "$dimm_faults" -gt 0 ] || die "the guest never touched the hot-plugged DIMM's region"
say "   the DIMM is a second region named \"$DOM\"; the guest onlined it and it took $dimm_faults faults"

# ---- 3. balloon with virsh setmem ----
wait_serial "$glog" 'FMTEST: balloon-ready' 300
total_kib=$("${V[@]}" dommemstat "$DOM" | awk '$1 == "actual" {print $2}')
target_kib=$((total_kib - BALLOON_MIB * 1024))
rm0=$(dstat dispatch_remove_events) d0=$(dstat discarded) s0=$(dstat store_bytes)
say "3. virsh setmem $DOM ${target_kib}KiB --live (from $((total_kib >> 10)) MiB)"
"${V[@]}" setmem "$DOM" "${target_kib}KiB" --live || die "virsh setmem (inflate)"
wait_serial "$glog" 'FMTEST: balloon-inflated' 300
# The guest says so part way; wait for all of it before counting.
deadline=$((SECONDS + 600))   # one event per 4 KiB page: minutes on a busy machine
[ $deadline -le $END ] || deadline=$END
until [ "$("${V[@]}" dommemstat "$DOM" | awk '$1 == "actual" {print $2}')" = "$target_kib" ]; do
	[ $SECONDS -lt $deadline ] || die "balloon stuck above ${target_kib} KiB: $("${V[@]}" dommemstat "$DOM" | tr '\n' ' ')"
	sleep 0.2
done
removes=$(($(dstat dispatch_remove_events) - rm0)) discarded=$(($(dstat discarded) - d0))
s1=$(dstat store_bytes)
[ "$discarded" -gt 0 ] || [ "$removes" -gt 0 ] ||
	die "balloon: the pages the guest gave back were not freed in fluidmemd"
say "   inflated: $removes REMOVE events, $discarded pages freed in fluidmemd, store $((s0 >> 20)) -> $((s1 >> 20)) MiB"
"${V[@]}" setmem "$DOM" "${total_kib}KiB" --live || die "virsh setmem (deflate)"
wait_serial "$glog" 'FMTEST: done' 600
grep -E 'FMTEST: balloon|memtest\[(balloon|after-balloon)\]: (verify|OK)' "$glog" | sed 's/^/   guest: /'

# ---- 4. the guest powers off: libvirt stops QEMU, fluidmemd frees it all ----
deadline=$((SECONDS + 60))
while guest_alive; do
	[ $SECONDS -lt $deadline ] || die "the domain did not stop after the guest powered off"
	sleep 0.2
done
deadline=$((SECONDS + 10))
until [ "$(dstat regions)" = 0 ]; do
	[ $SECONDS -lt $deadline ] || die "regions left after the domain stopped: $(ctljson regions)"
	sleep 0.1
done
[ "$(dstat store_bytes)" = 0 ] || die "store_bytes $(dstat store_bytes) after the domain stopped"
[ "$(dstat poisoned)" = 0 ] || die "pages were poisoned"
grep -q 'BAD' "$glog" && die "guest saw bad pages: $(grep -m3 BAD "$glog")"
"${V[@]}" undefine "$DOM" >/dev/null || die "virsh undefine"
vm_no_sanitizer_reports "$run"/fm/*.log "$run/libvirt-log/qemu/$DOM.log"
say "4. powered off: regions 0, store_bytes 0; faults $(dstat faults), evictions $(dstat evictions) in all"

# ---- 5. a domain as nova writes it ----
# nova writes no <memoryBacking> (anonymous RAM, converted by the shim) and
# no <emulator>: the recipe of docs/libvirt.md diverts the host's QEMU to
# the wrapper, which this shared machine cannot do, so the wrapper is named
# here. Started paused: QEMU maps
# (and the shim registers) the RAM before the guest runs, so no boot is needed.
cat >"$run/nova.xml" <<EOF2
<domain type='qemu'>
  <name>$NOVA</name>
  <memory unit='MiB'>$GUEST_MIB</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/><apic/></features>
  <cpu mode='maximum'><numa><cell id='0' cpus='0' memory='$GUEST_MIB' unit='MiB'/></numa></cpu>
  <devices>
    <emulator>$run/qemu-fluidmem</emulator>
    <memballoon model='virtio'><stats period='10'/></memballoon>
  </devices>
</domain>
EOF2
"${V[@]}" define "$run/nova.xml" >/dev/null || die "virsh define (nova-style)"
"${V[@]}" start "$NOVA" --paused >/dev/null || die "virsh start --paused (nova-style)"
mapfile -t regs < <(regions_of "$NOVA")
[ ${#regs[@]} -eq 1 ] || die "expected one region named $NOVA (anonymous RAM converted): $(ctljson regions)"
"${V[@]}" setmem "$NOVA" "$((GUEST_MIB / 2))M" --live || die "virsh setmem (nova-style)"
"${V[@]}" destroy "$NOVA" >/dev/null || die "virsh destroy"
"${V[@]}" undefine "$NOVA" >/dev/null || die "virsh undefine"
deadline=$((SECONDS + 10))
until [ "$(dstat regions)" = 0 ]; do
	[ $SECONDS -lt $deadline ] || die "regions left after virsh destroy: $(ctljson regions)"
	sleep 0.1
done
say "5. nova-style $NOVA (no <memoryBacking>): its anonymous RAM is one region named \"$NOVA\"; setmem and destroy free it"
failed=0
echo "libvirt test: PASS"
