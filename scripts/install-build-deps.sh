#!/usr/bin/env bash
# Installs what building ringcast needs from Debian's packages, if missing: a C compiler,
# ALSA's headers with pkg-config (cpal, behind `ringcast play` to the sound card, links ALSA),
# and libopus (ringcastd encodes Opus, `ringcast play` decodes it; found through pkg-config).
#
#   scripts/install-build-deps.sh [PACKAGE...]   also install these Debian packages
#
# Used by scripts/demo.sh and scripts/test.sh; needs root (or sudo) only when something is
# missing.
set -euo pipefail

command -v cargo >/dev/null || {
    echo "cargo is needed: install a Rust toolchain with rustfmt and clippy (https://rustup.rs)" >&2
    exit 1
}
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
for pkg in libasound2-dev libopus-dev pkg-config "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    echo "==> installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get -q -y update >&2
    "${sudo[@]}" apt-get -q -y install "${missing[@]}" >&2
fi
