#!/usr/bin/env bash
# A daemon restarted with another shards.count than its local store was
# written with is refused (exit 2, naming both counts), its store and state
# files untouched; restarted with the same count it re-adopts the live
# client's region and loses nothing (docs/design.md section 12, "Stripe
# ownership survives the restart"). `fluidmemd --check` refuses the changed
# count the same way.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

if ! grep -q FLUIDMEM_RECONNECT_MIN_MS "$BUILD/lib/libfluidmem.so"; then
	echo "SKIP: this libfluidmem does not reconnect after a daemon restart"
	exit 0
fi
export FLUIDMEM_RECONNECT_MIN_MS=10 FLUIDMEM_RECONNECT_MAX_MS=100
BUDGET=256
PAGES=$((4 * BUDGET))
STORM_PID=
guard_cleanup() {
	[ -z "$STORM_PID" ] || kill -9 "$STORM_PID" 2>/dev/null || true
	cleanup
}
trap guard_cleanup EXIT

# run_fmd COUNT: a daemon with COUNT shards on one store and state dir.
run_fmd() {
	"$BIN/fluidmemd" --config "$SRC/configs/local.toml" \
		--set "register.path=\"$REG\"" --set "control.path=\"$CTL\"" \
		--set "daemon.state_dir=\"$RUN/state\"" --set "memory.resident_pages=$BUDGET" \
		--set "store.local.path=\"$RUN/store\"" --set "shards.count=$1" --set "shards.cpus=[]" \
		2>>"$RUN/fluidmemd.log" &
	DAEMON_PID=$!
	for _ in $(seq 400); do
		"$BIN/fluidmemctl" --socket "$CTL" ping >/dev/null 2>&1 && return 0
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.025
	done
	return 1
}

# Everything the refused starts must leave as it was.
snapshot() { (cd "$RUN" && find state store -type f -print0 | sort -z | xargs -0 sha256sum); }

run_fmd 2 || { tail -30 "$RUN/fluidmemd.log" >&2; exit 1; }
check "the store records its shard count" test "$(cat "$RUN/store/shard-count")" = 2
"$BIN/fault-storm" --socket "$REG" --control "$CTL" --json --quiet --verify \
	--pages "$PAGES" --threads 2 --passes 20 --pattern random --write-ratio 0.5 \
	--seed 7 >"$RUN/storm.json" 2>"$RUN/storm.err" &
STORM_PID=$!
# Pages in the store before the crash: the budget is a quarter of the set.
for _ in $(seq 400); do
	[ "$(stat evictions 2>/dev/null || echo 0)" -gt "$((2 * PAGES))" ] && break
	sleep 0.025
done
check "pages were evicted into the store before the crash" \
	test "$(stat evictions 2>/dev/null || echo 0)" -gt "$((2 * PAGES))"
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=
check "a region awaits re-adoption" test "$(ls "$RUN/state" | grep -c '^region-')" -ge 1
before=$(snapshot)

for n in 1 3; do
	: >"$RUN/refused.log"
	rc=0
	"$BIN/fluidmemd" --config "$SRC/configs/local.toml" \
		--set "register.path=\"$REG\"" --set "control.path=\"$CTL\"" \
		--set "daemon.state_dir=\"$RUN/state\"" --set "memory.resident_pages=$BUDGET" \
		--set "store.local.path=\"$RUN/store\"" --set "shards.count=$n" --set "shards.cpus=[]" \
		2>"$RUN/refused.log" || rc=$?
	check "shards.count=$n over a 2-shard store: exit 2 (got $rc)" test $rc -eq 2
	check "shards.count=$n: the error names both counts and the fix" \
		grep -qF "shards.count is $n but the local store under $RUN/store was written with 2 shards" \
		"$RUN/refused.log"
	check "shards.count=$n: says to set shards.count = 2" grep -qF "Set shards.count = 2" "$RUN/refused.log"
	check "shards.count=$n: store and state files untouched" test "$(snapshot)" = "$before"
	# --check says the same, before a start is tried.
	rc=0
	"$BIN/fluidmemd" --config "$SRC/configs/local.toml" --check \
		--set "store.local.path=\"$RUN/store\"" --set "shards.count=$n" --set "shards.cpus=[]" \
		>"$RUN/fmcheck.out" 2>"$RUN/fmcheck.err" || rc=$?
	check "--check with shards.count=$n: exit 2 (got $rc)" test $rc -eq 2
	check "--check with shards.count=$n: names both counts and the fix" \
		grep -qF "shards.count is $n but the local store under $RUN/store was written with 2 shards" \
		"$RUN/fmcheck.err"
	check "--check with shards.count=$n: not called valid" test ! -s "$RUN/fmcheck.out"
	check "--check with shards.count=$n: store and state files untouched" test "$(snapshot)" = "$before"
done
rc=0
"$BIN/fluidmemd" --config "$SRC/configs/local.toml" --check \
	--set "store.local.path=\"$RUN/store\"" --set "shards.count=2" --set "shards.cpus=[]" \
	>"$RUN/fmcheck.out" 2>"$RUN/fmcheck.err" || rc=$?
check "--check with the store's shards.count=2: exit 0 (got $rc)" test $rc -eq 0
check "--check with the store's shards.count=2: valid" grep -qF ": valid" "$RUN/fmcheck.out"

run_fmd 2 || { tail -30 "$RUN/fluidmemd.log" >&2; exit 1; }
rc=0
wait "$STORM_PID" || rc=$?
STORM_PID=
check "the storm finished across the restart (exit $rc)" test $rc -eq 0
check "0 verify errors" test "$(json_get "$RUN/storm.json" verify_errors)" = 0
check "the region was re-adopted" grep -qF "re-adopting" "$RUN/fluidmemd.log"
check "re-adopted with 0 poisoned pages" test "$(stat poisoned)" -eq 0
check "clean stop" stop_daemon
finish
