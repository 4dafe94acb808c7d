#!/bin/bash
# Build the ringcast test guest: Debian's current bookworm kernel plus a
# busybox initramfs with the virtio console and sound modules, the rcguest
# payload helper and /init (init.sh).
#
# The result is cached in ${RINGCAST_CACHE:-$HOME/.cache/ringcast}/guest/<key>/
# (vmlinuz, initrd.gz, manifest.txt), where <key> hashes the builder inputs and
# the package versions used. Progress goes to stderr; the last line of stdout
# is the directory. Safe to run concurrently (flock) and repeatedly.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${RINGCAST_CACHE:-$HOME/.cache/ringcast}/guest
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

# Modules the guest loads; their dependencies (and the order) come from
# modules.dep. Order among the entries matters only where no dependency says
# so: codec drivers go before the HDA controller that probes for them.
guest_modules=(
	virtio_pci virtio_console
	snd-intel8x0 snd-pcm-oss
	snd-hda-codec-generic snd-hda-intel
)
# Fixed timestamp for the initramfs contents, so identical inputs give an
# identical initrd.gz.
epoch=1700000000

say() { echo "build.sh: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

apt_updated=0
apt_update() {
	((apt_updated)) && return 0
	[[ $(id -u) == 0 ]] || die "package lists are missing or stale; run 'apt-get update' as root"
	say "apt-get update"
	apt-get update -q >&2 || die "apt-get update failed"
	apt_updated=1
}

candidate() { # package -> candidate version or empty
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

kernel_package() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		grep -Eo 'linux-image-[0-9][^ ]*-amd64$' | grep -v unsigned | head -n1 || true
}

# ---- which kernel and busybox ------------------------------------------------
# apt-cache parses all package lists on every call (about 0.5 s each here), so
# the answer is remembered per state of the lists and apt configuration.
apt_state() {
	shopt -s nullglob
	stat -c '%n %Y %s' /var/lib/apt/lists/*_Packages* /etc/apt/sources.list* \
		/etc/apt/sources.list.d/* /etc/apt/preferences* /etc/apt/preferences.d/* 2>/dev/null |
		sha256sum | cut -c1-16
}
resolve() {
	kpkg=$(kernel_package)
	if [[ -z $kpkg || -z $(candidate "$kpkg") || -z $(candidate busybox-static) ]]; then
		apt_update
		kpkg=$(kernel_package)
	fi
	[[ -n $kpkg ]] || die "apt-cache depends linux-image-amd64 names no kernel package"
	kver_pkg=$(candidate "$kpkg")
	bb_ver=$(candidate busybox-static)
	[[ -n $kver_pkg && -n $bb_ver ]] || die "no candidate version for $kpkg or busybox-static"
}
resolved=$cache_root/.resolved-$(apt_state)
if [[ -s $resolved ]]; then
	read -r kpkg kver_pkg bb_ver <"$resolved"
else
	resolve
	mkdir -p "$cache_root"
	rm -f "$cache_root"/.resolved-*
	resolved=$cache_root/.resolved-$(apt_state) # the lists may have just been updated
	echo "$kpkg $kver_pkg $bb_ver" >"$resolved.$$" && mv "$resolved.$$" "$resolved"
fi
kabi=${kpkg#linux-image-} # e.g. 6.1.0-56-amd64

# ---- host tools (installed only when missing) --------------------------------
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v cpio >/dev/null || need+=(cpio)
command -v gzip >/dev/null || need+=(gzip)
command -v depmod >/dev/null || [[ -x /sbin/depmod ]] || need+=(kmod)
dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q 'ok installed' || need+=(libc6-dev)
if ((${#need[@]})); then
	[[ $(id -u) == 0 ]] || die "missing packages: ${need[*]} (install them as root)"
	say "installing ${need[*]}"
	if ! apt-get install -y -q --no-install-recommends "${need[@]}" >&2; then
		apt_update
		apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || die "cannot install ${need[*]}"
	fi
fi
depmod=$(command -v depmod || echo /sbin/depmod)
libc_ver=$(dpkg-query -W -f='${Version}' libc6-dev)
gcc_ver=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)

# ---- cache key ---------------------------------------------------------------
key=$(
	{
		for f in "$here"/build.sh "$here"/init.sh "$here"/rcguest.h "$here"/*.c; do
			echo "== ${f##*/}"
			cat "$f"
		done
		echo "== versions"
		echo "$kpkg $kver_pkg busybox-static $bb_ver libc6-dev $libc_ver gcc $gcc_ver"
	} | sha256sum | cut -c1-16
)
out=$cache_root/$kabi-$key

done_already() { [[ -s $out/vmlinuz && -s $out/initrd.gz ]]; }
if done_already; then
	say "cached: $out"
	echo "$out"
	exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
	say "another build holds $cache_root/.lock; waiting"
	flock 9
fi
if done_already; then
	say "cached (built concurrently): $out"
	echo "$out"
	exit 0
fi

