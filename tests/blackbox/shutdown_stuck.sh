#!/usr/bin/env bash
# A region whose detach is not acknowledged by the 5 s shutdown deadline (a
# shard stuck, here by the shard.detach_stall failpoint) is still freed at
# exit, with its state file: nothing is left for a next daemon to re-adopt
# pages whose copies the shards dropped. The ASan build checks nothing leaks.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

FLUIDMEM_FAILPOINTS="shard.detach_stall=EIO" start_daemon --set memory.resident_pages=256
# A client that stays: many passes, so it is still faulting at the shutdown.
"$BIN/fault-storm" --socket "$REG" --control "$CTL" --pages 1024 --threads 1 --passes 10000 \
	--pattern random --quiet >"$RUN/storm.log" 2>&1 &
storm=$!
for _ in $(seq 200); do
	[ "$("$BIN/fluidmemctl" --socket "$CTL" regions | wc -l)" -gt 1 ] && break
	sleep 0.05
done
check "the client's region is live" bash -c "[ \$('$BIN/fluidmemctl' --socket '$CTL' regions | wc -l) -gt 1 ]"
check "its state file exists" bash -c "ls '$RUN/state' | grep -q '^region-'"
"$BIN/fluidmemctl" --socket "$CTL" shutdown --drop >/dev/null 2>&1 || true
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=
kill -9 "$storm" 2>/dev/null || true
wait "$storm" 2>/dev/null || true
check "daemon exited cleanly" test $rc -eq 0
check "the stuck region was freed at exit" grep -q 'still detaching at the 5 s deadline; freed' "$RUN/fluidmemd.log"
check "no state file is left for it" bash -c "! ls '$RUN/state' | grep -q '^region-'"
check "no leak reported" bash -c "! grep -q 'LeakSanitizer' '$RUN/fluidmemd.log'"
[ "$FAILED" = 0 ] || { tail -5 "$RUN/storm.log"; tail -20 "$RUN/fluidmemd.log"; ls -la "$RUN/state"; } >&2
finish
