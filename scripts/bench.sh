#!/usr/bin/env bash
# The benchmark harness: builds the release binaries it runs (ringcastd, ringcast,
# fake-qemu, the plugin, the harness itself), then runs ringcast-bench with the arguments
# given (`scripts/bench.sh --help` lists the scenarios and options).
#
#   scripts/bench.sh                 # scenarios A-E and web-latency, about 13 minutes
#   scripts/bench.sh --quick c       # one scenario, a setup check
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --release --workspace
# The web-latency scenario serves the browser page (web/build.sh needs npm; without it that
# scenario stops with ringcastd's message that the page's files are missing).
if command -v npm >/dev/null; then web/build.sh >/dev/null; fi
exec target/release/ringcast-bench "$@"
