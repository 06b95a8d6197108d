# The verdict helpers every shell test shares (tests/blackbox/lib.bash,
# tests/debs/debs.sh): ok, not_ok, check, and finish for the summary and the
# exit status. Set CHECK_DIR to a scratch directory before the first check.
PASSED=0
FAILED=0

ok() { PASSED=$((PASSED + 1)); echo "ok: $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "NOT OK: $*"; }
check() { # check "description" command...
	local what="$1"; shift
	if "$@" >"$CHECK_DIR/check.out" 2>&1; then ok "$what"; else not_ok "$what"; cat "$CHECK_DIR/check.out"; fi
}

finish() {
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}
