#!/usr/bin/env bash
# A verifying fault storm over three memcached servers (issue 11 goal 5):
# one server is stopped (SIGSTOP: a slow server) for a few seconds mid-storm
# with replicas = 0, then continued: 0 verify errors, nothing poisoned, the
# faults that met it parked (not the shard stalled). Then, with replicas =
# 1, one server is killed mid-storm: 0 verify errors, nothing poisoned.
# tests/unit/test_slow_server.c shows that healthy servers' pages are served
# while a fault is parked; this is the whole daemon under a storm.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

if ! command -v memcached >/dev/null; then
	echo "SKIP: memcached is not installed (scripts/test installs it)"
	exit 0
fi
CONFIG="$SRC/configs/memcached.toml"
MC_PIDS=()
STORM_PID=
storm_cleanup() {
	[ -z "$STORM_PID" ] || kill -9 "$STORM_PID" 2>/dev/null || true
	for p in "${MC_PIDS[@]}"; do
		kill -CONT "$p" 2>/dev/null || true
		kill "$p" 2>/dev/null || true
	done
	cleanup
}
trap storm_cleanup EXIT

asroot=()
[ "$(id -u)" != 0 ] || asroot=(-u root)
SERVERS=
for i in 0 1 2; do
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	memcached "${asroot[@]}" -l 127.0.0.1 -p "$port" -U 0 -M -m 256 -t 1 &
	MC_PIDS+=($!)
	SERVERS="${SERVERS:+$SERVERS,}127.0.0.1:$port"
	for _ in $(seq 100); do
		python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' \
			"$port" 2>/dev/null && break
		sleep 0.05
	done
done

# storm_run NAME REPLICAS ACTION: a storm; ACTION (stop|kill) on server 1
# once it is a quarter through.
storm_run() {
	local name=$1 replicas=$2 action=$3 total f1 f2
	start_daemon --set "store.memcached.servers=\"$SERVERS\"" \
		--set store.memcached.replicas="$replicas" --set store.memcached.retries=10 \
		--set store.memcached.io_timeout_ms=200 --set memory.resident_pages=1024
	"$BIN/fault-storm" --socket "$REG" --control "$CTL" --pages 4096 --threads 4 \
		--passes 12 --pattern random --write-ratio 0.5 --verify --json --quiet \
		>"$RUN/$name.json" 2>"$RUN/$name.err" &
	STORM_PID=$!
	total=$((4096 * 12))
	for _ in $(seq 3000); do
		f1=$(stat faults)
		[ "${f1:-0}" -lt $((total / 4)) ] || break
		kill -0 "$STORM_PID" 2>/dev/null || break
		sleep 0.02
	done
	if [ "$action" = stop ]; then
		kill -STOP "${MC_PIDS[1]}"
		sleep 3
		f2=$(stat faults)
		kill -CONT "${MC_PIDS[1]}"
		echo "$name: faults served during the 3 s stop: $((f2 - f1)); parked: $(stat parked)"
		check "$name: faults met the stopped server and were parked" test "$(stat parked)" -gt 0
	else
		kill -KILL "${MC_PIDS[1]}"
		wait "${MC_PIDS[1]}" 2>/dev/null || true
	fi
	local rc=0
	wait "$STORM_PID" || rc=$?
	STORM_PID=
	check "$name: the storm ran to its end" test "$rc" -eq 0
	if [ "$rc" -eq 0 ]; then
		check "$name: 0 verify errors" test "$(json_get "$RUN/$name.json" verify_errors)" -eq 0
		echo "$name: $(json_get "$RUN/$name.json" faults) faults"
	else
		cat "$RUN/$name.err"
	fi
	check "$name: nothing poisoned" test "$(stat poisoned)" -eq 0
	check "$name: the daemon stopped cleanly" stop_daemon
}

storm_run stop 0 stop
storm_run kill 1 kill
finish
