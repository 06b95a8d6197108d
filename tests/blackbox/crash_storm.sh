#!/usr/bin/env bash
# Crash and restart under a verifying fault storm (issue 10): fluidmemd is
# killed with SIGKILL at 20 random moments, and once at each eviction step
# through the kill failpoints, while fault-storm (2 threads, working set 4x
# the budget, --verify) runs through libfluidmem, which reconnects and
# re-adopts its region each time. Every storm must end with 0 verify errors
# and nothing poisoned. Once with memcached, once with the local store on a
# path (the two stores that survive the daemon).
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

# The client side (libfluidmem's reconnect and READOPT) is needed: without
# it the storm's faults would wait for ever after the first kill.
if ! grep -q FLUIDMEM_RECONNECT_MIN_MS "$BUILD/lib/libfluidmem.so"; then
	echo "SKIP: this libfluidmem does not reconnect after a daemon restart"
	exit 0
fi

BUDGET=1024
PAGES=$((4 * BUDGET))
KILLS=${FM_CRASH_KILLS:-20}
FAILPOINTS=(evict.after_protect=kill@1500 evict.after_put=kill@40 evict.after_mark=kill@1500
	evict.after_punch=kill@1500 evict.after_unprotect=kill@1500)
export FLUIDMEM_RECONNECT_MIN_MS=10 FLUIDMEM_RECONNECT_MAX_MS=100
MC_PID=
STORM_PID=
STORMS=0

crash_cleanup() {
	[ -z "$STORM_PID" ] || kill -9 "$STORM_PID" 2>/dev/null || true
	[ -z "$MC_PID" ] || kill "$MC_PID" 2>/dev/null || true
	cleanup
}
trap crash_cleanup EXIT

# How many times a kill failpoint has fired, from the daemon's log.
failpoints_fired() {
	local n
	n=$(grep -c ': killing the daemon$' "$RUN/fluidmemd.log" 2>/dev/null || true)
	echo "${n:-0}"
}

# start_fmd [env...]: a daemon on this backend's store and state (appending
# to one log, so every restart's lines stay).
start_fmd() {
	local fired
	fired=$(failpoints_fired)
	env "$@" "$BIN/fluidmemd" --config "$SRC/configs/local.toml" \
		--set "register.path=\"$REG\"" --set "control.path=\"$CTL\"" \
		--set "daemon.state_dir=\"$RUN/state-$BACKEND\"" --set "memory.resident_pages=$BUDGET" \
		"${STORE_SETS[@]}" 2>>"$RUN/fluidmemd.log" &
	DAEMON_PID=$!
	for _ in $(seq 400); do
		"$BIN/fluidmemctl" --socket "$CTL" ping >/dev/null 2>&1 && return 0
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.025
	done
	# A kill failpoint can fire before the daemon answers a ping: a
	# re-adopted region over the budget is evicted at once, and
	# evict.after_put=kill@40 came 38 ms after the start under ASan. The
	# daemon did start.
	if ! kill -0 "$DAEMON_PID" 2>/dev/null && [ "$(failpoints_fired)" -gt "$fired" ]; then
		return 0
	fi
	tail -30 "$RUN/fluidmemd.log" >&2
	echo "fluidmemd did not start" >&2
	return 1
}

kill_fmd() {
	kill -9 "$DAEMON_PID" 2>/dev/null || true
	wait "$DAEMON_PID" 2>/dev/null || true
	DAEMON_PID=
}

start_storm() {
	STORMS=$((STORMS + 1))
	STORM_OUT="$RUN/storm-$BACKEND-$STORMS.json"
	"$BIN/fault-storm" --socket "$REG" --control "$CTL" --json --quiet --verify \
		--pages "$PAGES" --threads 2 --passes 30 --pattern random --write-ratio 0.5 \
		--seed "$STORMS" >"$STORM_OUT" 2>"$RUN/storm-$BACKEND-$STORMS.err" &
	STORM_PID=$!
	sleep 0.3   # registered before the next kill
}

# A storm that finished is checked, and a new one started, so every kill
# lands under load.
storm_check() {
	local rc=0 errs

	wait "$STORM_PID" || rc=$?
	STORM_PID=
	errs=$(json_get "$STORM_OUT" verify_errors 2>/dev/null || echo missing)
	check "$BACKEND storm $STORMS: exit 0 (got $rc)" test "$rc" -eq 0
	check "$BACKEND storm $STORMS: 0 verify errors (got $errs)" test "$errs" = 0
	[ "$rc" -eq 0 ] || cat "$RUN/storm-$BACKEND-$STORMS.err" >&2
	MAXFAULT="$MAXFAULT $(json_get "$STORM_OUT" max_us 2>/dev/null || echo 0)"
}

keep_storming() {
	if ! kill -0 "$STORM_PID" 2>/dev/null; then
		storm_check
		start_storm
	fi
}

run_backend() {
	local kills=0 fired=0
	MAXFAULT=

	start_fmd
	start_storm
	while [ $kills -lt "$KILLS" ]; do
		sleep "0.$(printf '%03d' $((RANDOM % 700 + 150)))"
		kill_fmd
		kills=$((kills + 1))
		start_fmd
		keep_storming
	done
	ok "$BACKEND: $kills kill -9 at random moments, each restarted"
	for fp in "${FAILPOINTS[@]}"; do
		kill_fmd
		start_fmd FLUIDMEM_FAILPOINTS="$fp"
		keep_storming
		for _ in $(seq 600); do
			kill -0 "$DAEMON_PID" 2>/dev/null || break
			sleep 0.05
			keep_storming
		done
		if kill -0 "$DAEMON_PID" 2>/dev/null; then
			not_ok "$BACKEND: failpoint $fp never fired"
		else
			wait "$DAEMON_PID" 2>/dev/null || true
			fired=$((fired + 1))
		fi
		DAEMON_PID=
		start_fmd
		keep_storming
	done
	check "$BACKEND: every eviction failpoint killed the daemon" test $fired -eq ${#FAILPOINTS[@]}
	storm_check
	check "$BACKEND: nothing poisoned after the last restart" test "$(stat poisoned)" -eq 0
	check "$BACKEND: clean stop" stop_daemon
	# A storm whose client exited while the daemon was down leaves its
	# region file waiting out daemon.readopt_grace_s (an orphan is only
	# collected then), so leftover files are reported, not failed.
	echo "$BACKEND: region files left after the clean stop (orphans within their grace):" \
		"$(ls "$RUN/state-$BACKEND" | grep -c '^region-' || true)"
	echo "$BACKEND: longest access per storm (us):$MAXFAULT"
}

BACKEND=local
STORE_SETS=(--set "store.local.path=\"$RUN/store\"")
run_backend

if command -v memcached >/dev/null; then
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	asroot=(); [ "$(id -u)" != 0 ] || asroot=(-u root)
	memcached "${asroot[@]}" -l 127.0.0.1 -p "$port" -U 0 -M -m 256 -t 1 &
	MC_PID=$!
	for _ in $(seq 100); do
		python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' \
			"$port" 2>/dev/null && break
		sleep 0.05
	done
	BACKEND=memcached
	STORE_SETS=(--set 'store.backend="memcached"' --set "store.memcached.servers=\"127.0.0.1:$port\"")
	run_backend
else
	echo "SKIP: memcached is not installed (scripts/test installs it)"
fi
finish
