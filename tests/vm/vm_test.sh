#!/usr/bin/env bash
# vm_test.sh BUILD_DIR SOURCE_DIR: stock Debian QEMU serving a Linux guest's
# RAM from fluidmemd through the preload shim (fluidmem-run), end to end:
#  1. kill QEMU mid-boot: the daemon survives and frees the region;
#  2. a 512 MiB guest with a 64 MiB budget: guest_memtest writes and verifies
#     a pattern over most of its RAM; two DIMMs are hot-plugged
#     (scripts/attach-memory, one memory-backend-memfd, one -ram) and
#     verified; virtio-balloon inflates and deflates while a pattern is held;
#  3. the same guest on plain RAM, for the numbers (bench/README.md, "Virtual machines").
# Uses KVM when a Linux guest runs under it here, else TCG, and says which.
# Exit 0 pass, 1 fail, 77 skip (with the reason). Results: BUILD_DIR/vm/results.txt
# Environment: FM_VM_ACCEL=tcg|kvm forces the accelerator;
#              FM_VM_KEEP=1 keeps the run directory (logs, sockets).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh" "$@"
QEMU=${FM_QEMU:-qemu-system-x86_64}
GUEST_MIB=512        # boot RAM
BUDGET_PAGES=16384   # 64 MiB resident: the guest is 8x that
MEMTEST_MIB=320      # most of what is free: with hot-plug slots the guest keeps a 64 MiB swiotlb
DIMM_MIB=128         # one Linux memory block each
BALLOON_MIB=256

vm_need_qemu
command -v python3 >/dev/null || skip "python3 not found (scripts/attach-memory needs it)"
vm_prepare

vm_rundir fmvm FM_VM_KEEP last-failed-run
reg="$run/register.sock" ctl="$run/control.sock" qmp="$run/qmp.sock"
qpid=
stop_qemu() {
	if [ -n "$qpid" ]; then
		kill -9 "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
	fi
}

