#!/usr/bin/env bash
# mkguest.sh VMDIR SRCDIR: build the test guest into VMDIR (the build tree's
# vm/ folder), installing nothing on the host:
#   VMDIR/vmlinuz    Debian's cloud kernel, from `apt-get download` +
#                    `dpkg-deb` (the .deb is cached in VMDIR/cache)
#   VMDIR/initrd.gz  busybox-static, tests/vm/init.sh as /init,
#                    VMDIR/guest_memtest (built by CMake), the virtio balloon
#                    modules and scripts/guest-online-memory
# Exit 0 when both are there, 77 (skip) with the reason when they cannot be
# made here (no busybox-static, no network for the kernel), 1 on an error.
set -euo pipefail
vm=${1:?usage: mkguest.sh VMDIR SRCDIR} src=${2:?usage: mkguest.sh VMDIR SRCDIR}
skip() { echo "SKIP: $*" >&2; exit 77; }
mkdir -p "$vm/cache"

# ---- kernel: any cached linux-image-*-cloud-amd64 .deb, else download ----
deb=$(ls -t "$vm"/cache/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
	pick() { apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
	pkg=$(pick)
	if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq >/dev/null 2>&1 || true
		pkg=$(pick)
	fi
	[ -n "$pkg" ] || skip "no linux-image-cloud-amd64 in the apt lists (no network to Debian's archive?)"
	echo "mkguest: downloading $pkg (once; cached in $vm/cache)"
	(cd "$vm/cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) ||
		skip "apt-get download $pkg failed (no network to Debian's archive?)"
	deb=$(ls -t "$vm"/cache/linux-image-*-cloud-amd64_*.deb | head -1)
fi
stamp="$vm/kernel.from"
if [ ! -s "$vm/vmlinuz" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$deb" ]; then
	rm -rf "$vm/kernel" && mkdir -p "$vm/kernel"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$vm/kernel" --wildcards \
		'./boot/vmlinuz-*' './lib/modules/*/kernel/drivers/virtio/*'
	cp "$vm"/kernel/boot/vmlinuz-* "$vm/vmlinuz"
	echo "$deb" >"$stamp"
fi

# ---- initramfs ----
bb=/bin/busybox
[ -x "$bb" ] || skip "busybox-static is not installed (scripts/lib.sh FM_PACKAGES has it)"
if ldd "$bb" >/dev/null 2>&1; then
	skip "$bb is not static: install busybox-static, not busybox"
fi
command -v cpio >/dev/null || skip "cpio is not installed (scripts/lib.sh FM_PACKAGES has it)"
[ -x "$vm/guest_memtest" ] || { echo "mkguest: $vm/guest_memtest missing: build first" >&2; exit 1; }

root="$vm/initramfs"
rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$bb" "$root/bin/busybox"
cp "$src/tests/vm/init.sh" "$root/init"
cp "$vm/guest_memtest" "$root/guest_memtest"
cp "$src/scripts/guest-online-memory" "$root/guest-online-memory"
cp "$vm"/kernel/lib/modules/*/kernel/drivers/virtio/*.ko "$root/lib/modules/"
chmod 755 "$root/init" "$root/guest-online-memory"
# The kernel opens /dev/console before /init runs; without it early output
# is lost (init.sh reopens it after mounting devtmpfs anyway).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$vm/initrd.gz.tmp"
mv "$vm/initrd.gz.tmp" "$vm/initrd.gz"
echo "mkguest: $(basename "$deb" .deb), initrd $(($(stat -c %s "$vm/initrd.gz") >> 10)) KiB"
