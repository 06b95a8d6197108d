#!/usr/bin/env bash
# "auto" placement honours a cgroup v1 CPU quota (cpu.cfs_quota_us over
# cpu.cfs_period_us), as it does cgroup v2's cpu.max: fluidmemd --check run
# inside a v1 `cpu` cgroup allowed 1 CPU's worth of time on a 2+ CPU machine
# plans as on 1 CPU (dispatcher unpinned, 1 unpinned shard), and outside it
# as on all its CPUs. The cgroup is made under the v1 `cpu` mount found in
# /proc/self/mountinfo and removed on exit. Needs root, 2+ CPUs and a
# writable v1 `cpu` controller (a hybrid or v1 host); skips otherwise.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

# The mount point of the v1 hierarchy with the `cpu` controller (fields: ...
# MOUNT at 5, then after " - ": TYPE SOURCE SUPER-OPTIONS).
MNT=$(awk '{ for (i = 7; i <= NF && $i != "-"; i++); if ($(i + 1) == "cgroup" &&
	(("," $(i + 3) ",") ~ /,cpu,/)) { print $5; exit } }' /proc/self/mountinfo)
if [ "$(id -u)" != 0 ] || [ -z "$MNT" ] || [ "$(nproc)" -lt 2 ]; then
	echo "SKIP: needs root, 2+ CPUs and a cgroup v1 cpu controller (mount: '${MNT:-none}')"
	exit 0
fi
# This process's cgroup in that hierarchy: the /proc/self/cgroup line whose
# controller list holds `cpu`; the new cgroup goes below it.
SELF=$(awk -F: '("," $2 ",") ~ /,cpu,/ { print $3; exit }' /proc/self/cgroup)
CG="$MNT${SELF%/}/fm-place-$$"
if ! mkdir "$CG" 2>/dev/null || [ ! -w "$CG/cpu.cfs_quota_us" ]; then
	rmdir "$CG" 2>/dev/null || true
	echo "SKIP: cannot make a writable cgroup under the v1 cpu mount $MNT${SELF%/}"
	exit 0
fi
LONG_DIRS=()   # made by the long-path check below, removed deepest first
undo() {
	local i
	for ((i = ${#LONG_DIRS[@]} - 1; i >= 0; i--)); do rmdir "${LONG_DIRS[i]}" 2>/dev/null || true; done
	rmdir "$CG" 2>/dev/null || true
	cleanup
}
trap undo EXIT
period=$(cat "$CG/cpu.cfs_period_us")
echo "$period" >"$CG/cpu.cfs_quota_us"

# plan [CGROUP]: the layout line of fluidmemd --check with every placement
# key "auto", run inside the v1 cpu cgroup CGROUP when given (and first in
# the cgroups listed in $JOIN, if any).
plan() {
	local wrap=() rc=0

	[ $# -eq 0 ] || wrap=(sh -c 'for g in $JOIN "$0"; do echo $$ >"$g/cgroup.procs" || exit 1; done
		exec "$@"' "$1")
	"${wrap[@]}" "$BIN/fluidmemd" --config "$SRC/configs/local.toml" --check \
		--set "daemon.state_dir=\"$RUN/state\"" --set 'dispatcher.cpu="auto"' \
		--set 'shards.count="auto"' --set 'shards.cpus="auto"' \
		>"$RUN/check.out" 2>"$RUN/check.err" || rc=$?
	[ $rc -eq 0 ] || { cat "$RUN/check.err" >&2; echo "fluidmemd --check exited $rc" >&2; }
	grep '^# layout: ' "$RUN/check.out" || true
}

outside=$(plan)
echo "outside: $outside"
check "outside the cgroup: a pinned dispatcher (all $(nproc) CPUs)" \
	grep -qE 'dispatcher on CPU [0-9]+, [0-9]+ shards on CPUs' <<<"$outside"

inside=$(plan "$CG")
echo "inside (quota $period/$period us): $inside"
check "inside: planned as on 1 CPU, dispatcher unpinned and 1 unpinned shard" \
	grep -qF 'dispatcher unpinned, 1 shard unpinned' <<<"$inside"
check "inside: the layout names the v1 quota" \
	grep -qF '(cgroup cpu.cfs_quota_us: 1 CPU)' <<<"$inside"

# Half a CPU's worth is still 1 CPU (rounded up), and with no quota (-1) the
# cgroup plans as outside.
echo $((period / 2)) >"$CG/cpu.cfs_quota_us"
check "a half-CPU quota also plans 1 unpinned shard" \
	grep -qF 'dispatcher unpinned, 1 shard unpinned' <<<"$(plan "$CG")"
echo -1 >"$CG/cpu.cfs_quota_us"
check "quota -1 (none): the same plan as outside" test "$(plan "$CG")" = "$outside"

# Regression: /proc/self/cgroup was read into 4 KiB, so a `cpu` line listed
# after long paths of other hierarchies was cut off and read as "no quota".
# Here the memory cgroup's path is ~3.6 KiB (the memory line comes before
# the cpu line), and the cpu cgroup, 4 levels of 200-character names below
# $CG (no quota), has a quota of 1 CPU: the plan must still see it.
MEMMNT=$(awk '{ for (i = 7; i <= NF && $i != "-"; i++); if ($(i + 1) == "cgroup" &&
	(("," $(i + 3) ",") ~ /,memory,/)) { print $5; exit } }' /proc/self/mountinfo)
MEMSELF=$(awk -F: '("," $2 ",") ~ /,memory,/ { print $3; exit }' /proc/self/cgroup)
name=$(printf 'd%.0s' $(seq 200))
if [ -n "$MEMMNT" ] && mkdir "$MEMMNT${MEMSELF%/}/fm-place-$$" 2>/dev/null; then
	mem="$MEMMNT${MEMSELF%/}/fm-place-$$"
	LONG_DIRS+=("$mem")
	for _ in $(seq 17); do mem="$mem/$name" && mkdir "$mem" && LONG_DIRS+=("$mem"); done
	cpu="$CG"
	for _ in $(seq 4); do cpu="$cpu/$name" && mkdir "$cpu" && LONG_DIRS+=("$cpu"); done
	echo "$period" >"$cpu/cpu.cfs_quota_us"
	long=$(JOIN="$mem" plan "$cpu")
	bytes=$(JOIN="$mem $cpu" sh -c 'for g in $JOIN; do echo $$ >"$g/cgroup.procs"; done
		wc -c </proc/self/cgroup' | tr -d ' ')
	echo "long paths: /proc/self/cgroup is $bytes bytes; $long"
	check "long cgroup paths: /proc/self/cgroup is over 4 KiB ($bytes bytes)" test "$bytes" -gt 4096
	check "long cgroup paths: the quota is still read (1 unpinned shard)" \
		grep -qF 'dispatcher unpinned, 1 shard unpinned' <<<"$long"
else
	echo "SKIP (long paths): no writable v1 memory hierarchy"
fi
finish
