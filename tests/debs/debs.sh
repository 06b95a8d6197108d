#!/usr/bin/env bash
# The Debian packages, end to end, as an operator gets them:
#   build the .debs with dpkg-buildpackage in a copy of the tree (not the
#   source dir), dpkg -i them, start fluidmemd with the command line of the
#   INSTALLED unit (ExecStart, sockets moved to a temp dir with --set),
#   build a client from the installed <fluidmem.h> and fluidmem.pc, run it
#   and a verified storm from the installed fault-storm, check fluidmem-run
#   finds the installed shim, stop the daemon, purge the packages and check
#   nothing is left behind.
# Needs root, dpkg-buildpackage and debhelper (scripts/test installs
# FM_DEB_PACKAGES first). About 2 min, most of it the package build; run by
# `scripts/test` in full mode only (not --quick), or alone:
#   tests/debs/debs.sh [SRC]
# systemd is not PID 1 on the test machines: the unit is parsed, not started
# (tests/blackbox/install.sh checks it with systemd-analyze verify).
set -euo pipefail
SRC=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
PKGS=(fluidmemd libfluidmem0 libfluidmem-dev fluidmem-qemu)
WORK=$(mktemp -d /tmp/fmdebs.XXXXXX)
REG="$WORK/run/register.sock"
CTL="$WORK/run/control.sock"
DAEMON_PID=
INSTALLED=0
CHECK_DIR="$WORK"
# shellcheck source=../checks.bash
source "$SRC/tests/checks.bash"
purge() { dpkg --purge "${PKGS[@]}" >"$WORK/purge.log" 2>&1; }
cleanup() {
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
	fi
	[ $INSTALLED -eq 0 ] || purge || true
	rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "debs.sh: needs root (dpkg -i)"; exit 1; }
for t in dpkg-buildpackage dh; do
	command -v $t >/dev/null || { echo "debs.sh: $t missing (scripts/lib.sh FM_DEB_PACKAGES)"; exit 1; }
done
for p in "${PKGS[@]}"; do
	if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
		echo "debs.sh: $p is installed on this machine already; not touching it"
		exit 1
	fi
done

# Build in a copy: tracked and new (not ignored) files, no build dirs.
mkdir -p "$WORK/src" "$WORK/run"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$SRC" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -)
else
	tar -C "$SRC" --exclude='./build*' --exclude='./obj-*' --exclude='./debian/.debhelper' -cf - .
fi | tar -xf - -C "$WORK/src"
start=$(date +%s)
rc=0; (cd "$WORK/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
	nice -n 5 dpkg-buildpackage -us -uc -b >"$WORK/build.log" 2>&1) || rc=$?
check "dpkg-buildpackage -us -uc -b ($(( $(date +%s) - start )) s)" test $rc -eq 0
[ $rc -eq 0 ] || { tail -40 "$WORK/build.log"; exit 1; }
check "dh_missing: every installed file is in a package" \
	sh -c "! grep -q 'dh_missing: warning' '$WORK/build.log'"
debs=()
for p in "${PKGS[@]}"; do debs+=("$WORK/${p}_"*"_$(dpkg --print-architecture).deb"); done
check "the four packages were built" ls "${debs[@]}"

INSTALLED=1
rc=0; dpkg -i "${debs[@]}" >"$WORK/install.log" 2>&1 || rc=$?
check "dpkg -i ${PKGS[*]}" test $rc -eq 0
[ $rc -eq 0 ] || { cat "$WORK/install.log"; exit 1; }
dpkg -L "${PKGS[@]}" | sort -u >"$WORK/files"
check "/etc/fluidmem/fluidmemd.toml is a conffile" \
	sh -c "dpkg-query -W -f='\${Conffiles}' fluidmemd | grep -q /etc/fluidmem/fluidmemd.toml"
