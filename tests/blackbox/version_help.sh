#!/usr/bin/env bash
# Every installed program answers --version with "NAME VERSION" (the version
# of project() in CMakeLists.txt) and exit 0, and its --help mentions --version.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

want=$(sed -n 's/^project(fluidmem VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
check "project() has a version" test -n "$want"
for prog in fluidmemd fluidmemctl fluidmem-run fault-storm; do
	rc=0; out=$("$BIN/$prog" --version 2>&1) || rc=$?
	check "$prog --version exits 0" test $rc -eq 0
	check "$prog --version prints \"$prog $want\"" test "$out" = "$prog $want"
	rc=0; "$BIN/$prog" --help >"$RUN/help" 2>&1 || rc=$?
	check "$prog --help exits 0" test $rc -eq 0
	check "$prog --help lists --version" grep -q -- '--version' "$RUN/help"
done
finish
