#!/usr/bin/env bash
# Run QEMU's scripts/checkpatch.pl over every patch of the series; fail on any error or
# warning.
#
# Usage: qemu-patches/checkpatch.sh [QEMU_SOURCE_DIR]
#
# Without an argument it uses the QEMU source that build.sh unpacked for this series (it
# runs build.sh, which only prints the path when the build is cached).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ge 1 ]; then
    src=$1
else
    bin=$("$here/build.sh" | tail -n 1)
    src=$(cd "$(dirname "$bin")/.." && pwd)
fi
checkpatch=$src/scripts/checkpatch.pl
[ -f "$checkpatch" ] || { echo "checkpatch.sh: no $checkpatch" >&2; exit 1; }

shopt -s nullglob
patches=("$here"/[0-9][0-9][0-9][0-9]-*.patch)
shopt -u nullglob
[ "${#patches[@]}" -gt 0 ] || { echo "checkpatch.sh: no patches in $here" >&2; exit 1; }

failed=0
for p in "${patches[@]}"; do
    # checkpatch.pl exits 0 with warnings; its summary line counts both.
    out=$(cd "$src" && perl "$checkpatch" --no-tree --color=never "$p" 2>&1) || true
    summary=$(printf '%s\n' "$out" | grep -E '^total: [0-9]+ errors, [0-9]+ warnings' || true)
    if [ "$summary" = "" ]; then
        printf '%s\n' "$out" >&2
        echo "checkpatch.sh: ${p##*/}: no summary from checkpatch.pl" >&2
        failed=1
    elif ! printf '%s\n' "$summary" | grep -qE '^total: 0 errors, 0 warnings'; then
        printf '%s\n' "$out" >&2
        echo "checkpatch.sh: ${p##*/}: $summary" >&2
        failed=1
    else
        echo "checkpatch.sh: ${p##*/}: $summary" >&2
    fi
done
exit "$failed"