for v in fluidmemd fluidmemctl fluidmem-run fault-storm; do
	check "$v --version" test "$($v --version)" = "$v $(dpkg-query -W -f='${Version}' fluidmemd)"
done
check "man fluidmemd.toml works" sh -c "man -w fluidmemd.toml | grep -q man5"

# The installed unit's command line, with private sockets.
UNIT=$(grep '/fluidmemd.service$' "$WORK/files")
read -r -a cmd <<<"$(sed -n 's/^ExecStart=//p' "$UNIT")"
check "unit ExecStart runs the installed daemon on /etc/fluidmem ($UNIT: ${cmd[*]})" \
	test "${cmd[0]}" = /usr/bin/fluidmemd -a "${cmd[2]}" = /etc/fluidmem/fluidmemd.toml
"${cmd[@]}" --set "register.path=\"$REG\"" --set "control.path=\"$CTL\"" \
	--set memory.resident_pages=512 2>"$WORK/fluidmemd.log" &
DAEMON_PID=$!
for _ in $(seq 200); do
	fluidmemctl --socket "$CTL" ping >/dev/null 2>&1 && break
	kill -0 "$DAEMON_PID" 2>/dev/null || break
	sleep 0.05
done
check "installed fluidmemd answers ping" fluidmemctl --socket "$CTL" ping
[ "$FAILED" -eq 0 ] || { cat "$WORK/fluidmemd.log"; exit 1; }

rc=0; cc -o "$WORK/hello" "$SRC/tests/install/hello_fluidmem.c" \
	$(pkg-config --cflags --libs fluidmem) >"$WORK/cc.log" 2>&1 || rc=$?
check "a client builds with pkg-config --cflags --libs fluidmem" test $rc -eq 0
check "it links the packaged libfluidmem.so.0" \
	sh -c "ldd '$WORK/hello' | grep -Eq '=> (/usr)?/lib/[^ ]*/libfluidmem.so.0 '"
check "the client runs against the installed daemon (4x budget, verified)" "$WORK/hello" "$REG"
rc=0; fault-storm --socket "$REG" --control "$CTL" --pages 4096 --threads 2 --passes 2 \
	--write-ratio 0.5 --verify --json --quiet >"$WORK/storm.json" || rc=$?
check "installed fault-storm --verify: exit 0" test $rc -eq 0
check "no verify errors" test "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verify_errors"])' "$WORK/storm.json")" = 0
check "pages were evicted" sh -c "fluidmemctl --socket '$CTL' --json stats | grep -Eq '\"evictions\":[1-9][0-9]{3,}'"
shim=$(fluidmem-run --socket "$REG" -- sh -c 'echo "$LD_PRELOAD"')
check "fluidmem-run finds the packaged shim ($shim)" \
	test "$shim" = "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/fluidmem/libfluidmem-preload.so"
check "clean stop" fluidmemctl --socket "$CTL" shutdown
rc=0; wait "$DAEMON_PID" || rc=$?
DAEMON_PID=
check "fluidmemd exited 0" test $rc -eq 0

# Purge: no package file, no /etc/fluidmem, no enablement symlink left.
INSTALLED=0
rc=0; purge || rc=$?
check "dpkg --purge ${PKGS[*]}" test $rc -eq 0
left=$(while read -r f; do
	case "$f" in /.|/etc|/lib|/usr|/usr/*/|/lib/systemd*|/usr/share*|/usr/lib|/usr/bin|/usr/include|/usr/lib/*-linux-gnu|/usr/lib/*-linux-gnu/pkgconfig) continue ;; esac
	[ -e "$f" ] || [ -L "$f" ] && echo "$f"
done <"$WORK/files" | xargs)
check "no packaged file is left${left:+: $left}" test -z "$left"
check "/etc/fluidmem is gone" test ! -e /etc/fluidmem
check "no unit enablement left" sh -c "! ls /etc/systemd/system/*/fluidmemd.service 2>/dev/null | grep -q ."
finish
