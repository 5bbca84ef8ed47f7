#!/bin/sh
# fetch.sh - fetch and cache the Linux guest of `make qemu-linux`: Debian's
# cloud kernel (linux-image-cloud-amd64) as bzImage and a busybox
# (busybox-static) initramfs as initramfs.cpio.gz, in
#   ${TAMAVISOR_LINUX_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tamavisor/linux}
# outside the clone. Files already there are kept (delete them to refetch).
#
# Needs apt-get, apt-cache, dpkg-deb, cpio and gzip (a Debian or Ubuntu
# host) and access to the Debian mirrors.
set -eu

dir=${TAMAVISOR_LINUX_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tamavisor/linux}
debs=$dir/debs
meta=linux-image-cloud-amd64

say() { echo "fetch.sh: $*"; }
die() { echo "fetch.sh: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb cpio gzip; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: apt-get install apt dpkg cpio gzip)"
done

# apt-get download as root: write as root, the _apt sandbox user cannot
# write into the cache (apt.conf(5), APT::Sandbox::User).
apt_opts=
[ "$(id -u)" = 0 ] && apt_opts="-o APT::Sandbox::User=root"

# known PKG: apt has a candidate version for PKG.
known() {
	apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'
}

# download PKG: PKG's .deb in $debs (kept if there), its path on stdout.
download() {
	mkdir -p "$debs"
	deb=$(ls "$debs/$1"_*.deb 2>/dev/null | tail -n 1 || true)
	if [ -z "$deb" ]; then
		if ! known "$1"; then
			[ "$(id -u)" = 0 ] || die "apt knows no package $1: run apt-get update (as root)"
			say "apt knows no package $1: running apt-get update" >&2
			apt-get update -qq >&2
			known "$1" || die "no package $1 in the configured Debian archives"
		fi
		say "downloading $1" >&2
		(cd "$debs" && apt-get $apt_opts -q download "$1" >&2)
		deb=$(ls "$debs/$1"_*.deb 2>/dev/null | tail -n 1 || true)
		[ -n "$deb" ] || die "apt-get download $1 left no .deb in $debs"
	fi
	echo "$deb"
}

# extract DEB DIR: unpack DEB's files into a fresh DIR.
extract() {
	rm -rf "$2"
	mkdir -p "$2"
	say "extracting $(basename "$1")"
	dpkg-deb -x "$1" "$2"
}

mkdir -p "$dir"

# The kernel: the metapackage depends on the versioned package
# (linux-image-<abi>-cloud-amd64) that holds /boot/vmlinuz-<abi>-cloud-amd64.
if [ -s "$dir/bzImage" ]; then
	say "have $dir/bzImage ($(cat "$dir/kernel-version" 2>/dev/null || echo unknown version))"
else
	if ! known "$meta"; then
		[ "$(id -u)" = 0 ] || die "apt knows no package $meta: run apt-get update (as root)"
		say "apt knows no package $meta: running apt-get update"
		apt-get update -qq
	fi
	pkg=$(apt-cache depends "$meta" 2>/dev/null |
		awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }')
	[ -n "$pkg" ] || die "cannot find the kernel package $meta depends on (apt-cache depends $meta)"
	say "$meta depends on $pkg"
	deb=$(download "$pkg")
	root=$dir/kernel-root
	extract "$deb" "$root"
	vmlinuz=$(ls "$root"/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)
	[ -n "$vmlinuz" ] || die "$(basename "$deb") has no /boot/vmlinuz-*"
	cp "$vmlinuz" "$dir/bzImage.tmp"
	mv "$dir/bzImage.tmp" "$dir/bzImage"
	basename "$vmlinuz" | sed 's/^vmlinuz-//' >"$dir/kernel-version"
	rm -rf "$root" # modules are not used: the initramfs is busybox only
	say "wrote $dir/bzImage ($(cat "$dir/kernel-version"), $(wc -c <"$dir/bzImage") bytes)"
fi

# The initramfs: a static busybox and an /init that mounts proc, sys and
# devtmpfs, prints a marker line and runs a shell on the console. It is
# rebuilt when this script's init changes (initramfs.id holds its version).
initramfs_id=4
if [ -s "$dir/initramfs.cpio.gz" ] && [ "$(cat "$dir/initramfs.id" 2>/dev/null)" = "$initramfs_id" ]; then
	say "have $dir/initramfs.cpio.gz"
else
	deb=$(download busybox-static)
	root=$dir/busybox-root
	extract "$deb" "$root"
	[ -x "$root/bin/busybox" ] || die "$(basename "$deb") has no /bin/busybox"

	tree=$dir/initramfs
	rm -rf "$tree"
	mkdir -p "$tree/bin" "$tree/sbin" "$tree/usr/bin" "$tree/usr/sbin" \
		"$tree/dev" "$tree/proc" "$tree/sys" "$tree/tmp" "$tree/root" "$tree/etc"
	cp "$root/bin/busybox" "$tree/bin/busybox"
	ln -s busybox "$tree/bin/sh"
	# The kernel opens /dev/console for init's standard streams; creating
	# the node needs root. Without it /init reopens the console itself
	# once devtmpfs is mounted.
	if [ "$(id -u)" = 0 ]; then
		mknod -m 600 "$tree/dev/console" c 5 1
	fi
	cat >"$tree/init" <<'INIT'
#!/bin/sh
# tamavisor Linux guest init (guests/linux/fetch.sh).
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
echo "tamavisor-linux: init ($(cut -d' ' -f1 /proc/uptime) s since boot, $(uname -r))"
export HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin PS1='\w \$ '
cd "$HOME"
# busybox poweroff/reboot/halt signal PID 1 (USR2/TERM/USR1): this script
# is PID 1, so it traps them. A shell with the console as its controlling
# terminal (job control, Ctrl-C) runs in the background so that the traps
# run at once; when it exits, power off.
trap 'echo "tamavisor-linux: powering off"; poweroff -f' USR2
trap 'echo "tamavisor-linux: rebooting"; reboot -f' TERM
trap 'echo "tamavisor-linux: halting"; halt -f' USR1
if command -v cttyhack >/dev/null; then setsid cttyhack sh & else sh & fi
pid=$!
while :; do wait $pid; [ $? -gt 128 ] || break; done # >128: a trap ran
echo "tamavisor-linux: shell exited, powering off"
poweroff -f
INIT
	chmod 755 "$tree/init"
	say "packing $dir/initramfs.cpio.gz"
	(cd "$tree" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
		gzip -9 -n >"$dir/initramfs.cpio.gz.tmp"
	mv "$dir/initramfs.cpio.gz.tmp" "$dir/initramfs.cpio.gz"
	echo "$initramfs_id" >"$dir/initramfs.id"
	rm -rf "$root" "$tree"
	say "wrote $dir/initramfs.cpio.gz ($(wc -c <"$dir/initramfs.cpio.gz") bytes, $(basename "$deb"))"
fi