qmpcmd() { python3 "$src/scripts/qmp.py" "$qmp" "$@"; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# track_hwm PID FILE: keep FILE at the process's peak RSS (KiB) until it
# exits; /proc/PID is gone by the time the guest has powered off.
track_hwm() {
	local v
	while v=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$1/status" 2>/dev/null) && [ -n "$v" ]; do
		echo "$v" >"$2.tmp" && mv "$2.tmp" "$2"
		sleep 0.2
	done
}

guest_alive() { [ -z "$qpid" ] || kill -0 "$qpid" 2>/dev/null; }

# wait_stat KEY OP VALUE SECONDS
wait_stat() {
	local v deadline=$((SECONDS + $4))
	while v=$(dstat "$1"); ! [ "$v" "$2" "$3" ]; do
		[ $SECONDS -lt $deadline ] || die "daemon stat $1 is $v, expected $2 $3 within $4 s"
		sleep 0.1
	done
}

run_env=(env)
asan=$(vm_shim_asan)
[ -z "$asan" ] || run_env=(env "ASAN_OPTIONS=$asan")

base_args=(-machine pc -nodefaults -display none -no-reboot -smp 1
	-kernel "$vm/vmlinuz" -initrd "$vm/initrd.gz")
append_base="console=ttyS0 panic=-1 quiet mitigations=off"
vm_pick_accel probe
say "accelerator: $([ "$accel" = kvm ] && echo KVM || echo TCG) ($accel_why)"
"$QEMU" --version | head -1

start_daemon "$run/fluidmemd.log" --config "$src/configs/local.toml" \
	--set "register.path=\"$reg\"" --set "control.path=\"$ctl\"" \
	--set "memory.resident_pages=$BUDGET_PAGES" --set "daemon.state_dir=\"$run/state\""
say "fluidmemd: budget $BUDGET_PAGES pages ($((BUDGET_PAGES / 256)) MiB); guest RAM $GUEST_MIB MiB"

# ---- 1. QEMU killed mid-boot: the daemon frees its memory and carries on ----
say "1. kill QEMU mid-boot (memory-backend-memfd RAM)"
on_exit stop_qemu   # first, before the daemon
ctljson resize 2048 >/dev/null   # 8 MiB, so the boot already evicts to the store
"${run_env[@]}" "$bin/fluidmem-run" --socket "$reg" -- "$QEMU" "${base_args[@]}" "${accel_args[@]}" \
	-m "$GUEST_MIB" -object "memory-backend-memfd,id=mem0,size=${GUEST_MIB}M" \
	-machine memory-backend=mem0 -append "$append_base fmtest.mode=idle" \
	-serial "file:$run/kill.log" 2>"$run/qemu-kill.log" &
qpid=$!
deadline=$((SECONDS + 60))
until [ "$(dstat evictions)" -gt 500 ]; do
	guest_alive || die "QEMU exited during boot: $(tail -3 "$run/qemu-kill.log")"
	[ $SECONDS -lt $deadline ] || die "no evictions within 60 s of booting"
	sleep 0.1
done
[ "$(dstat regions)" = 1 ] || die "expected the VM's one region, daemon has $(dstat regions)"
store=$(dstat store_bytes)
booted=$(grep -c 'FMTEST: booted' "$run/kill.log" 2>/dev/null || true)
kill -9 "$qpid"
wait "$qpid" 2>/dev/null || true
qpid=
wait_stat regions -eq 0 10
"$bin/fluidmemctl" -s "$ctl" ping >/dev/null || die "fluidmemd died with its client"
[ "$(dstat store_bytes)" = 0 ] || die "store_bytes $(dstat store_bytes) after the VM died"
[ "$(dstat resident)" = 0 ] || die "resident $(dstat resident) after the VM died"
say "   killed with $((store >> 10)) KiB in the store ($([ "$booted" = 0 ] && echo before || echo after) the guest's init ran); regions 0, store_bytes 0, daemon alive"
ctljson resize "$BUDGET_PAGES" >/dev/null

# ---- 2. the guest on fluidmem: memtest, hot-plug, balloon ----
say "2. guest on fluidmem: default -m RAM, 2 hot-plugged DIMMs, balloon"
f0=$(($(dstat faults) + $(dstat prefetched))) e0=$(dstat evictions)
log="$run/guest.log"
"${run_env[@]}" "$bin/fluidmem-run" --socket "$reg" -- "$QEMU" "${base_args[@]}" "${accel_args[@]}" \
	-m "$GUEST_MIB,slots=4,maxmem=$((GUEST_MIB + 4 * DIMM_MIB))M" \
	-device virtio-balloon-pci,id=balloon0 -qmp "unix:$qmp,server=on,wait=off" \
	-append "$append_base fmtest.mode=full fmtest.mib=$MEMTEST_MIB" \
	-serial "file:$log" 2>"$run/qemu.log" &
qpid=$!
track_hwm "$qpid" "$run/hwm-fluidmem" &
tracker=$!
t0=$(date +%s)
wait_serial "$log" 'FMTEST: booted' 120
boot_s=$(($(date +%s) - t0))
wait_serial "$log" 'FMTEST: main-done' 900
fm_hwm=$(status_kib "$qpid" VmHWM)
fm_daemon_rss=$(status_kib "$daemon_pid" VmRSS)
fm_store=$(dstat store_bytes) fm_resident=$(dstat resident)
fm_faults=$(($(dstat faults) + $(dstat prefetched) - f0)) fm_evictions=$(($(dstat evictions) - e0))
grep 'memtest\[main\]' "$log" | sed 's/^/   guest: /'
# Every memtest page faults in (or is prefetched: counted with the faults),
# and each pass pushes most of them out again.
[ "$fm_faults" -gt $((MEMTEST_MIB * 256 * 4)) ] && [ "$fm_evictions" -gt $((MEMTEST_MIB * 256 * 3)) ] ||
	die "memtest: only $fm_faults faults and $fm_evictions evictions for 4 passes over $MEMTEST_MIB MiB"

wait_serial "$log" 'FMTEST: hotplug-ready' 60
r0=$(dstat registrations)
for b in memfd ram; do
	node=()
	[ $b = memfd ] && node=(--node 0)
	python3 "$src/scripts/attach-memory" --qmp "$qmp" --size "$DIMM_MIB" --backend $b \
		"${node[@]}" --id "dimm-$b" >"$run/attach-$b.out" || die "attach-memory --backend $b failed"
	echo "   $(head -1 "$run/attach-$b.out")"
done
[ $(($(dstat registrations) - r0)) -eq 2 ] || die "the DIMMs were not registered with fluidmemd"
[ "$(dstat regions)" = 3 ] || die "expected 3 regions (RAM + 2 DIMMs), daemon has $(dstat regions)"
wait_serial "$log" 'FMTEST: hotplug-done' 900
grep -E 'FMTEST: hotplug-online|memtest\[hotplug\]: (write|verify|movable|OK)' "$log" | sed 's/^/   guest: /'
read -r mv_before mv_during < <(sed -n 's/.*memtest\[hotplug\]: movable zone free \([0-9]*\) KiB before, \([0-9]*\) KiB while.*/\1 \2/p' "$log")
[ -n "${mv_before:-}" ] && [ "$mv_before" -ge $((DIMM_MIB * 1024)) ] ||
	die "the DIMMs were not onlined as movable memory"
[ "$mv_during" -lt $((mv_before / 4)) ] || die "the hotplug memtest did not use the DIMMs (movable free $mv_during of $mv_before KiB)"

wait_serial "$log" 'FMTEST: balloon-ready' 600
rm0=$(dstat dispatch_remove_events) d0=$(dstat discarded) s0=$(dstat store_bytes)
shm0=$(status_kib "$qpid" RssShmem)
balloon_actual() { qmpcmd query-balloon | python3 -c 'import json,sys; print(json.load(sys.stdin)["actual"])'; }
# wait_balloon BYTES: until QEMU reports the balloon at that size.
wait_balloon() {
	local deadline=$((SECONDS + 300))
	while [ "$(balloon_actual)" != "$1" ]; do
		[ $SECONDS -lt $deadline ] || die "balloon stuck at $(balloon_actual), target $1"
		sleep 0.1
	done
}
actual=$(balloon_actual)
qmpcmd balloon "{\"value\": $((actual - (BALLOON_MIB << 20)))}" >/dev/null
wait_serial "$log" 'FMTEST: balloon-inflated' 300
wait_balloon $((actual - (BALLOON_MIB << 20)))
removes=$(($(dstat dispatch_remove_events) - rm0)) discarded=$(($(dstat discarded) - d0))
s1=$(dstat store_bytes) shm1=$(status_kib "$qpid" RssShmem)
[ "$removes" -ge $((BALLOON_MIB * 256)) ] ||
	die "balloon: only $removes REMOVE events for $BALLOON_MIB MiB"
say "   balloon -$BALLOON_MIB MiB: $removes REMOVE events, $discarded pages freed in the daemon, store $((s0 >> 20)) -> $((s1 >> 20)) MiB, QEMU RssShmem $((shm0 >> 10)) -> $((shm1 >> 10)) MiB"
qmpcmd balloon "{\"value\": $actual}" >/dev/null
wait_balloon "$actual"
wait_serial "$log" 'FMTEST: done' 900
grep -E 'FMTEST: balloon|memtest\[(balloon|after-balloon)\]: (verify|OK)' "$log" | sed 's/^/   guest: /'
qrc=0
wait "$qpid" || qrc=$?
qpid=
wait "$tracker"
fm_hwm_all=$(cat "$run/hwm-fluidmem")
[ $qrc -eq 0 ] || die "QEMU exited with $qrc"
grep -q 'BAD' "$log" && die "guest saw bad pages: $(grep -m3 BAD "$log")"
wait_stat regions -eq 0 10
[ "$(dstat store_bytes)" = 0 ] || die "store_bytes $(dstat store_bytes) after QEMU exited"
[ "$(dstat poisoned)" = 0 ] || die "pages were poisoned"
total_faults=$(dstat faults) total_evictions=$(dstat evictions)
[ "$total_evictions" -gt 100000 ] || die "only $total_evictions evictions: the budget was not exercised"
"$bin/fluidmemctl" -s "$ctl" shutdown >/dev/null
drc=0
wait "$daemon_pid" || drc=$?
daemon_pid=
[ $drc -eq 0 ] || die "fluidmemd exited with $drc"
# A sanitizer build reports into these logs (the shim's from inside QEMU).
vm_no_sanitizer_reports "$run"/*.log

# ---- 3. the same guest on plain RAM ----
say "3. the same guest on plain RAM (baseline)"
plog="$run/plain.log"
"$QEMU" "${base_args[@]}" "${accel_args[@]}" -m "$GUEST_MIB,slots=4,maxmem=$((GUEST_MIB + 4 * DIMM_MIB))M" \
	-device virtio-balloon-pci,id=balloon0 \
	-append "$append_base fmtest.mode=bench fmtest.mib=$MEMTEST_MIB" \
	-serial "file:$plog" 2>"$run/qemu-plain.log" &
qpid=$!
track_hwm "$qpid" "$run/hwm-plain" &
tracker=$!
wait_serial "$plog" 'FMTEST: done' 600
wait "$qpid" || die "plain QEMU failed"
qpid=
wait "$tracker"
plain_hwm=$(cat "$run/hwm-plain")
grep 'memtest\[main\]' "$plog" | sed 's/^/   guest: /'

# ---- results ----
ms() { sed -n "s/.*memtest\[main\]: $2[^:]*: \([0-9]*\) ms.*/\1/p" "$1" | head -1; }
sum() { sed -n 's/.*memtest\[main\]: checksum \([0-9a-f]*\).*/\1/p' "$1"; }
[ "$(sum "$log")" = "$(sum "$plog")" ] || die "checksums differ: fluidmem $(sum "$log"), plain $(sum "$plog")"
{
	echo "VM on fluidmem, measured $(date -u +%Y-%m-%d) on $(nproc) cores, accelerator: $accel"
	echo "guest: $GUEST_MIB MiB RAM, memtest over $MEMTEST_MIB MiB; fluidmem budget $((BUDGET_PAGES / 256)) MiB"
	printf '%-34s %12s %12s\n' "" "plain RAM" "fluidmem"
	printf '%-34s %12s %12s\n' "memtest write (ms)" "$(ms "$plog" write)" "$(ms "$log" write)"
	for k in 1 2 3; do
		printf '%-34s %12s %12s\n' "memtest verify pass $k (ms)" "$(ms "$plog" "verify pass $k")" "$(ms "$log" "verify pass $k")"
	done
	printf '%-34s %12s %12s\n' "QEMU peak RSS, memtest (MiB)" "$((plain_hwm >> 10))" "$((fm_hwm >> 10))"
	printf '%-34s %12s %12s\n' "QEMU peak RSS, whole run (MiB)" "$((plain_hwm >> 10))" "$((fm_hwm_all >> 10))"
	printf '%-34s %12s %12s\n' "checksum" "$(sum "$plog")" "$(sum "$log")"
	echo "fluidmem during the memtest: $fm_faults faults, $fm_evictions evictions; resident $((fm_resident / 256)) MiB, store $((fm_store >> 20)) MiB, fluidmemd RSS $((fm_daemon_rss >> 10)) MiB (local store)"
	echo "whole run (kill test + full guest): $total_faults faults, $total_evictions evictions, boot to init ${boot_s}s"
	echo "balloon -$BALLOON_MIB MiB: $removes REMOVE events, $discarded pages freed, store $((s0 >> 20)) -> $((s1 >> 20)) MiB"
} | tee "$vm/results.txt"
failed=0
echo "vm test: PASS ($accel)"
