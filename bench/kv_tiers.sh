#!/bin/sh
# kv_tiers.sh BUILD_DIR [PAGES] [ROUNDS] [CONTENT...]: kv-bench over every
# tier of the local store and every content, ROUNDS times interleaved (the
# machine is shared: the medians of one run compare, numbers from different
# runs do not). Prints one line per run and then the medians: put and get
# p50 (us), compression ratio, RAM fragmentation, write syscalls per put.
# bench/README.md, "The local store".
#
# Tiers: ram-none (the old uncompressed store), ram-lz4, ram-zstd,
# disk-lz4 (a 16 MiB RAM tier over the file: most gets read the file),
# disk-lz4-b32 (the same, loaded with kv_mput batches of 32, as evictions).
# CONTENT: kv-bench --content values (default: text mixed random zero).
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
pages=${1:-20000}
[ $# -gt 0 ] && shift
rounds=${1:-3}
[ $# -gt 0 ] && shift
contents=${*:-text mixed random zero}
tiers="ram-none ram-lz4 ram-zstd disk-lz4 disk-lz4-b32"
tmp=$(mktemp -d /tmp/kv-tiers.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

for r in $(seq "$rounds"); do
	for c in $contents; do
		for t in $tiers; do
			set -- --pages "$pages" --content "$c"
			case $t in
			ram-*) set -- "$@" --compression "${t#ram-}" ;;
			disk-lz4) set -- "$@" --compression lz4 --path "$tmp/s" --ram-mib 16 ;;
			disk-lz4-b32) set -- "$@" --compression lz4 --path "$tmp/s" --ram-mib 16 --batch 32 ;;
			esac
			rm -rf "$tmp/s"
			mkdir -p "$tmp/s"
			"$build/bin/kv-bench" "$@" >"$tmp/out"
			python3 - "$tmp/out" "$r" "$c" "$t" <<'EOF'
import re, sys
o = open(sys.argv[1]).read()
put = re.search(r"^put .*p50=([\d.]+)us", o, re.M).group(1)
get = re.search(r"^get .*p50=([\d.]+)us", o, re.M).group(1)
ratio = re.search(r"ratio=([\d.]+)", o).group(1)
frag = re.search(r"ram_frag=([\d.]+)%", o).group(1)
sc = re.search(r"write_syscalls_per_put=([\d.]+)", o).group(1)
print(sys.argv[2], sys.argv[3], sys.argv[4], put, get, ratio, frag, sc)
EOF
		done
	done
done | tee "$tmp/all"
echo "# medians over $rounds rounds: content tier put_p50_us get_p50_us ratio ram_frag_% write_syscalls_per_put"
python3 - "$tmp/all" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, c, t, *v = line.split()
    rows.setdefault((c, t), []).append([float(x) for x in v])
for (c, t), vs in rows.items():
    med = [statistics.median(col) for col in zip(*vs)]
    print(f"{c:<24} {t:<13} {med[0]:7.2f} {med[1]:7.2f} {med[2]:6.2f} {med[3]:6.1f} {med[4]:6.3f}")
EOF
