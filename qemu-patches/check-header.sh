#!/usr/bin/env bash
# Fail when the copy of include/qemu/backend-plugin.h that patch 0001 adds to QEMU differs
# from qemu-patches/include/qemu/backend-plugin.h, the ABI's single source of truth.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
header=include/qemu/backend-plugin.h
shopt -s nullglob
patch_files=("$here"/0001-*.patch)
shopt -u nullglob
[ "${#patch_files[@]}" -eq 1 ] || { echo "check-header.sh: expected one 0001-*.patch" >&2; exit 1; }

# The header is a new file in the patch: take the '+' lines of its only hunk.
extracted=$(mktemp)
trap 'rm -f "$extracted"' EXIT
awk -v f="$header" '
    $0 == "diff --git a/" f " b/" f { infile = 1; next }
    infile && /^diff --git / { exit }
    infile && $0 == "-- " { exit }
    infile && /^@@ / { hunk = 1; next }
    infile && hunk && /^\+/ { print substr($0, 2) }
' "${patch_files[0]}" >"$extracted"

[ -s "$extracted" ] || { echo "check-header.sh: ${patch_files[0]##*/} does not add $header" >&2; exit 1; }
if ! cmp -s "$extracted" "$here/$header"; then
    echo "check-header.sh: $header in ${patch_files[0]##*/} differs from qemu-patches/$header:" >&2
    diff -u "$here/$header" "$extracted" >&2 || true
    exit 1
fi
echo "check-header.sh: ${patch_files[0]##*/} carries $header unchanged" >&2
