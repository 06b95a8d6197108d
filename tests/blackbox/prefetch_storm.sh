#!/usr/bin/env bash
# fault-storm with prefetch on (the default window): every byte verified
# under eviction for sequential, strided and random scans, and prefetch
# counted where a stream exists and nowhere else (counted, not timed).
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

storm() { # storm OUT.json [fault-storm args...]
	local out="$1"; shift
	"$BIN/fault-storm" --socket "$REG" --control "$CTL" --json --quiet "$@" >"$out"
}

for pattern in seq stride random; do
	start_daemon --set memory.resident_pages=1024 --set memory.prefetch_pages=32
	rc=0; storm "$RUN/$pattern.json" --pages 8192 --threads 1 --passes 3 --pattern "$pattern" \
		--stride 8 --write-ratio 0.5 --verify || rc=$?
	check "$pattern, 8x budget: exit 0" test $rc -eq 0
	check "$pattern: no verify errors" test "$(json_get "$RUN/$pattern.json" verify_errors)" -eq 0
	pf=$(stat prefetched); hits=$(stat prefetch_hits); wasted=$(stat prefetch_wasted)
	echo "$pattern: prefetched $pf, hits $hits, wasted $wasted, accuracy $(stat prefetch_accuracy)"
	if [ "$pattern" = random ]; then
		# --verify's final check reads every page in order: a real
		# sequential scan, which prefetch serves; nothing else may be.
		check "random: only the final check's scan prefetched ($pf)" test "$pf" -le 8192
	else
		check "$pattern: thousands of pages prefetched ($pf)" test "$pf" -gt 2000
		check "$pattern: most prefetched pages used ($hits of $pf)" test $((hits * 2)) -gt "$pf"
	fi
	check "$pattern: hits + wasted <= prefetched" test $((hits + wasted)) -le "$pf"
	check "$pattern: budget honoured at rest" test "$(stat resident)" -le 1024
	check "$pattern: nothing poisoned" test "$(stat poisoned)" -eq 0
	check "$pattern: no fault errors" test "$(stat fault_errors)" -eq 0
	check "$pattern: regions all freed" test "$(stat regions)" -eq 0
	check "$pattern: clean stop" stop_daemon
done

# Uniform random faults alone (no final scan) show no stream: 1 fault in 8
# equal to the one before would be needed 5 times out of 8.
start_daemon --set memory.resident_pages=1024 --set memory.prefetch_pages=32
storm "$RUN/rnd.json" --pages 8192 --threads 2 --passes 3 --pattern random --write-ratio 0.5
check "random, no final scan: (almost) nothing prefetched" test "$(stat prefetched)" -le 64
check "random, no final scan: clean stop" stop_daemon

# Off means off.
start_daemon --set memory.resident_pages=1024 --set memory.prefetch_pages=0
storm "$RUN/off.json" --pages 8192 --threads 1 --passes 2 --pattern seq --verify
check "off: no verify errors" test "$(json_get "$RUN/off.json" verify_errors)" -eq 0
check "off: nothing prefetched" test "$(stat prefetched)" -eq 0
check "off: clean stop" stop_daemon
finish
