#!/bin/sh
# Fault throughput of the local store's configurations, measured in one run
# so that the ratios against compression = "none" (the old uncompressed
# store) compare runs taken minutes apart on the same loaded machine.
# Each round runs every configuration once, in order, each on a fresh
# fluidmemd (configs/local.toml, private sockets); the ratio of a round is
# taken against that round's "none" run, and the median over rounds is
# reported. See bench/README.md, "The local store".
#
#   bench/store_storm.sh [BUILD_DIR] [ROUNDS]
# Environment: STORM_ARGS (fault-storm options), CONFIGS (space-separated
# name:compression:content[:disk]).
set -eu
build=${1:-build}
rounds=${2:-5}
src=$(cd "$(dirname "$0")/.." && pwd)
args=${STORM_ARGS:---pages 16384 --threads 2 --passes 4 --pattern random --verify}
configs=${CONFIGS:-"none-random:none:random lz4-random:lz4:random none-text:none:text lz4-text:lz4:text zstd-text:zstd:text lz4-text-disk:lz4:text:disk"}
tmp=$(mktemp -d /tmp/store-storm.XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

run_one() { # name comp content disk -> prints steady faults/s
	dir="$tmp/$1"
	rm -rf "$dir"
	mkdir -p "$dir/store"
	path='""'
	ram=4096
	if [ "${4:-}" = disk ]; then # a RAM tier far smaller than the evicted pages
		path="\"$dir/store\""
		ram=16
	fi
	"$build/bin/fluidmemd" --config "$src/configs/local.toml" \
		--set register.path="\"$dir/reg.sock\"" --set control.path="\"$dir/ctl.sock\"" \
		--set store.local.compression="\"$2\"" --set store.local.path="$path" \
		--set store.local.max_mib=$ram >"$dir/log" 2>&1 &
	pid=$!
	i=0
	while [ ! -S "$dir/ctl.sock" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
	# shellcheck disable=SC2086
	"$build/bin/fault-storm" --socket "$dir/reg.sock" --control "$dir/ctl.sock" \
		--content "$3" $args --json --quiet >"$dir/out.json" || {
		echo "fault-storm failed in $1" >&2
		cat "$dir/log" >&2
		exit 1
	}
	# CPU time of the shard threads (where the store runs), in clock ticks.
	ticks=0
	for t in /proc/"$pid"/task/*; do
		case $(cat "$t/comm") in
		fm-shard*) ticks=$((ticks + $(awk '{print $14 + $15}' "$t/stat"))) ;;
		esac
	done
	kill "$pid"
	wait "$pid" || true
	pid=
	python3 -c 'import json,sys,os
d=json.load(open(sys.argv[1])); assert d["verify_errors"]==0, "verify errors"
us=int(sys.argv[2])*1e6/os.sysconf("SC_CLK_TCK")/max(d["faults"],1)
print("%.1f %.1f" % (d["steady_faults_per_s"], us))' "$dir/out.json" "$ticks"
}

echo "# fault-storm $args; steady faults/s; the disk configuration has a 16 MiB RAM tier"
printf 'round'
for c in $configs; do printf ' %s' "${c%%:*}"; done
echo
# Odd rounds run the configurations in order, even rounds in reverse, so a
# drift in the machine's load does not favour one of them. Columns keep
# the header's order.
reversed=
for c in $configs; do reversed="$c $reversed"; done
r=1
while [ $r -le "$rounds" ]; do
	order=$configs
	[ $((r % 2)) -eq 0 ] && order=$reversed
	for c in $order; do
		IFS=: read -r name comp content disk <<EOF
$c
EOF
		v=$(run_one "$name" "$comp" "$content" "${disk:-}")
		echo "$name $v" >>"$tmp/round$r"
	done
	printf '%d' $r
	for c in $configs; do
		printf ' %s' "$(awk -v n="${c%%:*}" '$1 == n {print $2}' "$tmp/round$r")"
	done
	echo
	r=$((r + 1))
done
echo "# shard CPU (user+system) per fault, us; shards spin (shards.spin_us) while idle, which counts here"
printf 'round'
for c in $configs; do printf ' %s' "${c%%:*}"; done
echo
r=1
while [ $r -le "$rounds" ]; do
	printf '%d' $r
	for c in $configs; do
		printf ' %s' "$(awk -v n="${c%%:*}" '$1 == n {print $3}' "$tmp/round$r")"
	done
	echo
	r=$((r + 1))
done
