#!/usr/bin/env bash
# The metrics an operator scrapes: naming rules on a live /metrics (units in
# the names, _total on counters and nothing else), promtool's lint when
# Debian's prometheus package is installed, /healthz, per-region labels, and
# `stats --reset` leaving the scraped counters alone.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
get() { python3 - "$PORT" "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]), timeout=20)
    print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())
PY
}

start_daemon --set memory.resident_pages=256 --set "control.metrics_listen=\"127.0.0.1:$PORT\""
# A client that holds a named region (the name needs label escaping) and
# touches 4x the budget, until its stdin closes.
mkfifo "$RUN/hold"
cat >"$RUN/client.py" <<'PY'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.fm_connect.restype = ctypes.c_void_p
lib.fm_region_create.restype = ctypes.c_void_p
lib.fm_region_create.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
lib.fm_region_addr.restype = ctypes.c_void_p
lib.fm_region_addr.argtypes = [ctypes.c_void_p]
c = lib.fm_connect(sys.argv[2].encode())
r = lib.fm_region_create(ctypes.c_void_p(c), 1024 * 4096, b'vm "one"')
a = lib.fm_region_addr(ctypes.c_void_p(r))
for i in range(1024):
    ctypes.memset(a + i * 4096, 1, 1)
print("touched", flush=True)
sys.stdin.read()
PY
# An ASan build's library needs its runtime loaded first into python.
asan=$(ldd "$BUILD/lib/libfluidmem.so" | awk '/libasan/ { print $3 }')
LD_PRELOAD=${asan:-} ASAN_OPTIONS=detect_leaks=0 \
	python3 "$RUN/client.py" "$BUILD/lib/libfluidmem.so" "$REG" <"$RUN/hold" >"$RUN/client.out" 2>&1 &
client=$!
exec 7>"$RUN/hold"
for _ in $(seq 200); do
	grep -q touched "$RUN/client.out" && break
	sleep 0.05
done
get /metrics >"$RUN/scrape"
check "scrape is 200" test "$(head -1 "$RUN/scrape")" = 200
tail -n +2 "$RUN/scrape" >"$RUN/metrics.txt"

check "naming rules hold" python3 - "$RUN/metrics.txt" <<'PY'
import re, sys
units = ("_pages", "_bytes", "_seconds", "_messages", "_regions", "_fds", "_info", "_up", "_servers")
types, bad = {}, []
for line in open(sys.argv[1]):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        types[m.group(1)] = m.group(2)
for name, t in types.items():
    if t == "counter" and not name.endswith("_total"):
        bad.append(name + ": a counter without _total")
    if t != "counter" and name.endswith("_total"):
        bad.append(name + ": _total on a " + t)
    if t == "histogram" and not name.endswith("_seconds"):
        bad.append(name + ": a histogram without its unit")
    if t == "gauge" and not name.endswith(units):
        bad.append(name + ": a gauge without a unit")
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name):
        bad.append(name + ": not a valid name")
ring = [n for n in types if "ring_full" in n]
if len(ring) != 1:
    bad.append("ring-full exported %d times: %s" % (len(ring), ring))
for need in ("fluidmem_build_info", "process_resident_memory_bytes", "process_open_fds",
             "fluidmem_dispatch_parked_max_messages", "fluidmem_region_faults_total",
             "fluidmem_region_resident_pages", "fluidmem_region_stored_pages",
             "fluidmem_fault_batches_total", "fluidmem_batched_get_faults_total"):
    if need not in types:
        bad.append(need + " missing")
if types.get("fluidmem_dispatch_parked_max_messages") != "gauge":
    bad.append("dispatch_parked_max is not a gauge")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
if command -v promtool >/dev/null; then
	check "promtool check metrics finds nothing" bash -c "promtool check metrics <'$RUN/metrics.txt'"
else
	echo "skip: promtool (Debian package prometheus) not installed"
fi
check "build_info carries the version" grep -q "^fluidmem_build_info{version=\"$("$BIN/fluidmemd" --version | cut -d' ' -f2)\"} 1$" "$RUN/metrics.txt"
check "region labels: id and the escaped name" grep -Eq '^fluidmem_region_faults_total\{region_id="[0-9]+",region="vm \\"one\\""\} [1-9]' "$RUN/metrics.txt"
health=$(get /healthz | tr '\n' ' ')
check "healthz answers 200 ok" test "$health" = "200 ok "
check "an unknown path is 404" test "$(get /nope | head -1)" = 404

faults() { get /metrics | awk '/^fluidmem_faults_total/ { s += $2 } END { print s + 0 }'; }
before=$(faults)
check "stats --reset answers" "$BIN/fluidmemctl" --socket "$CTL" stats --reset
after=$(faults)
check "stats --reset leaves the scraped counters ($before -> $after)" test "$after" -ge "$before" -a "$before" -gt 0
check "stats shows zero faults after the reset" test "$(stat faults)" -eq 0
check "stats carries version and pid" bash -c \
	"'$BIN/fluidmemctl' --socket '$CTL' --json stats | python3 -c 'import json,sys; j=json.load(sys.stdin); assert j[\"pid\"] == $DAEMON_PID and j[\"version\"]'"
exec 7>&-
wait "$client" || true
check "daemon stops cleanly" stop_daemon
finish
