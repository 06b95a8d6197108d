#!/usr/bin/env bash
# vm_restart.sh BUILD_DIR SOURCE_DIR: a QEMU guest keeps running while
# fluidmemd restarts under it (issue 10). The guest's memtest (192 MiB, 3x
# the 64 MiB budget, so most of it lives in the store) runs while the daemon
#  1. is killed with -9 after the write pass, and started again;
#  2. is killed with -9 after verify pass 1, and started again;
#  3. stops with `fluidmemctl shutdown --keep-clients` after verify pass 2,
#     and is started again.
# Each time libfluidmem in QEMU reconnects and the new daemon re-adopts the
# guest's RAM. The memtest verifies every word on each pass; its checksum
# must equal that of the same guest on plain RAM. The client's longest
# outage per kind (from its own log lines) goes to BUILD_DIR/vm/restart.txt.
# The store is memcached (a private instance on a unix socket): its pages
# outlive the daemon.
# Exit 0 pass, 1 fail, 77 skip (with the reason). Environment as vm_test.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh" "$@"
QEMU=${FM_QEMU:-qemu-system-x86_64}
GUEST_MIB=512
BUDGET_PAGES=16384   # 64 MiB
MEMTEST_MIB=192   # 3x the budget: under TCG on a loaded host a pass takes minutes

vm_need_qemu
command -v memcached >/dev/null || skip "memcached not found (scripts/lib.sh FM_PACKAGES)"
vm_prepare

vm_rundir fmvmr FM_VM_KEEP last-failed-restart
reg="$run/register.sock" ctl="$run/control.sock" mc="$run/mc.sock"
qpid= mc_pid= ndaemon=0
stop_qemu() {
	if [ -n "$qpid" ]; then
		kill -9 "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
	fi
}
stop_memcached() {
	if [ -n "$mc_pid" ]; then
		kill "$mc_pid" 2>/dev/null
		wait "$mc_pid" 2>/dev/null
	fi
}

daemon_args=(--config "$src/configs/memcached.toml" --set "register.path=\"$reg\""
	--set "control.path=\"$ctl\"" --set "memory.resident_pages=$BUDGET_PAGES"
	--set "store.memcached.servers=\"$mc\"" --set "store.memcached.replicas=0"
	--set "daemon.state_dir=\"$run/state\"")
# Re-adoption is the daemon side of issue 10: without it there is nothing
# to test (and a restarted daemon would answer every READOPT -ENOENT).
"$bin/fluidmemd" "${daemon_args[@]}" --check >/dev/null 2>&1 ||
	skip "this fluidmemd has no daemon.state_dir: re-adoption is not built in"

# next_daemon: fluidmemd #N+1, on the same sockets, store and state.
next_daemon() {
	ndaemon=$((ndaemon + 1))
	start_daemon "$run/fluidmemd.$ndaemon.log" "${daemon_args[@]}"
}

guest_alive() { [ -z "$qpid" ] || kill -0 "$qpid" 2>/dev/null; }
# wait_readopted N: until the client has said N times that it is served again.
wait_readopted() {
	local deadline=$((SECONDS + 120))
	while [ "$(grep -c 'serves this process again' "$run/qemu.log" 2>/dev/null || true)" -lt "$1" ]; do
		grep -q 'IS LOST\|refused its credential\|refused READOPT' "$run/qemu.log" &&
			die "the client lost its region: $(grep -m1 'IS LOST\|refused' "$run/qemu.log")"
		guest_alive || die "QEMU exited while fluidmemd restarted"
		[ $SECONDS -lt $deadline ] || die "the guest's RAM was not re-adopted within 120 s"
		sleep 0.05
	done
}

run_env=(env FLUIDMEM_RECONNECT_MIN_MS=20 FLUIDMEM_RECONNECT_MAX_MS=200)
asan=$(vm_shim_asan)
[ -z "$asan" ] || run_env+=("ASAN_OPTIONS=$asan")

base_args=(-machine pc -nodefaults -display none -no-reboot -smp 1
	-kernel "$vm/vmlinuz" -initrd "$vm/initrd.gz")
append="console=ttyS0 panic=-1 quiet mitigations=off fmtest.mode=bench fmtest.mib=$MEMTEST_MIB"
vm_pick_accel cached
say "accelerator: $accel"

mc_user=()
[ "$(id -u)" -eq 0 ] && mc_user=(-u root)
memcached "${mc_user[@]}" -s "$mc" -a 0600 -M -m 1024 -t 1 >"$run/memcached.log" 2>&1 &
mc_pid=$!
on_exit stop_memcached   # before the daemon starts: stopped after it
for _ in $(seq 100); do [ -S "$mc" ] && break; sleep 0.05; done
[ -S "$mc" ] || die "memcached did not start"

