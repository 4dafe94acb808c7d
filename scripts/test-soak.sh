#!/usr/bin/env bash
# Runs the workspace tests N times in a row, to find tests that fail only sometimes.
#
#   scripts/test-soak.sh N [--release] [--hog]
#
#   --release  the release profile (default: debug, as scripts/test.sh runs them)
#   --hog      two busy loops run alongside (a loaded 2-core machine)
#
# The binaries are built once before the first run; every run's output is kept in
# target/soak/<profile>-<run>.log and each failed run's failing tests are listed. The
# real-QEMU tests run when RINGCAST_QEMU and RINGCAST_GUEST_DIR are set (as scripts/test.sh
# sets them); otherwise they are skipped. Ends with "N passed, M failed" and exits non-zero
# when any run failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
runs=""
profile=debug
hog=0
for arg in "$@"; do
    case "$arg" in
        --release) profile=release ;;
        --hog) hog=1 ;;
        -h|--help) usage; exit 0 ;;
        ''|*[!0-9]*) echo "test-soak.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
        *) runs=$arg ;;
    esac
done
if [ -z "$runs" ] || [ "$runs" -lt 1 ]; then
    echo "test-soak.sh: how many runs? (for example: scripts/test-soak.sh 10)" >&2
    exit 2
fi

cargo_profile=()
[ "$profile" = release ] && cargo_profile=(--release)

if [ -z "${RINGCAST_QEMU:-}" ] || [ -z "${RINGCAST_GUEST_DIR:-}" ]; then
    echo "test-soak.sh: RINGCAST_QEMU/RINGCAST_GUEST_DIR not set: the real-QEMU tests are skipped" >&2
    export RINGCAST_SKIP_QEMU=1
fi

echo "==> building the workspace and its tests ($profile)" >&2
cargo build --quiet --workspace "${cargo_profile[@]}"
cargo test --quiet --workspace "${cargo_profile[@]}" --no-run
export RINGCAST_BACKEND_SO=$PWD/target/$profile/libringcast_backend.so
export RINGCAST_HARNESS_QUIET=1

hogs=()
stop_hogs() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_hogs EXIT
if [ "$hog" = 1 ]; then
    for _ in 1 2; do
        ( while :; do :; done ) &
        hogs+=("$!")
    done
    echo "==> two busy loops running alongside (pids ${hogs[*]})" >&2
fi

mkdir -p target/soak
passed=0
failed=0
for i in $(seq 1 "$runs"); do
    log=target/soak/$profile-$i.log
    start=$(date +%s)
    # --no-fail-fast: every test binary runs, so one run shows every failing test.
    if cargo test --workspace --no-fail-fast "${cargo_profile[@]}" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "run $i/$runs: passed in $(( $(date +%s) - start )) s" >&2
    else
        failed=$((failed + 1))
        echo "run $i/$runs: FAILED in $(( $(date +%s) - start )) s ($log):" >&2
        grep -E '^    [A-Za-z0-9_:]+$|^test .* FAILED$|^error: test failed' "$log" | sed 's/^/    /' >&2 || true
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
