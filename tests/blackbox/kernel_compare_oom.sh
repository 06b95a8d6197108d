#!/usr/bin/env bash
# bench/kernel-compare records every OOM kill of a kernel run, per run and per
# cell (with the repetitions), and prints them; its JSON names the tree's git
# commit. The `noswap` configuration is the same memory cgroup limit as swap
# and zram with no swap at all, so the kernel must OOM-kill the program
# (2048 pages against a limit of its footprint + 512 pages): a few seconds,
# no swapfile. Needs root and a cgroup-v1 memory controller (with swap on,
# as when kernel_compare_smoke runs beside it, swappiness 0 keeps it off).
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

if [ "$(id -u)" != 0 ] || [ ! -e /sys/fs/cgroup/memory/memory.swappiness ]; then
	echo "SKIP: needs root and the cgroup-v1 memory controller"
	exit 0
fi
WORK="$RUN/work"
mkdir -p "$WORK"
# Compared before and after, not to zero: another kernel-compare may be running.
count_cgroups() { (ls -d /sys/fs/cgroup/memory/fm-kcompare-* 2>/dev/null || true) | wc -l; }
cgroups_before=$(count_cgroups)
undo() {
	python3 "$SRC/bench/kernel-compare" --cleanup "$WORK" >/dev/null 2>&1 || true
	cleanup
}
trap undo EXIT

rc=0
nice python3 "$SRC/bench/kernel-compare" --build "$BUILD" --configs raw,noswap \
	--pages 2048 --budget 512 --passes 2 --reps 2 --patterns random --threads 1 \
	--work "$WORK" --out "$RUN/kc.json" >"$RUN/kc.out" 2>&1 || rc=$?
cat "$RUN/kc.out"
check "kernel-compare exits 0 (got $rc)" test $rc -eq 0
check "both noswap runs OOM-killed, per run and in the cell" python3 - "$RUN/kc.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = [r for r in d["runs"] if r["config"] == "noswap"]
assert len(runs) == 2, runs
for r in runs:
    assert r["oom_killed"] is True, r
    assert (r["oom_kills"] or 0) >= 1 or r["exit"] == -9, r
    assert r["result"] is None, "an OOM-killed run has no result"
(row,) = d["table"]
cell = row["noswap"]
assert cell["oom_killed"] == 2 and cell["oom_killed_reps"] == [0, 1], cell
assert cell["runs"] == 2 and cell["results"] == 0 and cell["access_per_s"] is None, cell
raw = row["raw"]
assert raw["oom_killed"] == 0 and raw["oom_killed_reps"] == [] and raw["results"] == 2, raw
assert raw["access_per_s"] > 0 and raw["verify_errors"] == 0, raw
PY
# (Outside a git tree, such as an unpacked tarball, the commit is null.)
head=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo none)
check "the JSON names the tree's commit ($head)" python3 - "$RUN/kc.json" "$head" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))["git"]
if sys.argv[2] == "none":
    assert g["commit"] is None and g["dirty"] is None, g
else:
    assert g["commit"] == sys.argv[2] and isinstance(g["dirty"], bool), g
PY
check "the summary counts the kills" grep -qF "OOM kills in kernel runs: 2 of 2 run(s)" "$RUN/kc.out"
check "the summary names the cell and its repetitions" \
	grep -qF "noswap random t1: 2 of 2 (rep #0, #1); medians of 0 run(s)" "$RUN/kc.out"
check "no cgroup left" test "$(count_cgroups)" -eq "$cgroups_before"
finish
