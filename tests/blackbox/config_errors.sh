#!/usr/bin/env bash
# Malformed configs and bad command lines: exit 2 and a message naming
# file:line:key; --check validates; --help everywhere.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

expect_config_error() { # file-content expected-substring
	printf '%b' "$1" >"$RUN/bad.toml"
	local out rc=0
	out=$("$BIN/fluidmemd" --config "$RUN/bad.toml" --check 2>&1) || rc=$?
	if [ $rc -eq 2 ] && grep -qF -- "$2" <<<"$out"; then
		ok "config rejected: $2"
	else
		not_ok "config '$1': exit $rc, output: $out (wanted exit 2 and '$2')"
	fi
}

expect_config_error '[shards]\ncount = 0\n' "bad.toml:2: shards.count"
expect_config_error '[shards]\n\ncount = "two"\n' "bad.toml:3: shards.count"
expect_config_error '[memory]\nresident_pages = 10\nbogus = 1\n' "bad.toml:3: memory.bogus"
expect_config_error '[nosuchtable]\nx = 1\n' "bad.toml:1: nosuchtable"
expect_config_error '[shards]\ncount = 2\ncpus = [0]\n' "shards.cpus"
expect_config_error '[shards]\nring_slots = 100\n' "shards.ring_slots"
expect_config_error '[memory]\nfault_batch = 257\n' "bad.toml:2: memory.fault_batch: 257 is above the maximum 256"
expect_config_error '[memory]\n\nfault_batch = -3\n' "bad.toml:3: memory.fault_batch"
expect_config_error '[store]\nbackend = "floppy"\n' "bad.toml:2: store.backend"
expect_config_error '[daemon]\nlog_level = "loud"\n' "bad.toml:2: daemon.log_level"
expect_config_error '[register]\npath = "unterminated\n' "bad.toml:2"
expect_config_error '[memory]\nresident_pages = 99999999999999999999999\n' "bad.toml:2: memory.resident_pages"
# Errors that span keys: --check catches what used to fail only at start.
expect_config_error '[store]\nbackend = "memcached"\n[store.memcached]\nservers = "127.0.0.1:11211"\nreplicas = 1\n' \
	"bad.toml:5: store.memcached.replicas: 1 extra copies need at least 2 servers"
expect_config_error '[store]\nbackend = "memcached"\n[store.memcached]\nservers = "127.0.0.1:1, ,"\nreplicas = 1\n' \
	"store.memcached.servers names 1"
expect_config_error '[store]\nbackend = "local"\n[store.local]\npath = "/tmp/x"\ndisk_mib = 40\nsegment_mib = 16\n' \
	"store.local.disk_mib: 40 MiB over 2 shards holds fewer than 2 segments"
expect_config_error '[register]\npath = "/tmp/a.sock"\n[control]\npath = "/tmp/a.sock"\n' \
	"bad.toml:4: control.path"
# ... and they stay quiet where the keys do not apply
printf '[store]\nbackend = "local"\n[store.memcached]\nservers = "127.0.0.1:11211"\nreplicas = 1\n' >"$RUN/ok.toml"
check "--check ignores memcached replicas under the local backend" "$BIN/fluidmemd" --config "$RUN/ok.toml" --check
printf '[store]\nbackend = "memcached"\n[store.memcached]\nservers = "127.0.0.1:1,127.0.0.1:2"\nreplicas = 1\n' >"$RUN/ok.toml"
check "--check accepts replicas = 1 over two servers" "$BIN/fluidmemd" --config "$RUN/ok.toml" --check

rc=0; out=$("$BIN/fluidmemd" --config "$RUN/missing.toml" 2>&1) || rc=$?
check "missing config file: exit 2 naming it" test $rc -eq 2 -a -n "$(grep -F missing.toml <<<"$out")"
rc=0; "$BIN/fluidmemd" 2>/dev/null || rc=$?
check "no --config: exit 2" test $rc -eq 2
rc=0; "$BIN/fluidmemd" --config "$SRC/configs/local.toml" --set 'shards.count=abc' 2>/dev/null || rc=$?
check "bad --set: exit 2" test $rc -eq 2
rc=0; "$BIN/fluidmemd" --config "$SRC/configs/local.toml" --bogus 2>/dev/null || rc=$?
check "unknown option: exit 2" test $rc -eq 2
check "--check accepts configs/local.toml" "$BIN/fluidmemd" --config "$SRC/configs/local.toml" --check
for f in "$SRC"/configs/*.toml; do
	check "--check accepts $(basename "$f")" "$BIN/fluidmemd" --config "$f" --check
done
for prog in fluidmemd fluidmemctl fault-storm; do
	check "$prog --help" bash -c "'$BIN/$prog' --help | grep -qi usage"
done

# fluidmemctl without a daemon: exit 3 and say how to start one
rc=0; out=$("$BIN/fluidmemctl" --socket "$RUN/none.sock" stats 2>&1) || rc=$?
check "fluidmemctl with no daemon: exit 3" test $rc -eq 3 -a -n "$(grep -F 'fluidmemd --config' <<<"$out")"

# A second daemon on the same sockets is refused, the first keeps serving.
start_daemon
rc=0; "$BIN/fluidmemd" --config "$SRC/configs/local.toml" --set "register.path=\"$REG\"" \
	--set "control.path=\"$RUN/ctl2.sock\"" 2>"$RUN/second.log" || rc=$?
check "second daemon on the same socket refused" test $rc -eq 1 -a -n "$(grep -F 'another fluidmemd' "$RUN/second.log")"
check "first daemon still answers" "$BIN/fluidmemctl" --socket "$CTL" ping
# Bad control commands get an error, and the daemon keeps going.
rc=0; "$BIN/fluidmemctl" --socket "$CTL" frobnicate 2>/dev/null || rc=$?
check "unknown control command: exit 2 (fluidmemctl knows its commands)" test $rc -eq 2
rc=0; "$BIN/fluidmemctl" --socket "$CTL" resize lots 2>/dev/null || rc=$?
check "resize with a non-number: exit 1" test $rc -eq 1
rc=0; "$BIN/fluidmemctl" --socket "$CTL" resize 0 2>/dev/null || rc=$?
check "resize to zero pages: exit 1" test $rc -eq 1
oversized() {
	python3 - "$CTL" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
try:
    s.sendall(b'x' * 10000)
except OSError:
    pass  # the daemon may cut us off before we finish sending
d = s.recv(4096)
sys.exit(0 if b'longer than' in d else 1)
PY
}
check "oversized request cut off cleanly" oversized
disconnect_mid_reply() {
	python3 - "$CTL" <<'PY'
import socket
import sys
for _ in range(50):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b'v1 stats\nv1 stats\nv1 regions\n')
    s.close()  # gone before the replies
PY
}
check "peers that vanish mid-reply are harmless" disconnect_mid_reply
check "daemon alive after bad commands" "$BIN/fluidmemctl" --socket "$CTL" ping
check "clean stop" stop_daemon
finish
