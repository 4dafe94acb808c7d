#!/usr/bin/env bash
# Install Debian's libvirt daemon and client (no systemd needed: the libvirt test starts
# libvirtd itself). Runs as root; installs only what is missing.
#
# Usage: qemu-patches/install-libvirt.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)
missing=()
for p in "${pkgs[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "install-libvirt.sh: missing ${missing[*]}, not root" >&2; exit 1; }
    opts=(-q -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    echo "install-libvirt.sh: installing ${missing[*]}" >&2
    if ! apt-get "${opts[@]}" install --no-install-recommends "${missing[@]}" >&2; then
        apt-get "${opts[@]}" update >&2
        apt-get "${opts[@]}" install --no-install-recommends "${missing[@]}" >&2
    fi
fi
# The unprivileged user QEMU runs as under libvirt. libvirt-daemon-system creates it (with
# systemd units, polkit and firewall rules this test does not need); create it the same way.
if ! getent passwd libvirt-qemu >/dev/null; then
    [ "$(id -u)" -eq 0 ] || { echo "install-libvirt.sh: no user libvirt-qemu, not root" >&2; exit 1; }
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
        --shell /usr/sbin/nologin libvirt-qemu
    echo "install-libvirt.sh: created the system user libvirt-qemu" >&2
fi
