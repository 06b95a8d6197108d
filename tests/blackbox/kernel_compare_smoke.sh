#!/usr/bin/env bash
# bench/kernel-compare in its tiny mode: the JSON has all four configurations
# (fluidmem, raw, swap, zram), each measured with no verify errors or marked
# unavailable with a reason, and no swap or zram is left on afterwards, even
# when the run fails (the trap undoes what its state file records).
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

WORK="$RUN/work"
count_cgroups() { (ls -d /sys/fs/cgroup/memory/fm-kcompare-* 2>/dev/null || true) | wc -l; }
mkdir -p "$WORK"
undo() {
	python3 "$SRC/bench/kernel-compare" --cleanup "$WORK" >/dev/null 2>&1 || true
	cleanup
}
trap undo EXIT

# Compared before and after, not to zero: another kernel-compare may be running.
swaps_before=$(tail -n +2 /proc/swaps | wc -l)
zram_before=$(cat /sys/block/zram0/disksize 2>/dev/null || echo none)
cgroups_before=$(count_cgroups)
rc=0
nice python3 "$SRC/bench/kernel-compare" --build "$BUILD" --tiny --work "$WORK" \
	--daemon-set 'dispatcher.cpu=-1' --daemon-set 'shards.cpus=[]' \
	--out "$RUN/kc.json" >"$RUN/kc.out" 2>&1 || rc=$?
cat "$RUN/kc.out"
check "kernel-compare --tiny exits 0" test $rc -eq 0
check "every configuration measured or unavailable with a reason" python3 - "$RUN/kc.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for c in ("fluidmem", "raw", "swap", "zram"):
    runs = [r for r in d["runs"] if r["config"] == c]
    if c in d["unavailable"]:
        assert d["unavailable"][c], f"{c}: unavailable without a reason"
        print(f"{c}: unavailable: {d['unavailable'][c]}")
        continue
    assert runs, f"{c}: neither measured nor marked unavailable"
    for r in runs:
        assert r["result"] is not None, f"{c}: no JSON from the program: {r.get('stderr')}"
        assert r["result"]["verify_errors"] == 0, f"{c}: verify errors"
        assert r["access_per_s"] > 0, f"{c}: no throughput"
        assert "oom_killed" in r or c in ("fluidmem", "raw"), f"{c}: OOM not recorded"
    print(f"{c}: {len(runs)} run(s), {runs[0]['access_per_s']:.0f} accesses/s")
for row in d["table"]:
    for k in ("fluidmem/raw", "fluidmem/swap", "fluidmem/zram"):
        assert k in row
PY
check "no swap left on ($swaps_before before)" test "$(tail -n +2 /proc/swaps | wc -l)" -eq "$swaps_before"
check "zram0 as it was ($zram_before)" test "$(cat /sys/block/zram0/disksize 2>/dev/null || echo none)" = "$zram_before"
check "no cgroup left" test "$(count_cgroups)" -eq "$cgroups_before"
finish