t_start=$SECONDS
work=$(mktemp -d "$cache_root/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "building guest for $kpkg $kver_pkg, busybox $bb_ver in $work"

# ---- download and unpack -----------------------------------------------------
debs=$cache_root/debs
mkdir -p "$debs"
fetch() { # package version -> path of the .deb
	local f="$debs/${1}_${2//:/%3a}_amd64.deb"
	if [[ ! -s $f ]]; then
		say "apt-get download $1=$2"
		if ! (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$1=$2" >&2); then
			apt_update
			(cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$1=$2" >&2) ||
				die "apt-get download $1=$2 failed"
		fi
	fi
	[[ -s $f ]] || die "expected $f after download"
	echo "$f"
}
kdeb=$(fetch "$kpkg" "$kver_pkg")
bbdeb=$(fetch busybox-static "$bb_ver")

say "unpacking"
dpkg -x "$kdeb" "$work/k"
dpkg -x "$bbdeb" "$work/bb"
for d in "$work/k/lib/modules/$kabi" "$work/k/usr/lib/modules/$kabi"; do
	[[ -d $d ]] && moddir=$d && break
done
[[ -n ${moddir:-} ]] || die "no modules directory for $kabi in $kdeb"
[[ -s $work/k/boot/vmlinuz-$kabi ]] || die "no boot/vmlinuz-$kabi in $kdeb"
if [[ ! -s $moddir/modules.dep ]]; then
	say "depmod"
	mkdir -p "$work/depmod/lib/modules"
	ln -s "$moddir" "$work/depmod/lib/modules/$kabi"
	"$depmod" -b "$work/depmod" "$kabi" || die "depmod failed"
fi

# ---- resolve module load order from modules.dep ------------------------------
declare -A mod_path mod_deps visited
while IFS= read -r line; do
	path=${line%%:*}
	name=${path##*/}
	name=${name%%.ko*}
	name=${name//-/_}
	mod_path[$name]=$path
	mod_deps[$name]=${line#*:}
done <"$moddir/modules.dep"
load_order=()
visit() { # module name (dashes or underscores)
	local m=${1//-/_} d dn
	[[ -n ${visited[$m]:-} ]] && return 0
	[[ -n ${mod_path[$m]:-} ]] || die "module $1 not in modules.dep (built in or missing?)"
	visited[$m]=1
	for d in ${mod_deps[$m]}; do
		dn=${d##*/}
		visit "${dn%%.ko*}"
	done
	load_order+=("$m")
}
for m in "${guest_modules[@]}"; do visit "$m"; done
say "modules (${#load_order[@]}): ${load_order[*]}"

# ---- rcguest -----------------------------------------------------------------
say "compiling rcguest (static)"
gcc -static -O2 -Wall -o "$work/rcguest" "$here"/*.c -lm ||
	die "static build of rcguest failed (is libc6-dev complete?)"
"$work/rcguest" gen --seed 1 --bytes 20 --out "$work/probe" 2>/dev/null ||
	die "the static rcguest does not run"
[[ $(od -An -tx1 "$work/probe" | tr -d ' \n') == 1ddd6c894bcee4471d6579e0a8a6cfab571f73eb ]] ||
	die "rcguest self-check failed"

# ---- initramfs tree ----------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,lib/modules}
install -m 0755 "$work/bb/bin/busybox" "$root/bin/busybox"
while read -r applet; do
	[[ -n $applet && ! -e $root/$applet ]] || continue
	mkdir -p "$root/$(dirname "$applet")"
	ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
install -m 0755 "$work/rcguest" "$root/bin/rcguest"
install -m 0755 "$here/init.sh" "$root/init"
: >"$root/etc/rc-modules"
for m in "${load_order[@]}"; do
	install -m 0644 "$moddir/${mod_path[$m]}" "$root/lib/modules/$m.ko"
	echo "$m" >>"$root/etc/rc-modules"
done
# The kernel opens /dev/console for init before /init mounts devtmpfs.
if [[ $(id -u) == 0 ]]; then
	mknod -m 0600 "$root/dev/console" c 5 1 && mknod -m 0666 "$root/dev/null" c 1 3 ||
		say "warning: mknod failed; init will still switch to ttyS1 after mounting devtmpfs"
fi

find "$root" -exec touch -h -d "@$epoch" {} +
say "packing initrd.gz"
(cd "$root" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
	gzip -n -9 >"$work/initrd.gz"

# ---- publish -----------------------------------------------------------------
stage=$work/out
mkdir -p "$stage"
cp "$work/k/boot/vmlinuz-$kabi" "$stage/vmlinuz"
mv "$work/initrd.gz" "$stage/initrd.gz"
{
	echo "kernel_package=$kpkg"
	echo "kernel_version=$kver_pkg"
	echo "kernel_release=$kabi"
	echo "busybox_version=$bb_ver"
	echo "libc6_dev_version=$libc_ver"
	echo "gcc_version=$gcc_ver"
	echo "modules=${load_order[*]}"
	echo "key=$key"
} >"$stage/manifest.txt"
(cd "$stage" && sha256sum vmlinuz initrd.gz >>manifest.txt)
rm -rf "$out"
mv "$stage" "$out"
say "built in $((SECONDS - t_start)) s: $(du -h "$out/initrd.gz" | cut -f1) initrd"
echo "$out"
