#!/bin/bash
# Host-side self-test of rcguest: builds it natively and checks the generator
# against pinned vectors and an independent Python implementation of the
# stream, plus its sha256 report line against sha256sum.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cc=${CC:-gcc}
"$cc" -O2 -Wall -Wextra -Werror -o "$tmp/rcguest" "$here"/*.c -lm
fail=0
check() { # name expected actual
	if [[ "$2" == "$3" ]]; then
		echo "ok   $1"
	else
		echo "FAIL $1: expected $2, got $3"
		fail=1
	fi
}

# Pinned vectors (also computed by the Python reference below).
check "seed 1, 20 bytes" 1ddd6c894bcee4471d6579e0a8a6cfab571f73eb \
	"$("$tmp/rcguest" gen --seed 1 --bytes 20 --out - 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
check "seed 0 (default state), 20 bytes" 7a48219ae2b3830d679dfef1794cc454780e7a00 \
	"$("$tmp/rcguest" gen --seed 0 --bytes 20 --out - 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
check "seed 0xdeadbeef, 13 bytes" daba81b651121546a6f23e26d8 \
	"$("$tmp/rcguest" gen --seed 0xdeadbeef --bytes 13 --out - 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
check "zero bytes" "" "$("$tmp/rcguest" gen --seed 5 --bytes 0 --out - 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"

# Independent reference: Python implementation of the same stream.
ref() { # seed bytes file
	python3 - "$1" "$2" "$3" <<'PY'
import sys
seed, n, path = int(sys.argv[1], 0), int(sys.argv[2]), sys.argv[3]
M = (1 << 64) - 1
x = seed or 0x9E3779B97F4A7C15
out = bytearray()
while len(out) < n:
    x ^= x >> 12
    x ^= (x << 25) & M
    x ^= x >> 27
    out += ((x * 0x2545F4914F6CDD1D) & M).to_bytes(8, "little")
open(path, "wb").write(out[:n])
PY
}
for spec in "1 1000003 4099" "42 65536 65536" "7 8191 8" "0 1 1"; do
	set -- $spec
	ref "$1" "$2" "$tmp/ref"
	"$tmp/rcguest" gen --seed "$1" --bytes "$2" --chunk "$3" --out "$tmp/out" 2>"$tmp/report"
	check "seed $1, $2 bytes, chunk $3 equals reference" "$(sha256sum <"$tmp/ref" | cut -d' ' -f1)" \
		"$(sha256sum <"$tmp/out" | cut -d' ' -f1)"
	check "report line for seed $1" \
		"rcguest: wrote $2 bytes to $tmp/out sha256=$(sha256sum <"$tmp/ref" | cut -d' ' -f1)" \
		"$(cat "$tmp/report")"
done

# echo: line-wise answers, stops at "quit".
check "echo replies" "$(printf 'rc-echo-ready\ngot:hello\ngot:quit\n')" \
	"$(printf 'hello\nquit\nnot read\n' | "$tmp/rcguest" echo --dev - --count 100 2>/dev/null)"
check "echo stops at count" "$(printf 'rc-echo-ready\ngot:ab\ngot:c')" \
	"$(printf 'ab\ncdef' | "$tmp/rcguest" echo --dev - --count 4 2>/dev/null)"

# The guest build must link statically.
if "$cc" -static -O2 -o "$tmp/rcguest.static" "$here"/*.c -lm 2>"$tmp/static.log"; then
	echo "ok   static link"
else
	cat "$tmp/static.log"
	check "static link" ok failed
fi

if ((fail)); then
	echo "selftest FAILED"
	exit 1
fi
echo "selftest passed"
