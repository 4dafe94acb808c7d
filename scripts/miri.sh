#!/bin/sh
# Miri (Tree Borrows) over the ring and plugin unit tests and the rings' model test, with
# rings in heap memory (Miri cannot run memfd_create or mmap): the raw-pointer accesses,
# the atomic copies of the data area and the ABI table copies are checked for undefined
# behaviour. Needs a nightly toolchain with Miri (`rustup +nightly component add miri`);
# without one it says so and skips.
#
#   scripts/miri.sh            # the whole set
#   scripts/miri.sh shared     # extra arguments go to the test binaries' filter
set -eu
cd "$(dirname "$0")/.."
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: skipped: no nightly toolchain with Miri here (rustup +nightly component add miri)"
    exit 0
fi
# Isolation off: the plugin reads the clock and makes eventfds for its doorbells.
# Weak-memory emulation off: it cannot represent the ring copies' mix of byte and word
# atomics on one location (Miri stops with "partially overlapping store buffer" even in a
# single thread). Tree Borrows and data-race detection stay on.
export MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-disable-isolation -Zmiri-disable-weak-memory-emulation ${MIRIFLAGS:-}"
# The model test is a property test: a few cases are enough to exercise every path.
export PROPTEST_CASES="${PROPTEST_CASES:-4}"
cargo +nightly miri test -p shm-ring --lib --test model -- "$@"
cargo +nightly miri test -p backend-so --lib -- "$@"
