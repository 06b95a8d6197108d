# tests/vm/lib.sh: what the VM tests (vm_test.sh, vm_restart.sh,
# libvirt_test.sh) share. Sourced, after `set -euo pipefail`, with the
# script's own arguments:   . "$(dirname "$0")/lib.sh" "$@"
# It sets build, src, vm (BUILD_DIR/vm), bin and failed=1 (the script sets
# failed=0 once it has passed), and defines:
#   say / skip / die           progress, exit 77 with a reason, exit 1
#   on_exit CMD...             run CMD when the test ends, however it ends
#                              (pass, fail, SIGTERM, SIGINT, SIGHUP); the
#                              last registered runs first. Register right
#                              after starting something: each test stops only
#                              what it started.
#   vm_rundir PREFIX KEEPVAR FAILDIR   the run directory (mktemp); removed at
#                              the end unless $KEEPVAR=1; on failure its logs'
#                              tails are shown and, with FAILDIR, it is copied
#                              to BUILD_DIR/vm/FAILDIR
#   vm_prepare                 the binaries are built, userfaultfd is usable,
#                              the guest is made (mkguest.sh), else fail or skip
#   vm_need_qemu               $QEMU is installed, else skip
#   vm_shim_asan               ASAN_OPTIONS for QEMU under a sanitizer build's shim
#   vm_pick_accel probe|cached sets accel and accel_args
#   start_daemon LOG ARG...    fluidmemd (on $ctl) in the background, stopped
#                              at the end (stop_daemon, registered with the
#                              first start); daemon_pid; waits for its answer
#   stop_daemon                fluidmemctl shutdown, else SIGTERM; waits
#   ctljson, dstat KEY         the daemon's control socket ($ctl)
#   wait_serial LOG TEXT SECS  until the guest prints TEXT; the script
#                              defines guest_alive; bounded by $END if set
#   vm_no_sanitizer_reports FILE...
name=${0##*/}
build=$(cd "${1:?usage: $name BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: $name BUILD_DIR SOURCE_DIR}" && pwd)
vm="$build/vm" bin="$build/bin"
failed=1
run= ctl= daemon_pid=

say() { printf '==> %s\n' "$*"; }
skip() { echo "SKIP: $*"; failed=0; exit 77; }
die() { echo "FAIL: $*"; exit 1; }

vm_exit_cmds=()
on_exit() { vm_exit_cmds+=("$*"); }

vm_cleanup() {
	local rc=$? i f
	trap '' INT TERM HUP   # a second signal must not cut the cleanup short
	set +e                 # nor a failing step skip the rest
	for ((i = ${#vm_exit_cmds[@]} - 1; i >= 0; i--)); do
		eval "${vm_exit_cmds[i]}"
	done
	if [ -n "$run" ] && [ -d "$run" ]; then
		if [ "$failed" -eq 1 ]; then
			[ ${#vm_fail_logs[@]} -gt 0 ] || vm_fail_logs=("$run"/*.log)
			for f in "${vm_fail_logs[@]}"; do
				[ -f "$f" ] && { echo "--- $f (tail)"; tail -n 25 "$f"; }
			done
			if [ -n "$vm_fail_dir" ]; then
				rm -rf "$vm/$vm_fail_dir" && cp -r "$run" "$vm/$vm_fail_dir" 2>/dev/null &&
					echo "logs kept in $vm/$vm_fail_dir"
			fi
		fi
		[ "${!vm_keep_var:-0}" = 1 ] && echo "run directory kept: $run" || rm -rf "$run"
	fi
	exit $rc
}
trap vm_cleanup EXIT
# A killed test (ctest, ^C) ends through vm_cleanup too.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# vm_rundir PREFIX KEEPVAR [FAILDIR]: make $run. vm_fail_logs (default: the
# run's *.log) are shown when the test fails.
vm_rundir() {
	run=$(mktemp -d "/tmp/$1.XXXXXX")
	vm_keep_var=$2 vm_fail_dir=${3:-}
}
vm_fail_logs=()
vm_keep_var=FM_VM_KEEP vm_fail_dir=

vm_prepare() {
	local f rc=0
	for f in fluidmemd fluidmemctl fluidmem-run; do
		[ -x "$bin/$f" ] || { echo "FAIL: $bin/$f not built"; exit 1; }
	done
	[ -e /dev/userfaultfd ] || [ "$(id -u)" -eq 0 ] || skip "no userfaultfd access"
	bash "$src/tests/vm/mkguest.sh" "$vm" "$src" || rc=$?
	[ $rc -eq 0 ] || exit $rc
}
vm_need_qemu() {
	command -v "$QEMU" >/dev/null || skip "$QEMU not found: install qemu-system-x86 (scripts/lib.sh FM_PACKAGES)"
}

# A sanitizer build's shim brings the ASan runtime into QEMU, which is not
# built with it: say that this order is intended, and leave QEMU's own leaks
# to QEMU (the daemon keeps the full checks). Empty for a plain build.
vm_shim_asan() {
	# not grep -q: with pipefail, grep's early exit would fail ldd (SIGPIPE)
	if ldd "$build/lib/libfluidmem-preload.so" 2>/dev/null | grep libasan >/dev/null; then
		echo "${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:detect_leaks=0"
	fi
}

# vm_pick_accel probe|cached: KVM only if a Linux guest really boots under it
# here. `probe` boots one to find out (the verdict is cached per kernel: a
# failing KVM boot can take its whole timeout); `cached` takes an earlier
# verdict, else TCG. FM_VM_ACCEL=tcg|kvm forces it. Sets accel, accel_why
# and accel_args (QEMU must be set).
vm_pick_accel() {
	local cache
	accel=${FM_VM_ACCEL:-} accel_why="forced by FM_VM_ACCEL"
	if [ -z "$accel" ]; then
		accel=tcg accel_why="no usable /dev/kvm"
		cache="$vm/accel.$(md5sum <"$vm/vmlinuz" | cut -c1-12)"
		if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
			if [ "$1" = probe ] && [ ! -s "$cache" ]; then
				(timeout 40 "$QEMU" "${base_args[@]}" -enable-kvm -cpu host -m 256M \
					-append "$append_base fmtest.mode=probe" -serial "file:$run/kvm-probe.log") \
					>/dev/null 2>&1 || true
				grep -q 'FMTEST: booted' "$run/kvm-probe.log" 2>/dev/null && echo kvm >"$cache" ||
					echo tcg >"$cache"
			fi
			[ -s "$cache" ] && accel=$(cat "$cache")
			accel_why="a Linux guest did not boot under KVM here (probe cached in $cache)"
			[ "$accel" = kvm ] && accel_why="a Linux guest boots under KVM here"
		fi
	fi
	case $accel in
	kvm) accel_args=(-enable-kvm -cpu host) ;;
	tcg) accel_args=(-accel tcg -cpu max)
		"$QEMU" -accel help 2>/dev/null | grep -cx tcg >/dev/null || skip "QEMU has no TCG and KVM is not usable" ;;
	*) die "FM_VM_ACCEL must be tcg or kvm" ;;
	esac
}

# start_daemon LOG ARG...: fluidmemd with ARGs, its stderr in LOG, answering
# on $ctl within 30 s (a loaded machine).
start_daemon() {
	local log=$1
	shift
	"$bin/fluidmemd" "$@" 2>"$log" &
	daemon_pid=$!
	[ -n "$vm_daemon_on_exit" ] || { on_exit stop_daemon; vm_daemon_on_exit=1; }
	for _ in $(seq 300); do
		"$bin/fluidmemctl" -s "$ctl" ping >/dev/null 2>&1 && return
		kill -0 "$daemon_pid" 2>/dev/null || die "fluidmemd did not start ($log)"
		sleep 0.1
	done
	die "fluidmemd did not answer within 30 s ($log)"
}
stop_daemon() {
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		"$bin/fluidmemctl" -s "$ctl" shutdown >/dev/null 2>&1 || kill "$daemon_pid"
		wait "$daemon_pid" 2>/dev/null || true
	fi
	daemon_pid=
}
vm_daemon_on_exit=

ctljson() { "$bin/fluidmemctl" -s "$ctl" --json "$@"; }
# dstat KEY: a number from the daemon's stats totals.
dstat() { ctljson stats | python3 -c "import json,sys; print(json.load(sys.stdin)['totals']['$1'])"; }

# wait_serial LOG TEXT SECONDS: until the guest prints TEXT; fail early if
# it reports a failure or is gone (guest_alive, the script's).
wait_serial() {
	local log=$1 text=$2 deadline=$((SECONDS + $3))
	[ -z "${END:-}" ] || [ $deadline -le "$END" ] || deadline=$END
	while ! grep -qF "$text" "$log" 2>/dev/null; do
		grep -q 'FMTEST: FAIL' "$log" 2>/dev/null && die "guest: $(grep -m1 'FMTEST: FAIL' "$log")"
		# The guest may print TEXT and power off between two polls: look
		# at the log once more before calling a stopped guest a failure.
		guest_alive || grep -qF "$text" "$log" 2>/dev/null || die "the guest stopped before \"$text\""
		[ $SECONDS -lt $deadline ] || die "no \"$text\" from the guest within $3 s"
		sleep 0.2
	done
}

vm_no_sanitizer_reports() {
	if grep -l 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$@" 2>/dev/null; then
		die "sanitizer report (above)"
	fi
}
