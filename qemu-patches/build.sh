#!/usr/bin/env bash
# Build qemu-system-x86_64 from Debian's QEMU 10.0.x source with the backend-plugin series applied.
#
# Usage: qemu-patches/build.sh
#
# Progress goes to stderr; the last line on stdout is the absolute path of the binary.
# The build is cached under ${RINGCAST_CACHE:-$HOME/.cache/ringcast}/qemu/<version>-<hash>/,
# keyed by the QEMU version and a hash of the patches, the devices file and this script, so a
# second run with nothing changed only prints the path. Runs as root (it installs Debian
# packages and may add an apt source file); works without a terminal (CI=true, no stdin).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${RINGCAST_CACHE:-$HOME/.cache/ringcast}/qemu
devices_file=$here/ringcast-devices.mak
devices_name=ringcast
src_list=/etc/apt/sources.list.d/ringcast-qemu-src.sources
export DEBIAN_FRONTEND=noninteractive

log() { printf 'qemu-patches/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
build_pkgs=(ninja-build libglib2.0-dev libpixman-1-dev flex bison pkg-config libslirp-dev
            libfdt-dev python3-venv gcc make patch xz-utils)
runtime_pkgs=(seabios ipxe-qemu qemu-system-data)
configure_flags=(--target-list=x86_64-softmmu --disable-docs --disable-werror --disable-user
                 --disable-tools --disable-guest-agent --enable-kvm --disable-xen --disable-sdl
                 --disable-gtk --disable-vnc --disable-spice --disable-opengl --disable-curses
                 --disable-rust --disable-download --disable-install-blobs --audio-drv-list=oss
                 --without-default-devices "--with-devices-x86_64=$devices_name")

run_hint() {
    log "run the uninstalled binary with firmware from Debian packages, e.g.:"
    log "  $1 -L /usr/share/seabios -L /usr/share/qemu -M q35 -accel tcg -nodefaults \\"
    log "    -display none -chardev plugin,id=c0,path=/path/to/plugin.so -serial chardev:c0"
}

missing_pkgs() {
    local p
    for p in "$@"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
            printf '%s\n' "$p"
        fi
    done
}

apt_updated=0
apt_update() {
    log "apt-get update"
    apt-get "${apt_opts[@]}" update >&2
    apt_updated=1
}

ensure_pkgs() {
    local missing
    mapfile -t missing < <(missing_pkgs "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]} and not root to install them"
    log "installing ${missing[*]}"
    if ! apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >&2; then
        [ "$apt_updated" -eq 1 ] && die "apt-get install ${missing[*]} failed"
        apt_update
        apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" >&2 \
            || die "apt-get install ${missing[*]} failed"
    fi
}

# URIs and Signed-By of the existing bookworm stanza in debian.sources (deb822 format).
debian_source_field() {
    local field=$1 default=$2 value=''
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        value=$(awk -v RS= -v f="$field" '
            /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t\n]|$)/ {
                n = split($0, lines, "\n")
                for (i = 1; i <= n; i++)
                    if (index(lines[i], f ":") == 1) {
                        sub("^" f ":[ \t]*", "", lines[i]); print lines[i]; exit
                    }
            }' /etc/apt/sources.list.d/debian.sources)
    fi
    printf '%s\n' "${value:-$default}"
}

qemu_src_versions() {
    apt-cache showsrc qemu 2>/dev/null | awk '/^Version:/ {print $2}' \
        | grep -E '^([0-9]+:)?10\.0\.' | sort -uV || true
}

ensure_sources() {
    local uri keyring
    uri=$(debian_source_field URIs http://deb.debian.org/debian)
    uri=${uri%% *}
    keyring=$(debian_source_field Signed-By /usr/share/keyrings/debian-archive-keyring.gpg)
    debian_uri=$uri
    if [ ! -e "$src_list" ] && [ -z "$(qemu_src_versions)" ]; then
        log "adding $src_list (deb-src bookworm, deb/deb-src bookworm-backports)"
        cat >"$src_list" <<EOF
# Added by ringcast qemu-patches/build.sh: QEMU 10.0 source from bookworm-backports.
Types: deb-src
URIs: $uri
Suites: bookworm
Components: main
Signed-By: $keyring

Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: $keyring
EOF
        apt_update
    elif [ -z "$(qemu_src_versions)" ]; then
        apt_update
    fi
}

# Field of the showsrc stanza for one version: Directory, or the sha256 of a file.
showsrc_stanza() {
    apt-cache showsrc qemu | awk -v RS= -v v="$1" 'index($0, "\nVersion: " v "\n") {print; exit}'
}

fetch_orig() {
    local ver=$1 orig=$2 dl=$3 sha dir url
    sha=$(showsrc_stanza "$ver" | awk -v f="$orig" '
        /^Checksums-Sha256:/ {s = 1; next} /^[^ ]/ {s = 0} s && $3 == f {print $1; exit}')
    [ -n "$sha" ] || die "apt-cache showsrc qemu gives no sha256 for $orig"
    if [ -f "$dl/$orig" ] && echo "$sha  $dl/$orig" | sha256sum -c --status; then
        return 0
    fi
    rm -f "$dl/$orig"
    log "fetching $orig with apt-get source --download-only qemu=$ver"
    # The .dsc and the debian tarball may be gone from the pool (404); only the orig
    # tarball is needed for an upstream build, so the exit status is not trusted here.
    (cd "$dl" && apt-get "${apt_opts[@]}" source --download-only "qemu=$ver" >&2) \
        || log "apt-get source failed; checking whether the orig tarball arrived anyway"
    if [ ! -f "$dl/$orig" ]; then
        dir=$(showsrc_stanza "$ver" | awk '/^Directory:/ {print $2; exit}')
        [ -n "$dir" ] || die "apt-cache showsrc qemu gives no pool directory"
        url=${debian_uri%/}/$dir/$orig
        log "fetching $url"
        curl -fL --retry 3 -o "$dl/$orig.part" "$url" >&2 || die "could not download $url"
        mv "$dl/$orig.part" "$dl/$orig"
    fi
    echo "$sha  $dl/$orig" | sha256sum -c --status || die "sha256 mismatch for $dl/$orig"
}

ensure_python() {
    local venv=$cache_root/pyvenv
    if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c 'import mesonbuild, pycotap' 2>/dev/null \
        || ! "$venv/bin/python3" - <<'EOF'
import sys
from mesonbuild import coredata
v = tuple(int(x) for x in coredata.version.split(".")[:2])
sys.exit(0 if v >= (1, 5) else 1)
EOF
    then
        log "creating python venv $venv with meson>=1.5 and pycotap==1.3.1"
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv" >&2
        "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
            'meson>=1.5' 'pycotap==1.3.1' >&2
    fi
    python=$venv/bin/python3
}

# ---- main -------------------------------------------------------------------------------

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
    log "waiting for another build.sh (lock $cache_root/.lock)"
    flock 9
fi

"$here/check-header.sh" >&2

shopt -s nullglob
patches=("$here"/[0-9][0-9][0-9][0-9]-*.patch)
shopt -u nullglob
[ "${#patches[@]}" -gt 0 ] || die "no patches found in $here"
[ -f "$devices_file" ] || die "missing $devices_file"
key=$(cat "$here/build.sh" "$devices_file" "${patches[@]}" | sha256sum | cut -c1-16)

# Fast path: a finished build for this key (the newest QEMU version if there are several).
ensure_pkgs "${runtime_pkgs[@]}"
shopt -s nullglob
stamps=("$cache_root"/*-"$key"/build-ok)
shopt -u nullglob
if [ "${#stamps[@]}" -gt 0 ]; then
    done_dir=$(printf '%s\n' "${stamps[@]%/build-ok}" | sort -V | tail -n 1)
    bin=$done_dir/src/build/qemu-system-x86_64
    if [ -x "$bin" ]; then
        log "up to date: $bin"
        run_hint "$bin"
        printf '%s\n' "$bin"
        exit 0
    fi
fi

ensure_sources
mapfile -t versions < <(qemu_src_versions)
[ "${#versions[@]}" -gt 0 ] || die "apt-cache showsrc qemu lists no 10.0.x version"
deb_ver=${versions[-1]}
up_ver=${deb_ver#*:}
up_ver=${up_ver%-*}            # 10.0.2+ds
qemu_ver=${up_ver%%+*}         # 10.0.2
orig=qemu_${up_ver}.orig.tar.xz
log "QEMU source: qemu $deb_ver ($orig)"

ensure_pkgs "${build_pkgs[@]}"
ensure_python

dl=$cache_root/download
mkdir -p "$dl"
fetch_orig "$deb_ver" "$orig" "$dl"

work=$cache_root/$qemu_ver-$key
src=$work/src
bin=$src/build/qemu-system-x86_64

if [ ! -f "$work/extracted" ]; then
    log "extracting into $src"
    rm -rf "$work"
    mkdir -p "$src"
    tar -xJf "$dl/$orig" -C "$src" --strip-components=1
    # Debian's +ds tarball has no edk2 firmware blobs; do not try to unpack them.
    sed -i -E 's/^([[:space:]]*unpack_edk2_blobs = ).*$/\1false/' "$src/meson.build"
    if grep -E '^[[:space:]]*unpack_edk2_blobs = ' "$src/meson.build" | grep -qv '= false$'; then
        die "could not set unpack_edk2_blobs = false in meson.build"
    fi
    for p in "${patches[@]}"; do
        log "applying $(basename "$p")"
        patch -d "$src" -p1 --batch --forward --quiet <"$p" >&2 \
            || die "$(basename "$p") does not apply to qemu $qemu_ver"
    done
    cp "$devices_file" "$src/configs/devices/x86_64-softmmu/$devices_name.mak"
    touch "$work/extracted"
fi

if [ ! -f "$work/configured" ]; then
    log "configuring"
    rm -rf "$src/build"
    mkdir -p "$src/build"
    (cd "$src/build" && ../configure "--python=$python" "${configure_flags[@]}") >&2
    touch "$work/configured"
fi

log "building qemu-system-x86_64 (several minutes on 2 cores)"
start=$(date +%s)
# The series' qtest and its example plugins come along (qemu-patches/qtest.sh runs them).
ninja -C "$src/build" qemu-system-x86_64 tests/qtest/backend-plugin-test \
    tests/qtest/backend-plugin-example.so tests/qtest/backend-plugin-example-1.0.so >&2
log "build finished in $(($(date +%s) - start)) s"
[ -x "$bin" ] || die "ninja finished but $bin is missing"
touch "$work/build-ok"
run_hint "$bin"
printf '%s\n' "$bin"
