#!/usr/bin/env bash
# `cmake --install` into a DESTDIR: the file list is what an operator
# expects, a program builds against the installed <fluidmem.h> and
# fluidmem.pc alone, and the installed fluidmemd (with the installed config,
# sockets moved by --set) serves it and a verified storm from the installed
# fault-storm; the installed fluidmem-run finds the installed preload shim.
BUILD="$1" SRC="$2"
source "$SRC/tests/blackbox/lib.bash"

cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
DEST="$RUN/dest"
PREFIX=$(cache CMAKE_INSTALL_PREFIX)
LIBDIR=$(cache CMAKE_INSTALL_LIBDIR)
case "$PREFIX" in /usr) ETC=/etc ;; *) ETC="$PREFIX/etc" ;; esac
UNITDIR=$(cache FM_SYSTEMD_UNITDIR)
VERSION=$(sed -n 's/^project(fluidmem VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")

rc=0; DESTDIR="$DEST" cmake --install "$BUILD" >"$RUN/install.log" 2>&1 || rc=$?
check "cmake --install into DESTDIR" test $rc -eq 0
[ $rc -eq 0 ] || cat "$RUN/install.log"

# Every installed file, and nothing else.
{
	for b in fluidmemd fluidmemctl fluidmem-run fault-storm; do echo "$PREFIX/bin/$b"; done
	echo "$PREFIX/$LIBDIR/libfluidmem.so.$VERSION"
	echo "$PREFIX/$LIBDIR/libfluidmem.so.0"
	echo "$PREFIX/$LIBDIR/libfluidmem.so"
	echo "$PREFIX/$LIBDIR/pkgconfig/fluidmem.pc"
	echo "$PREFIX/$LIBDIR/fluidmem/libfluidmem-preload.so"
	echo "$PREFIX/include/fluidmem.h"
	echo "$ETC/fluidmem/fluidmemd.toml"
	echo "$ETC/fluidmem/memcached.toml"
	echo "$PREFIX/share/bash-completion/completions/fluidmemctl"
	if [ -f "$SRC/packaging/systemd/fluidmemd.service.in" ]; then
		echo "$UNITDIR/fluidmemd.service"
	fi
	if [ "$(cache FM_SCDOC)" != "" ] && [ "$(cache FM_SCDOC)" != "FM_SCDOC-NOTFOUND" ]; then
		for m in man8/fluidmemd.8 man8/fluidmemctl.8 man1/fluidmem-run.1 \
			 man1/fault-storm.1 man5/fluidmemd.toml.5 man3/libfluidmem.3; do
			echo "$PREFIX/share/man/$m"
		done
	fi
} | sort >"$RUN/want"
(cd "$DEST" && find . -type f -o -type l | sed 's|^\.||' | sort) >"$RUN/got"
check "installed files are exactly the expected ones" diff -u "$RUN/want" "$RUN/got"

LIB="$DEST$PREFIX/$LIBDIR"
check "libfluidmem.so.0 has SONAME libfluidmem.so.0" \
	sh -c "readelf -d '$LIB/libfluidmem.so.0' | grep -q 'SONAME.*\[libfluidmem.so.0\]'"
check "libfluidmem exports only fm_* (and its version node)" \
	sh -c "! nm -D --defined-only '$LIB/libfluidmem.so.0' | awk '{print \$3}' | grep -v -e '^fm_' -e '^FLUIDMEM_0\$'"
check "config installed under etc/fluidmem is the documented one" \
	cmp "$DEST$ETC/fluidmem/fluidmemd.toml" "$SRC/configs/local.toml"

# fluidmemd.toml(5) names every key the daemon knows (its --check dump).
if [ -f "$DEST$PREFIX/share/man/man5/fluidmemd.toml.5" ]; then
	"$DEST$PREFIX/bin/fluidmemd" --config "$SRC/configs/memcached.toml" --check |
		awk '/^\[/ { t = substr($1, 2, length($1) - 2); next }
		     / = / { print t "." $1 }' >"$RUN/keys"
	sed 's/\\&//g' "$DEST$PREFIX/share/man/man5/fluidmemd.toml.5" >"$RUN/toml.5"  # roff's \& guards
	missing=$(while read -r k; do grep -qF "$k" "$RUN/toml.5" || echo "$k"; done <"$RUN/keys" | xargs)
	check "fluidmemd.toml(5) documents all $(wc -l <"$RUN/keys") keys${missing:+ (missing: $missing)}" \
		test -z "$missing" -a "$(wc -l <"$RUN/keys")" -gt 40
	# Each program's page names every option of its --help (and fluidmemctl's
	# every command), so the pages cannot fall behind the programs.
	for p in fluidmemd fluidmemctl fluidmem-run fault-storm; do
		page=$(ls "$DEST$PREFIX"/share/man/man*/"$p".[0-9])
		words=$("$DEST$PREFIX/bin/$p" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u)
		[ $p = fluidmemctl ] && words="$words $("$DEST$PREFIX/bin/$p" --help |
			sed -n '/^Commands:/,/^Options:/s/^  \([a-z-][a-z-]*\) .*/\1/p')"
		missing=$(for w in $words; do
			# not grep -q: under pipefail, sed's SIGPIPE on a long page would fail it
			sed 's/\\-/-/g; s/\\&//g' "$page" | grep -F -- "$w" >/dev/null || echo "$w"; done | xargs)
		check "$(basename "$page") covers $p --help${missing:+ (missing: $missing)}" test -z "$missing"
	done
	for m in "$DEST$PREFIX"/share/man/man*/*; do
		check "man page $(basename "$m") renders without warnings" \
			sh -c "! MANWIDTH=80 man --warnings -l '$m' 2>&1 >/dev/null | grep ."
	done
fi

# A client built from the installed header and pkg-config file only.
export PKG_CONFIG_SYSROOT_DIR="$DEST" PKG_CONFIG_LIBDIR="$LIB/pkgconfig"
check "pkg-config --modversion fluidmem is $VERSION" test "$(pkg-config --modversion fluidmem)" = "$VERSION"
san=
[ "$(cache FM_SANITIZE)" = ON ] && san="-fsanitize=address,undefined"
rc=0; cc $san -o "$RUN/hello" "$SRC/tests/install/hello_fluidmem.c" \
	$(pkg-config --cflags --libs fluidmem) >"$RUN/cc.log" 2>&1 || rc=$?
check "a client builds with pkg-config --cflags --libs fluidmem" test $rc -eq 0
[ $rc -eq 0 ] || cat "$RUN/cc.log"
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR

# The unit: systemd-analyze verify (directives, the ExecStart binary, the
# Documentation= man pages). systemd is not PID 1 here, so the unit cannot be
# started; its ExecStart is what the daemon is started with below.
UNIT="$DEST$UNITDIR/fluidmemd.service"
sed "s|^ExecStart=/|ExecStart=$DEST/|; s|^ExecStop=/|ExecStop=$DEST/|" "$UNIT" >"$RUN/fluidmemd.service"
if command -v systemd-analyze >/dev/null; then
	check "systemd-analyze verify fluidmemd.service" \
		env MANPATH="$DEST$PREFIX/share/man" systemd-analyze verify "$RUN/fluidmemd.service"
fi
for want in "RuntimeDirectory=fluidmem" "Before=libvirtd.service virtqemud.service" \
	"ExecStart=$PREFIX/bin/fluidmemd --config $ETC/fluidmem/fluidmemd.toml" \
	"ExecStop=$PREFIX/bin/fluidmemctl shutdown --keep-clients"; do
	check "unit has $want" grep -qxF "$want" "$UNIT"
done
notify=no
[ "$(cache SYSTEMD_FOUND)" = 1 ] && notify=yes
check "unit is Type=notify exactly when built with libsystemd ($notify)" \
	grep -qx "Type=$([ $notify = yes ] && echo notify || echo simple)" "$UNIT"

# The installed daemon, started with the installed unit's ExecStart (paths
# under DESTDIR), the installed config, private sockets, and a notify socket
# standing in for systemd's.
read -r -a cmd <<<"$(sed -n 's/^ExecStart=//p' "$RUN/fluidmemd.service")"
for i in "${!cmd[@]}"; do
	case "${cmd[$i]}" in /*) [ -e "${cmd[$i]}" ] || cmd[$i]="$DEST${cmd[$i]}" ;; esac
done
BIN="$DEST$PREFIX/bin"
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(20)
open(sys.argv[2], "w").write(s.recv(4096).decode())
' "$RUN/notify.sock" "$RUN/notify.msg" &
NOTIFY_PID=$!
for _ in $(seq 100); do [ -S "$RUN/notify.sock" ] && break; sleep 0.05; done
NOTIFY_SOCKET="$RUN/notify.sock" "${cmd[@]}" --set "register.path=\"$REG\"" \
	--set "control.path=\"$CTL\"" --set "daemon.state_dir=\"$RUN/state\"" \
	--set memory.resident_pages=512 2>"$RUN/fluidmemd.log" &
DAEMON_PID=$!
if [ $notify = yes ]; then
	rc=0; wait $NOTIFY_PID || rc=$?
	check "READY=1 sent to \$NOTIFY_SOCKET" grep -qx "READY=1" "$RUN/notify.msg"
	check "sockets answer as soon as READY=1 came" "$BIN/fluidmemctl" --socket "$CTL" ping
else
	kill $NOTIFY_PID 2>/dev/null || true
	wait $NOTIFY_PID 2>/dev/null || true
fi
for _ in $(seq 200); do
	"$BIN/fluidmemctl" --socket "$CTL" ping >/dev/null 2>&1 && break
	sleep 0.05
done
check "installed fluidmemd answers ping" "$BIN/fluidmemctl" --socket "$CTL" ping

rc=0; LD_LIBRARY_PATH="$LIB" "$RUN/hello" "$REG" >"$RUN/hello.out" 2>&1 || rc=$?
check "the client runs on the installed libfluidmem.so.0 (4x budget, verified)" test $rc -eq 0
[ $rc -eq 0 ] || cat "$RUN/hello.out"
check "it loaded the installed library" \
	sh -c "LD_LIBRARY_PATH='$LIB' ldd '$RUN/hello' | grep -q '$LIB/libfluidmem.so.0'"

rc=0; "$BIN/fault-storm" --socket "$REG" --control "$CTL" --pages 4096 --threads 2 \
	--passes 2 --write-ratio 0.5 --verify --json --quiet >"$RUN/storm.json" || rc=$?
check "installed fault-storm --verify: exit 0" test $rc -eq 0
check "installed fault-storm: no verify errors" test "$(json_get "$RUN/storm.json" verify_errors)" -eq 0
check "pages were evicted and fetched back" test "$(stat evictions)" -gt 1000

# A sanitizer build's shim needs the ASan runtime loaded first; as in test_preload.
asan_env=()
[ -z "$san" ] || asan_env=("ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:detect_leaks=0")
out=$(env "${asan_env[@]}" "$BIN/fluidmem-run" --socket "$REG" -- sh -c 'echo "$LD_PRELOAD"' 2>&1) || true
check "installed fluidmem-run finds the installed shim ($out)" \
	test "$out" = "$(realpath "$LIB/fluidmem/libfluidmem-preload.so")"
check "clean stop" stop_daemon
finish
