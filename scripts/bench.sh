#!/usr/bin/env bash
# The benchmark harness: builds the release binaries it runs (ringcastd, ringcast,
# fake-qemu, the plugin, the harness itself), then runs ringcast-bench with the arguments
# given (`scripts/bench.sh --help` lists the scenarios and options).
#
#   scripts/bench.sh                 # scenarios A-E, about 12 minutes
#   scripts/bench.sh --quick c       # one scenario, a setup check
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --release --workspace
exec target/release/ringcast-bench "$@"
