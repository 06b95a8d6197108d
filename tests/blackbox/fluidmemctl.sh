#!/usr/bin/env bash
# fluidmemctl as an operator uses it: every command, its --help and --json,
# the live view, and exit codes.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"
CTLBIN="$BIN/fluidmemctl"
ctl() { "$CTLBIN" --socket "$CTL" "$@"; }

start_daemon --set memory.resident_pages=512
"$BIN/fault-storm" --socket "$REG" --control "$CTL" --pages 4096 --threads 2 --passes 2 \
	--pattern zipf --quiet >/dev/null &
storm=$!

for cmd in stats top latency regions resize evict detach metrics log-level ping shutdown; do
	check "$cmd --help" bash -c "'$CTLBIN' $cmd --help | grep -q 'usage: fluidmemctl'"
done
for cmd in stats latency regions metrics ping "evict 10" "resize 600" "log-level info"; do
	check "--json $cmd is one JSON object" bash -c \
		"'$CTLBIN' --socket '$CTL' --json $cmd | python3 -c 'import json,sys; assert json.load(sys.stdin)[\"ok\"]'"
done
check "stats shows totals and a shard table" bash -c \
	"'$CTLBIN' --socket '$CTL' stats | grep -q '^totals' && '$CTLBIN' --socket '$CTL' stats | grep -Eq '^0 +[0-9]+'"
check "latency shows the four histograms" bash -c \
	"'$CTLBIN' --socket '$CTL' latency | grep -c -E '^(fault service|store get|store put|eviction)' | grep -q 4"
check "metrics prints Prometheus text" bash -c "'$CTLBIN' --socket '$CTL' metrics | grep -q '^# TYPE fluidmem_faults_total counter'"
check "top refreshes and exits after --count" bash -c \
	"timeout 20 '$CTLBIN' --socket '$CTL' top --interval 0.2 --count 3 | grep -c '^all ' | grep -q 3"
check "top rejects a bad interval" bash -c "! '$CTLBIN' --socket '$CTL' top --interval 0"
wait "$storm"
check "regions lists nothing once the client left" bash -c "[ \$('$CTLBIN' --socket '$CTL' regions | wc -l) -eq 1 ]"
rc=0; ctl nosuch 2>/dev/null || rc=$?
check "unknown command: exit 2 (usage)" test $rc -eq 2
rc=0; ctl detach 12345 2>/dev/null || rc=$?
check "detach of an unknown region: exit 1" test $rc -eq 1
rc=0; ctl evict -3 2>/dev/null || rc=$?
check "evict -3: exit 1" test $rc -eq 1
check "shutdown says what happens to live regions" bash -c "'$CTLBIN' --socket '$CTL' shutdown | grep -q 'handed back'"
for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.05; done
rc=0; wait "$DAEMON_PID" || rc=$?
DAEMON_PID=
check "daemon exited cleanly after shutdown" test $rc -eq 0
finish
