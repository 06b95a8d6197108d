#!/usr/bin/env bash
# vm_store.sh BUILD_DIR [CONFIG...]: whole-host memory of one VM whose RAM
# holds compressible contents, plain QEMU against QEMU on fluidmem with the
# embedded store (bench/README.md, "The local store"). The guest (the test
# guest of tests/vm: 512 MiB, busybox initramfs) fills fmtest.mib MiB with
# English-like text (guest_memtest --text) and holds it; then the script
# samples QEMU's RSS, fluidmemd's RSS, the store's file bytes and the
# daemon's stats, and kills QEMU.
#
# CONFIG: plain | none | lz4 | zstd | lz4-disk (16 MiB RAM tier + file)
#         | lz4-random (the incompressible pattern, for the overhead)
# Environment: FM_VM_ACCEL=tcg|kvm (default tcg), VM_MIB (guest, 512),
#              FILL_MIB (320), BUDGET_PAGES (16384 = 64 MiB resident),
#              DUMP=FILE: with config plain, save the guest's RAM there while
#              it holds (QMP pmemsave), for `kv-bench --content files:FILE`.
set -euo pipefail
build=$(cd "${1:?usage: vm_store.sh BUILD_DIR [CONFIG...]}" && pwd)
shift
src=$(cd "$(dirname "$0")/.." && pwd)
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(plain none lz4 lz4-disk)
vm="$build/vm" bin="$build/bin"
QEMU=${FM_QEMU:-qemu-system-x86_64}
VM_MIB=${VM_MIB:-512} FILL_MIB=${FILL_MIB:-320} BUDGET_PAGES=${BUDGET_PAGES:-16384}
accel=${FM_VM_ACCEL:-tcg}

bash "$src/tests/vm/mkguest.sh" "$vm" "$src" >/dev/null
run=$(mktemp -d /tmp/fmvmstore.XXXXXX)
daemon_pid= qpid=
cleanup() {
	set +e
	[ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
	fi
	rm -rf "$run"
}
trap cleanup EXIT INT TERM
die() { echo "FAIL: $*" >&2; exit 1; }
kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
dstat() { "$bin/fluidmemctl" -s "$run/ctl.sock" --json stats |
	python3 -c "import json,sys; print(json.load(sys.stdin)['totals']['$1'])"; }

case $accel in
kvm) accel_args=(-enable-kvm -cpu host) ;;
*) accel_args=(-accel tcg -cpu max) ;;
esac
qemu_args=(-machine pc -nodefaults -display none -no-reboot -smp 1 "${accel_args[@]}"
	-kernel "$vm/vmlinuz" -initrd "$vm/initrd.gz" -m "$VM_MIB")

printf '%-11s %9s %9s %11s %11s %11s %11s %9s %7s\n' config qemu_mib daemon_mib host_mib \
	file_mib ram_tier stored_mib pages ratio
for cfg in "${configs[@]}"; do
	content=text comp=${cfg%%-*} path= ram=4096
	case $cfg in
	plain | none | lz4 | zstd) ;;
	lz4-disk) path="$run/store" ram=16 ;;
	lz4-random) content=random ;;
	*) die "unknown config $cfg" ;;
	esac
	rm -rf "$run/store" "$run"/*.sock && mkdir -p "$run/store"
	log="$run/guest-$cfg.log"
	run_env=()
	if [ "$cfg" != plain ]; then
		"$bin/fluidmemd" --config "$src/configs/local.toml" \
			--set "register.path=\"$run/reg.sock\"" --set "control.path=\"$run/ctl.sock\"" \
			--set "memory.resident_pages=$BUDGET_PAGES" \
			--set "store.local.compression=\"$comp\"" --set "store.local.path=\"$path\"" \
			--set "store.local.max_mib=$ram" 2>"$run/fluidmemd-$cfg.log" &
		daemon_pid=$!
		for _ in $(seq 100); do
			"$bin/fluidmemctl" -s "$run/ctl.sock" ping >/dev/null 2>&1 && break
			sleep 0.1
		done
		run_env=("$bin/fluidmem-run" --socket "$run/reg.sock" --)
	fi
	"${run_env[@]}" "$QEMU" "${qemu_args[@]}" -qmp "unix:$run/qmp.sock,server=on,wait=off" \
		-append "console=ttyS0 panic=-1 quiet mitigations=off fmtest.mode=hold fmtest.mib=$FILL_MIB fmtest.content=$content" \
		-serial "file:$log" 2>"$run/qemu-$cfg.log" &
	qpid=$!
	deadline=$((SECONDS + 1800))
	until grep -q 'FMTEST: holding' "$log" 2>/dev/null; do
		grep -q 'FMTEST: FAIL' "$log" 2>/dev/null && die "$cfg: $(grep -m1 FAIL "$log")"
		kill -0 "$qpid" 2>/dev/null || die "$cfg: QEMU exited: $(tail -3 "$run/qemu-$cfg.log")"
		[ $SECONDS -lt $deadline ] || die "$cfg: the guest did not fill its memory in time"
		sleep 1
	done
	sleep 2 # let the last evictions land
	# fluidmem-run execs QEMU, so $qpid is QEMU itself.
	q=$(kib "$qpid" VmRSS)
	d=0 file=0 ramt=0 stored=0 pages=0 ratio=-
	if [ -n "$daemon_pid" ]; then
		d=$(kib "$daemon_pid" VmRSS)
		file=$(du -sk "$run/store" | awk '{print $1}')
		ramt=$(($(dstat store_ram_bytes) >> 10))
		stored=$(($(dstat store_bytes) >> 10))
		pages=$(dstat store_pages)
		enc=$(dstat store_encoded_bytes)
		[ "$enc" -gt 0 ] && ratio=$(python3 -c "print(f'{$pages * 4096 / $enc:.2f}')")
	fi
	printf '%-11s %9d %9d %11d %11d %11d %11d %9d %7s\n' "$cfg" $((q >> 10)) $((d >> 10)) \
		$(((q + d) >> 10)) $((file >> 10)) $((ramt >> 10)) $((stored >> 10)) "$pages" "$ratio"
	grep -m1 'memtest\[hold\]: write' "$log" >&2 || true
	if [ "$cfg" = plain ] && [ -n "${DUMP:-}" ]; then
		python3 "$src/scripts/qmp.py" "$run/qmp.sock" pmemsave \
			"{\"val\": 0, \"size\": $((VM_MIB << 20)), \"filename\": \"$DUMP\"}" >/dev/null
		echo "guest RAM saved in $DUMP" >&2
	fi
	kill -9 "$qpid" && wait "$qpid" 2>/dev/null || true
	qpid=
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" && wait "$daemon_pid" 2>/dev/null || true
		daemon_pid=
	fi
done
