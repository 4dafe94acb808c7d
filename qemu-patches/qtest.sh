#!/usr/bin/env bash
# Run the series' own QEMU test (tests/qtest/backend-plugin-test, patch 0007) against the
# patched QEMU that build.sh built.
#
# Usage: qemu-patches/qtest.sh [PATH/TO/build/qemu-system-x86_64]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${1:-$("$here/build.sh" | tail -n 1)}
build=$(cd "$(dirname "$bin")" && pwd)
cd "$build"
QTEST_QEMU_BINARY=./qemu-system-x86_64 tests/qtest/backend-plugin-test --tap -k
