# Helpers for black-box tests: start a private fluidmemd, query it, stop it.
# Sourced by tests/blackbox/*.sh with BUILD and SRC set.

set -euo pipefail
BIN="$BUILD/bin"
RUN=$(mktemp -d /tmp/fmbb.XXXXXX)
REG="$RUN/reg.sock"
CTL="$RUN/ctl.sock"
DAEMON_PID=
PASSED=0
FAILED=0

cleanup() {
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
	fi
	rm -rf "$RUN"
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); echo "ok: $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "NOT OK: $*"; }
check() { # check "description" command...
	local what="$1"; shift
	if "$@" >"$RUN/check.out" 2>&1; then ok "$what"; else not_ok "$what"; cat "$RUN/check.out"; fi
}

# start_daemon [--set k=v]...: fluidmemd on configs/local.toml with private sockets.
start_daemon() {
	"$BIN/fluidmemd" --config "$SRC/configs/local.toml" \
		--set "register.path=\"$REG\"" --set "control.path=\"$CTL\"" \
		--set "daemon.state_dir=\"$RUN/state\"" "$@" 2>"$RUN/fluidmemd.log" &
	DAEMON_PID=$!
	for _ in $(seq 200); do
		"$BIN/fluidmemctl" --socket "$CTL" ping >/dev/null 2>&1 && return 0
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.05
	done
	cat "$RUN/fluidmemd.log" >&2
	echo "fluidmemd did not start" >&2
	return 1
}

stop_daemon() {
	"$BIN/fluidmemctl" --socket "$CTL" shutdown >/dev/null
	local rc=0
	wait "$DAEMON_PID" || rc=$?
	DAEMON_PID=
	[ $rc -eq 0 ] || { echo "fluidmemd exited $rc" >&2; tail -20 "$RUN/fluidmemd.log" >&2; }
	return $rc
}

# stat KEY: a number from the daemon's totals
stat() {
	"$BIN/fluidmemctl" --socket "$CTL" --json stats | grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2
}

# json_get FILE KEY: a top-level number from fault-storm --json output
json_get() {
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

finish() {
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}
