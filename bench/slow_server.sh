#!/bin/bash
# Store I/O under a slow or dead memcached server (issue 11 goal 5), two
# parts, each run for the baseline daemon first (if given) and this build,
# in the same run. One shard, three memcached servers, replicas = 0 unless
# said.
#
# 1. Parked fault (ROUNDS rounds): tests/unit/test_slow_server's first test
#    (this build's test binary, FM_TEST_FLUIDMEMD naming the daemon): one
#    thread touches pages of a server stopped with SIGSTOP, the main thread
#    reads pages of the two healthy servers. Printed: the healthy reads'
#    rate and worst wait before and during the stop (at most STOP_LIMIT_S).
# 2. Storm: a verifying fault-storm on pages spread over the three servers;
#    after WARM_S seconds server 2 is stopped for STOP_S seconds (then
#    SIGCONT), or killed (replicas = 1). Printed: faults per second before
#    and during the event (fluidmemctl stats, sampled), verify errors,
#    poisoned pages, parked faults. With few storm threads each blocks on
#    its first page of the stopped server, so "during" mostly shows whether
#    the shard itself stalled.
#
#   bench/slow_server.sh BUILD_DIR [BASELINE_BUILD_DIR]
# Environment: ROUNDS (3), STOP_LIMIT_S (5), STORM_ARGS, WARM_S, STOP_S,
# SETS (extra --set options for fluidmemd), MODES ("stop kill").
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
builds=("$1")
[ $# -ge 2 ] && builds=("$2" "$1")
args=${STORM_ARGS:---pages 8192 --threads 2 --passes 12 --pattern random --verify}
warm=${WARM_S:-3}
stop_s=${STOP_S:-3}
modes=${MODES:-stop kill}
# retries = 10 (the maximum): a page whose only server is stopped waits
# (parked, or in the baseline blocked) rather than being poisoned.
sets=${SETS:-}
tmp=$(mktemp -d /tmp/slow-server.XXXXXX)
mc_pids=()
fmd=
storm=
cleanup() {
	[ -z "$storm" ] || kill "$storm" 2>/dev/null || true
	[ -z "$fmd" ] || { kill "$fmd" 2>/dev/null; wait "$fmd" 2>/dev/null; } || true
	for p in "${mc_pids[@]}"; do
		kill -CONT "$p" 2>/dev/null || true
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
asroot=()
[ "$(id -u)" = 0 ] && asroot=(-u root)

start_servers() { # -> servers string in $servers
	servers=
	mc_pids=()
	for i in 0 1 2; do
		port=$(free_port)
		memcached "${asroot[@]}" -l 127.0.0.1 -p "$port" -U 0 -M -m 256 -t 1 &
		mc_pids+=($!)
		servers="${servers:+$servers,}127.0.0.1:$port"
		for _ in $(seq 100); do
			python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$port" 2>/dev/null && break
			sleep 0.05
		done
	done
}
stop_servers() {
	for p in "${mc_pids[@]}"; do
		kill -CONT "$p" 2>/dev/null || true   # a killed server is gone already
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	mc_pids=()
}

stat() { # ctl key -> number from the totals; nothing when stats do not
	# answer (a stalled shard cannot send its stats either)
	{ "$bin/fluidmemctl" --socket "$1" --json stats 2>/dev/null || true; } |
		{ grep -o "\"$2\":[0-9.]*" || true; } | head -1 | cut -d: -f2
}

run_one() { # build mode
	bin=$1/bin
	mode=$2
	dir=$tmp/run
	rm -rf "$dir"
	mkdir -p "$dir/state"
	start_servers
	replicas=0
	[ "$mode" = kill ] && replicas=1
	# shellcheck disable=SC2086
	"$bin/fluidmemd" --config "$src/configs/memcached.toml" \
		--set "register.path=\"$dir/reg.sock\"" --set "control.path=\"$dir/ctl.sock\"" \
		--set "daemon.state_dir=\"$dir/state\"" --set shards.count=1 --set 'shards.cpus=[1]' \
		--set memory.resident_pages=2048 --set "store.memcached.servers=\"$servers\"" \
		--set store.memcached.replicas=$replicas --set store.memcached.retries=10 \
		$sets >"$dir/log" 2>&1 &
	fmd=$!
	for _ in $(seq 200); do
		"$bin/fluidmemctl" --socket "$dir/ctl.sock" ping >/dev/null 2>&1 && break
		sleep 0.05
	done
	# shellcheck disable=SC2086
	"$bin/fault-storm" --socket "$dir/reg.sock" --control "$dir/ctl.sock" $args \
		--json --quiet >"$dir/out.json" 2>"$dir/storm.err" &
	storm=$!
	sleep "$warm"
	f0=$(stat "$dir/ctl.sock" faults)
	t0=$(date +%s.%N)
	sleep 1
	f1=$(stat "$dir/ctl.sock" faults)
	t1=$(date +%s.%N)
	if [ "$mode" = stop ]; then
		kill -STOP "${mc_pids[1]}"
		sleep "$stop_s"
		f2=$(stat "$dir/ctl.sock" faults)
		t2=$(date +%s.%N)
		kill -CONT "${mc_pids[1]}"
	else
		kill -KILL "${mc_pids[1]}"
		sleep "$stop_s"
		f2=$(stat "$dir/ctl.sock" faults)
		t2=$(date +%s.%N)
	fi
	rc=0
	wait "$storm" || rc=$?
	storm=
	poisoned=$(stat "$dir/ctl.sock" poisoned)
	parked=$(stat "$dir/ctl.sock" parked || true)
	kill "$fmd"
	wait "$fmd" || true
	fmd=
	stop_servers
	python3 - "$dir/out.json" "$rc" "$1" "$mode" "$f0" "$t0" "$f1" "$t1" "$f2" "$t2" \
		"$poisoned" "${parked:-n/a}" <<'PY'
import json, sys
(out, rc, build, mode, f0, t0, f1, t1, f2, t2, poisoned, parked) = sys.argv[1:]
try:
    d = json.load(open(out)); errs = d["verify_errors"]; p99 = d.get("fault_p99_us", "?")
except Exception:
    errs = "storm died (rc %s)" % rc; p99 = "?"
def rate(fa, ta, fb, tb):
    return (float(fb) - float(fa)) / (float(tb) - float(ta)) if fa and fb else None
before = rate(f0, t0, f1, t1)
during = rate(f1, t1, f2, t2)
fmt = lambda v: "%9.0f" % v if v is not None else "  no stats"
print("%-28s %-5s %s %s %6s  %-8s %8s %6s" % (build[-28:], mode, fmt(before), fmt(during),
      "%.2f" % (during / before) if before and during is not None else "-", errs,
      poisoned or "?", parked or "-"))
PY
}

rounds=${ROUNDS:-3}
limit=${STOP_LIMIT_S:-5}
echo "# part 1: parked fault; healthy-server reads before / during a stop of server 2 (<= ${limit}s)"
for r in $(seq "$rounds"); do
	for b in "${builds[@]}"; do
		line=$(FM_TEST_STOP_S=$limit FM_TEST_FLUIDMEMD="$b/bin/fluidmemd" \
			"$1/tests/test_slow_server" --filter 'slow_server/healthy*' 2>&1 |
			grep '^slow_server:' || true)
		echo "round $r ${b}: ${line:-(no result)}"
	done
done

echo "# part 2: fault-storm $args; 1 shard; 3 memcached; server 2 of 3 stopped for ${stop_s}s"
echo "# (stop: replicas=0) or killed (kill: replicas=1) after ${warm}s; faults/s from fluidmemctl stats"
printf '%-28s %-5s %9s %9s %6s  %-8s %8s %6s\n' build mode before during ratio verify poisoned parked
for m in $modes; do
	for b in "${builds[@]}"; do
		run_one "$b" "$m"
	done
done