next_daemon
say "guest: $GUEST_MIB MiB, memtest $MEMTEST_MIB MiB; fluidmemd budget $((BUDGET_PAGES / 256)) MiB, memcached store"
log="$run/guest.log"
on_exit stop_qemu   # first, before the daemon
"${run_env[@]}" "$bin/fluidmem-run" --socket "$reg" -- "$QEMU" "${base_args[@]}" "${accel_args[@]}" \
	-m "$GUEST_MIB" -append "$append" -serial "file:$log" 2>"$run/qemu.log" &
qpid=$!
wait_serial "$log" 'FMTEST: booted' 600

# restart N HOW AFTER: once the guest printed AFTER, stop the daemon HOW
# (kill | keep), start the next one and wait for the re-adoption.
restart() {
	local n=$1 how=$2 after=$3 t0
	wait_serial "$log" "$after" 900
	t0=$(date +%s%N)
	case $how in
	kill) kill -9 "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true ;;
	keep) "$bin/fluidmemctl" -s "$ctl" shutdown --keep-clients >/dev/null ||
		die "shutdown --keep-clients failed"
		wait "$daemon_pid" || die "fluidmemd exited with $? on shutdown --keep-clients" ;;
	esac
	daemon_pid=
	grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$run/fluidmemd.$ndaemon.log" &&
		die "sanitizer report from fluidmemd #$ndaemon"
	next_daemon
	wait_readopted "$n"
	say "$n. $how after \"$after\": re-adopted $(( ($(date +%s%N) - t0) / 1000000 )) ms after the stop"
}
restart 1 kill 'memtest[main]: write'
restart 2 kill 'memtest[main]: verify pass 1'
restart 3 keep 'memtest[main]: verify pass 2'
wait_serial "$log" 'FMTEST: done' 900
qrc=0
wait "$qpid" || qrc=$?
qpid=
[ $qrc -eq 0 ] || die "QEMU exited with $qrc"
grep 'memtest\[main\]' "$log" | sed 's/^/   guest: /'
grep -q 'BAD' "$log" && die "guest saw bad pages: $(grep -m3 BAD "$log")"
sed 's/^/   client: /' "$run/qemu.log" | grep -v '^   client: $' | head -30
"$bin/fluidmemctl" -s "$ctl" shutdown >/dev/null
wait "$daemon_pid" || die "the last fluidmemd exited with $?"
daemon_pid=
vm_no_sanitizer_reports "$run"/*.log

say "the same guest on plain RAM (the reference checksum)"
plog="$run/plain.log"
"$QEMU" "${base_args[@]}" "${accel_args[@]}" -m "$GUEST_MIB" -append "$append" \
	-serial "file:$plog" 2>"$run/qemu-plain.log" &
qpid=$!
wait_serial "$plog" 'FMTEST: done' 600
wait "$qpid" || die "plain QEMU failed"
qpid=
sum() { sed -n 's/.*memtest\[main\]: checksum \([0-9a-f]*\).*/\1/p' "$1"; }
[ -n "$(sum "$log")" ] && [ "$(sum "$log")" = "$(sum "$plog")" ] ||
	die "checksums differ: across restarts $(sum "$log"), plain $(sum "$plog")"

# The client's outage per restart: from noticing the drop to being served
# again ("fluidmemd serves this process again after N ms"). A fault that
# arrives in that window waits at most that long plus one fault's service.
mapfile -t outs < <(sed -n 's/.*serves this process again after \([0-9]*\) ms.*/\1/p' "$run/qemu.log")
[ ${#outs[@]} -eq 3 ] || die "expected 3 re-adoptions in the client's log, got ${#outs[@]}"
{
	echo "VM across fluidmemd restarts, measured $(date -u +%Y-%m-%d) on $(nproc) cores, accelerator: $accel"
	echo "guest: $GUEST_MIB MiB RAM, memtest over $MEMTEST_MIB MiB; budget $((BUDGET_PAGES / 256)) MiB; memcached store"
	echo "client outage (drop noticed -> served again): kill -9 #1 ${outs[0]} ms, kill -9 #2 ${outs[1]} ms, shutdown --keep-clients ${outs[2]} ms"
	echo "checksum across restarts $(sum "$log") = plain $(sum "$plog")"
} | tee "$vm/restart.txt"
failed=0
echo "vm restart test: PASS ($accel)"
