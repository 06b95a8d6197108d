# Shared by scripts/demo and scripts/test: install what is missing and build.
# Sourced, not run.

FM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian packages the build and the tests need.
# memcached: the server the memcached-backend tests start themselves.
FM_PACKAGES=(build-essential cmake pkg-config libck-dev libcriterion-dev
	libmemcached-dev memcached liblz4-dev libzstd-dev   # src/kv: the local store's compression
	liblmdb-dev   # bench/kv_bench.c: LMDB, the disk engine compared against (optional)
	libjansson-dev   # fluidmemctl and bench read JSON replies
	scdoc   # docs/man: the man pages (optional: skipped without it)
	libsystemd-dev   # fluidmemd: sd_notify for the Type=notify unit (optional)
	libzookeeper-mt-dev zookeeper   # src/cluster; the tests start the server (it pulls in default-jre)
	qemu-system-x86 busybox-static cpio python3   # tests/vm: the VM test and scripts/attach-memory
	libvirt-daemon-system libvirt-clients)   # tests/vm/libvirt_test.sh: a real libvirtd and virsh

# What scripts/demo needs: the build only (the tests are built too, hence
# criterion), none of the servers, QEMU or libvirt the suite starts.
FM_DEMO_PACKAGES=(build-essential cmake pkg-config libck-dev libcriterion-dev
	libmemcached-dev liblz4-dev libzstd-dev libjansson-dev libzookeeper-mt-dev)

# Only for the package test (tests/debs/debs.sh, `scripts/test` full mode):
# building the .debs. scripts/demo never installs these.
FM_DEB_PACKAGES=(debhelper dpkg-dev scdoc libsystemd-dev
	prometheus)   # promtool: tests/blackbox/metrics_names.sh lints a scrape (skips without it)

fm_say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fm_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

fm_as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"
	elif command -v sudo >/dev/null; then sudo "$@"
	else fm_die "need root for: $*"; fi
}

# Install only the packages that are not there yet (apt-get update first):
# FM_PACKAGES and the arguments; FM_INSTALL_SET=FM_DEMO_PACKAGES (scripts/demo)
# replaces FM_PACKAGES by that list.
fm_install() {
	local missing=() p
	local -n fm_set=${FM_INSTALL_SET:-FM_PACKAGES}
	for p in "${fm_set[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		fm_say "packages: all present"
		return
	fi
	fm_say "installing: ${missing[*]}"
	fm_as_root apt-get update -qq
	fm_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

# fm_build DIR [cmake args...]: configure and build into DIR (warnings are errors).
fm_build() {
	local dir="$1"; shift
	fm_say "building $dir $*"
	cmake -S "$FM_ROOT" -B "$FM_ROOT/$dir" "$@" >/dev/null
	cmake --build "$FM_ROOT/$dir" -j"$(nproc)" -- --no-print-directory 2>&1 | grep -v '^\[' || true
	[ -x "$FM_ROOT/$dir/bin/fluidmemd" ] || fm_die "build of $dir failed"
}

# Userfaultfd is needed by everything; say so plainly when it is missing.
fm_check_uffd() {
	[ "$(id -u)" -eq 0 ] || [ -r /dev/userfaultfd ] ||
		[ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" = 1 ] ||
		fm_die "userfaultfd needs root, /dev/userfaultfd access or vm.unprivileged_userfaultfd=1"
}
