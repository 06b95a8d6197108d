#!/bin/sh
# store_space.sh BUILD_DIR [EVICTIONS]: the disk tier's file size against its
# live records through fluidmemd, under a verifying fault storm with
# compressible pages (fault-storm --content text), a 16 MiB RAM tier and
# SEGMENT_MIB segments (default 16), until the daemon has made EVICTIONS evictions (default
# 1,000,000). Samples the daemon's stats every second while the region
# lives (at its end every page is deleted) and prints the last sample and
# the worst file / live ratio seen. bench/README.md, "The local store".
set -eu
build=${1:-build}
want=${2:-1000000}
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/store-space.XXXXXX)
pid= spid=
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
mkdir -p "$tmp/store"
"$build/bin/fluidmemd" --config "$src/configs/local.toml" \
	--set register.path="\"$tmp/reg.sock\"" --set control.path="\"$tmp/ctl.sock\"" \
	--set store.local.path="\"$tmp/store\"" --set store.local.max_mib=16 \
	--set store.local.segment_mib="${SEGMENT_MIB:-16}" >"$tmp/log" 2>&1 &
pid=$!
i=0
while [ ! -S "$tmp/ctl.sock" ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
# 16384 pages over a 4096-page budget: about 12,000 evictions per pass.
passes=$((want / 12000 + 1))
"$build/bin/fault-storm" --socket "$tmp/reg.sock" --control "$tmp/ctl.sock" --pages 16384 \
	--threads 2 --passes "$passes" --content text --verify --json --quiet >"$tmp/out.json" &
spid=$!
while kill -0 "$spid" 2>/dev/null; do
	"$build/bin/fluidmemctl" -s "$tmp/ctl.sock" --json stats >"$tmp/s.json" 2>/dev/null &&
		python3 - "$tmp/s.json" <<'EOF' >>"$tmp/samples"
import json, sys
t = json.load(open(sys.argv[1]))["totals"]
if t["store_disk_live_bytes"] > 0:
    print(t["evictions"], t["store_pages"], t["store_encoded_bytes"], t["store_disk_live_bytes"],
          t["store_disk_file_bytes"])
EOF
	sleep 1
done
wait "$spid" || { echo "fault-storm failed" >&2; exit 1; }
spid=
python3 - "$tmp/samples" "$tmp/out.json" <<'EOF'
import json, sys
rows = [[int(x) for x in l.split()] for l in open(sys.argv[1]) if l.strip()]
d = json.load(open(sys.argv[2]))
assert d["verify_errors"] == 0, "verify errors"
e, pages, enc, live, f = rows[-1]
worst = max(r[4] / r[3] for r in rows if r[3] > 0)
M = 1 << 20
print(f"evictions {e}  pages {pages}  encoded {enc / M:.1f} MiB  live records {live / M:.1f} MiB"
      f"  file {f / M:.1f} MiB  file/live {f / live:.2f}  worst sampled {worst:.2f}"
      f"  ({len(rows)} samples, 0 verify errors)")
EOF
