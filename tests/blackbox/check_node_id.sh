#!/usr/bin/env bash
# `fluidmemd --check` refuses an explicit daemon.node_id other than the node
# whose regions wait for re-adoption in daemon.state_dir, as a start does
# (the start exits 1 from daemon_create; --check exits 2 like its other
# refusals), with the same words; and it changes nothing in the directory.
# The node is the `node` file's, or, without it, the top 16 bits of a region
# id (tests/unit/test_readopt.c other_node_id_refused starts the daemon).
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

SD="$RUN/state"
mkdir -m 0700 "$SD"
# A region of node 3 left by a killed daemon: ctl/state.c reads only the
# names of region files before it refuses.
printf '3\n' >"$SD/node"
: >"$SD/region-0003000100000001.state"
snapshot() { (cd "$SD" && find . -print0 | sort -z | xargs -0 sha256sum 2>/dev/null; ls -la); }
before=$(snapshot)

# fmcheck ID: --check with daemon.node_id = ID over $SD; rc in $rc.
fmcheck() {
	rc=0
	"$BIN/fluidmemd" --config "$SRC/configs/local.toml" --check \
		--set "daemon.state_dir=\"$SD\"" --set "daemon.node_id=$1" \
		>"$RUN/check.stdout" 2>"$RUN/check.stderr" || rc=$?
}

fmcheck 4
check "--check with node_id 4 over node 3's waiting region: exit 2 (got $rc)" test $rc -eq 2
check "--check names the configured id and the count" \
	grep -qF "daemon.node_id = 4, but the 1 region(s) awaiting re-adoption in $SD were written by node 3" \
	"$RUN/check.stderr"
check "--check gives the fix" grep -qF "Start with daemon.node_id = 3" "$RUN/check.stderr"
check "--check does not call it valid" test ! -s "$RUN/check.stdout"
check "--check left the state directory as it was" test "$(snapshot)" = "$before"

# The start refuses with the same words (the part after the log prefix).
rc=0
"$BIN/fluidmemd" --config "$SRC/configs/local.toml" \
	--set "register.path=\"$REG\"" --set "control.path=\"$CTL\"" \
	--set "daemon.state_dir=\"$SD\"" --set 'daemon.node_id=4' 2>"$RUN/start.log" || rc=$?
check "a start with node_id 4: exit 1 (got $rc)" test $rc -eq 1
want=$(grep -o "daemon.node_id = 4, but.*" "$RUN/check.stderr" || echo "no refusal from --check")
check "the start's refusal is --check's" grep -qF "$want" "$RUN/start.log"

fmcheck 3
check "--check with the recorded node_id 3: exit 0 (got $rc)" test $rc -eq 0
check "--check with node_id 3: valid" grep -qF ": valid" "$RUN/check.stdout"

# No node file (a directory older than it): the region id names node 3.
rm "$SD/node"
fmcheck 4
check "no node file: node 3 from the region id, node_id 4 refused (exit $rc)" test $rc -eq 2
check "no node file: names node 3" grep -qF "were written by node 3" "$RUN/check.stderr"
# A torn node file is ignored by the start, and by --check.
printf '3' >"$SD/node"
fmcheck 4
check "torn node file: node 3 from the region id, node_id 4 refused (exit $rc)" test $rc -eq 2

# No region waits: any id may start, and --check says so.
rm "$SD"/region-*.state
printf '3\n' >"$SD/node"
fmcheck 4
check "no waiting region: node_id 4 is valid (exit $rc)" test $rc -eq 0
# No state directory at all.
rm -r "$SD"
fmcheck 4
check "no state directory: valid (exit $rc)" test $rc -eq 0
check "--check created no state directory" test ! -e "$SD"
finish
