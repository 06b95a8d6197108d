#!/usr/bin/env bash
# fault-storm against the real daemon: every byte verified under eviction
# with several writer threads, and the replacement policy beating FIFO on a
# skewed workload (counted by the daemon, not timed).
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

storm() { # storm OUT.json [fault-storm args...]
	local out="$1"; shift
	"$BIN/fault-storm" --socket "$REG" --control "$CTL" --json --quiet "$@" >"$out"
}

start_daemon --set memory.resident_pages=1024
for pattern in random seq zipf; do
	rc=0; storm "$RUN/$pattern.json" --pages 8192 --threads 4 --passes 3 --pattern "$pattern" \
		--write-ratio 0.5 --verify || rc=$?
	check "$pattern, 4 threads, 8x budget: exit 0" test $rc -eq 0
	check "$pattern: no verify errors" test "$(json_get "$RUN/$pattern.json" verify_errors)" -eq 0
done
check "thousands of evictions happened" test "$(stat evictions)" -gt 20000
check "budget honoured at rest" test "$(stat resident)" -le 1024
check "nothing poisoned" test "$(stat poisoned)" -eq 0
check "no fault was lost or stray" test "$(stat dispatch_stray_faults)" -eq 0
check "regions all freed" test "$(stat regions)" -eq 0
check "store emptied" test "$(stat store_bytes)" -eq 0
check "clean stop" stop_daemon

# The same skewed workload under FIFO and under the default policy: count the
# pages each had to fetch back from the store. One thread and a fixed seed fix
# the fault sequence, so the counts repeat: over repeated runs on the project's
# machine, under load, fifo fetched 11,011-11,013 pages and s3fifo 6,393
# (42% fewer). Two threads would interleave differently on every run.
refetches() { # policy
	start_daemon --set memory.resident_pages=2048 --set "memory.policy=\"$1\""
	storm "$RUN/pol-$1.json" --pages 20480 --threads 1 --passes 4 --pattern zipf --zipf-s 0.99 \
		--write-ratio 0.3 --seed 7
	stat fetches
	stop_daemon
}
fifo=$(refetches fifo)
s3=$(refetches s3fifo)
echo "zipf 0.99, working set 10x budget, one thread: fifo fetched $fifo pages, s3fifo $s3"
# A deterministic 42% gap: an 8% margin fails only if the policy regresses.
check "s3fifo fetches at least 8% fewer pages than fifo ($s3 vs $fifo)" \
	test $((s3 * 100)) -le $((fifo * 92))
finish
