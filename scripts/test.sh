#!/usr/bin/env bash
# The whole ringcast test suite: what CI runs (.ci/run calls this).
#
#   scripts/test.sh            everything
#   scripts/test.sh --no-qemu  skip building QEMU and the real-QEMU tests
#   scripts/test.sh --fast     --no-qemu, and skip the wall-clock tests too (the lossy
#                              link's cuts and delays, the load scenario): the inner loop
#
# It installs what it needs (Debian packages, PyPI meson for QEMU's build) and caches the
# expensive builds under ${RINGCAST_CACHE:-~/.cache/ringcast}: the patched QEMU (keyed by
# QEMU version and the patches' hash) and the test guest. A first run on a fresh machine
# takes about 15-25 minutes, most of it compiling QEMU; later runs take a few minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

with_qemu=1
for arg in "$@"; do
    case "$arg" in
        --no-qemu) with_qemu=0 ;;
        --fast) with_qemu=0; export RINGCAST_SKIP_SLOW=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "scripts/test.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

started=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*" >&2; }

# A C compiler, ALSA's headers (`ringcast play`), tmux, which drives the interactive
# `ringcast console` test, npm for the browser client's page, and Chromium, the browser its
# tests drive.
# (npm only where no npm is installed: a Node.js from elsewhere, e.g. NodeSource, brings its
# own, and Debian's npm package would conflict with it.)
npm_pkg=()
command -v npm >/dev/null || npm_pkg=(npm)
scripts/install-build-deps.sh tmux chromium "${npm_pkg[@]}"

step "the browser client's page (web/build.sh: xterm.js from npm, cached)"
web/build.sh >/dev/null

step "baseline tools for the benchmark harness (socat, openssl, ssh, iperf3)"
benches/baselines/install.sh >&2

if [ "$with_qemu" = 1 ]; then
    step "patched QEMU (built once, then cached)"
    RINGCAST_QEMU=$(qemu-patches/build.sh | tail -n1)
    step "QEMU's checkpatch.pl over the series (no error, no warning)"
    qemu-patches/checkpatch.sh "$(dirname "$RINGCAST_QEMU")/.."
    step "the series' qtest (tests/qtest/backend-plugin-test)"
    qemu-patches/qtest.sh "$RINGCAST_QEMU"
    step "libvirt (for the libvirt test; no systemd needed)"
    qemu-patches/install-libvirt.sh
    step "test guest (built once, then cached)"
    RINGCAST_GUEST_DIR=$(testbed/guest/build.sh | tail -n1)
    export RINGCAST_QEMU RINGCAST_GUEST_DIR
    step "guest helper self-test"
    testbed/guest/selftest.sh
else
    export RINGCAST_SKIP_QEMU=1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "the client builds without its default features (no ALSA headers needed)"
cargo check --quiet -p client --no-default-features
# ringcastd and the plugin must never link ALSA (the client's sound-card feature does).
for pkg in sidecar backend-so; do
    if cargo tree --quiet -p "$pkg" -e normal,build --prefix none | grep -q '^alsa'; then
        echo "scripts/test.sh: $pkg depends on ALSA:" >&2
        cargo tree -p "$pkg" -e normal,build -i alsa-sys >&2 || true
        exit 1
    fi
done

step "cargo test (workspace)"
# The plugin library is loaded by path (as QEMU does): build it first.
cargo build --quiet -p backend-so
# The baseline tools were installed above: their test must run, not skip.
RINGCAST_BACKEND_SO=$PWD/target/debug/libringcast_backend.so RINGCAST_HARNESS_QUIET=1 \
    RINGCAST_BASELINE_TOOLS=required cargo test --workspace

step "fuzz targets: replay seeds, regressions and seeded random inputs (no fuzzer)"
fuzz/smoke.sh --replay-only

step "loom model of the ring protocol"
RUSTFLAGS="--cfg loom" cargo test --quiet -p shm-ring --test loom --release --target-dir target/loom

step "Miri (Tree Borrows) over the rings and the plugin's unit tests (skips without nightly Miri)"
scripts/miri.sh

step "done: all checks passed"
