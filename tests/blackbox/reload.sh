#!/usr/bin/env bash
# SIGHUP reloads the configuration under a running, verified fault storm:
# a changed budget reaches the shards (checked in stats), a key that cannot
# change at run time is refused with a log line while the rest applies, and
# a broken file leaves the daemon running on its old configuration.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"
CONFIG="$RUN/fluidmemd.toml"
FMCTL="$BIN/fluidmemctl"

write_config() { # write_config BUDGET [POLICY]
	sed -e "s/^resident_pages = .*/resident_pages = $1/" -e "s/^policy = .*/policy = \"${2:-s3fifo}\"/" \
		"$SRC/configs/local.toml" >"$CONFIG.new"
	mv "$CONFIG.new" "$CONFIG"
}
budget() { "$FMCTL" --socket "$CTL" --json config | python3 -c \
	'import json,sys,re; print(re.search(r"resident_pages = (\d+)", json.load(sys.stdin)["toml"]).group(1))'; }
# hup_and_wait WHAT: SIGHUP, then wait for the daemon's "reload of" line.
hup_and_wait() {
	local n
	n=$(grep -c -e 'reload of' -e 'reload: .*stays as it was' "$RUN/fluidmemd.log" || true)
	kill -HUP "$DAEMON_PID"
	for _ in $(seq 400); do
		[ "$(grep -c -e 'reload of' -e 'reload: .*stays as it was' "$RUN/fluidmemd.log" || true)" -gt "$n" ] && return 0
		sleep 0.05
	done
	echo "no reload line after SIGHUP" >&2
	return 1
}

write_config 512
start_daemon
"$BIN/fault-storm" --socket "$REG" --control "$CTL" --pages 4096 --threads 2 --passes 6 \
	--pattern zipf --verify --quiet >"$RUN/storm.out" 2>&1 &
storm=$!

check "config names its source" bash -c "'$FMCTL' --socket '$CTL' config | grep -qx '# source: $CONFIG'"
check "config prints TOML the daemon loads back" bash -c \
	"'$FMCTL' --socket '$CTL' config | grep -v '^#' >'$RUN/dump.toml' && '$BIN/fluidmemd' --config '$RUN/dump.toml' --check >/dev/null"
for b in 300 900 256 700; do
	write_config $b
	hup_and_wait
	check "SIGHUP with resident_pages = $b: config shows it" test "$(budget)" = $b
	check "SIGHUP with resident_pages = $b: the shards' budgets add up to it" test "$(stat budget)" = $b
done
write_config 600 fifo
hup_and_wait
check "memory.policy is refused with a log line" grep -q 'reload: memory.policy cannot change at run time ("s3fifo" -> "fifo")' "$RUN/fluidmemd.log"
check "... and the budget in the same file still applies" test "$(stat budget)" = 600
echo 'this is [not toml' >"$CONFIG"
hup_and_wait
check "a broken file is logged" grep -q 'reload: .*the running configuration stays as it was' "$RUN/fluidmemd.log"
check "a broken file leaves the daemon running" kill -0 "$DAEMON_PID"
check "a broken file leaves the old budget" test "$(stat budget)" = 600
write_config 0
hup_and_wait
check "an invalid value is refused as a whole" test "$(stat budget)" = 600
write_config 800
for _ in 1 2 3 4 5; do kill -HUP "$DAEMON_PID"; done
hup_and_wait
check "a burst of SIGHUPs: still serving, the last file applied" test "$(stat budget)" = 800
rc=0; wait "$storm" || rc=$?
check "the verified storm ran through every reload (exit $rc)" test $rc -eq 0
[ $rc -eq 0 ] || cat "$RUN/storm.out"
check "daemon stops cleanly" stop_daemon
finish
