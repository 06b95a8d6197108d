#!/usr/bin/env bash
# A short scripts/soak: verifying writers SIGKILLed and restarted at random,
# global and per-region resize storms, then no lost write, no daemon death or
# stall, and no growth of the daemon's descriptors or RSS at rest.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

rc=0
"$SRC/scripts/soak" --build "$BUILD" --evictions 50000 --min-verified 3 --timeout 300 --json \
	--progress-s 5 >"$RUN/soak.json" || rc=$?
cat "$RUN/soak.json"
check "soak exits 0" test $rc -eq 0
check "summary says pass" test "$(json_get "$RUN/soak.json" pass)" = True
check "50000 evictions in the main phase" test "$(json_get "$RUN/soak.json" evictions)" -ge 50000
check "no verify errors" test "$(json_get "$RUN/soak.json" verify_errors)" -eq 0
check "no failed writer run" test "$(json_get "$RUN/soak.json" runs_failed)" -eq 0
check "at least 3 runs survived and verified" test "$(json_get "$RUN/soak.json" runs_ok)" -ge 3
check "some clients killed" test "$(json_get "$RUN/soak.json" kills)" -gt 0
check "resizes happened" test "$(json_get "$RUN/soak.json" resizes)" -gt 0
check "no descriptor growth" test "$(json_get "$RUN/soak.json" fds_end)" -le "$(json_get "$RUN/soak.json" fds_start)"
rc=0; "$SRC/scripts/soak" --build "$BUILD" --writers 1 >/dev/null 2>&1 || rc=$?
check "one writer is a usage error (exit 2)" test $rc -eq 2
finish
