#!/usr/bin/env bash
# Smoke run of the fuzz targets.
#
#   fuzz/smoke.sh                  replay tests, then each target under libFuzzer for 20 s
#   fuzz/smoke.sh --seconds N      N seconds per target instead
#   fuzz/smoke.sh --replay-only    only the stable replay tests (no fuzzer; what CI runs)
#   fuzz/smoke.sh --no-install     do not install cargo-fuzz; skip the fuzzer if it is missing
#
# The replay tests (`cargo test` in fuzz/) run every target's body over its seeds and
# regression inputs plus seeded random inputs, on the stable toolchain. The fuzzer part
# needs cargo-fuzz (installed here when missing: about 1 minute) and runs on stable with
# `--sanitizer none`. Fuzzing starts from a copy of the seeds, so the checkout is not
# written to; a crash input is left in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds=20
fuzzer=1
install=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift ;;
        --replay-only) fuzzer=0 ;;
        --no-install) install=0 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "fuzz/smoke.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

targets=(ring_consumer_vs_hostile_producer ring_producer_vs_hostile_consumer handover_decode wire_decode plugin_abi_ops)
declare -A max_len=([ring_consumer_vs_hostile_producer]=512 [ring_producer_vs_hostile_consumer]=512
                    [handover_decode]=1200 [wire_decode]=4096 [plugin_abi_ops]=1024)

echo "==> fuzz replay tests (stable, no fuzzer)" >&2
cargo test --quiet --release

[ "$fuzzer" = 1 ] || exit 0

if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ "$install" = 0 ]; then
        echo "cargo-fuzz is not installed: skipping the fuzzer runs (drop --no-install to install it)" >&2
        exit 0
    fi
    echo "==> installing cargo-fuzz" >&2
    cargo install --quiet --locked cargo-fuzz
fi

echo "==> building the fuzz targets" >&2
cargo fuzz build --sanitizer none

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    echo "==> $t for ${seconds}s" >&2
    mkdir -p "$work/$t"
    cp seeds/"$t"/* regressions/"$t"/* "$work/$t"/ 2>/dev/null || true
    cargo fuzz run --sanitizer none "$t" "$work/$t" -- \
        -max_total_time="$seconds" -max_len="${max_len[$t]}" -print_final_stats=1 2>"$work/$t.log" \
        || { tail -n 60 "$work/$t.log" >&2; echo "fuzz/smoke.sh: $t failed" >&2; exit 1; }
    grep -E '^#[0-9]+ +DONE|stat::number_of_executed_units' "$work/$t.log" >&2 || true
done
echo "==> fuzz smoke run passed" >&2
