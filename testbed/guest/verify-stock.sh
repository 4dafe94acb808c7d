#!/bin/bash
# End-to-end check of the test guest with a plain QEMU (file/socket/wav
# backends, no ringcast involved): console payloads byte for byte, tone
# frequency, echo over a socket, and that every run powers off by itself.
#
#   verify-stock.sh [--qemu BIN] [--big] [--keep DIR]
#
# --big adds the 1 MiB ttyS0 + 16 MiB hvc0 console run and reports its time.
# Needs python3 (WAV analysis and the echo client).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
qemu=${QEMU:-qemu-system-x86_64}
big=0
keep=
while (($#)); do
	case "$1" in
	--qemu) qemu=$2; shift 2 ;;
	--big) big=1; shift ;;
	--keep) keep=$2; shift 2 ;;
	*) echo "usage: verify-stock.sh [--qemu BIN] [--big] [--keep DIR]" >&2; exit 2 ;;
	esac
done
if [[ -n $keep ]]; then
	work=$keep
	mkdir -p "$work"
else
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi

fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

"$here/selftest.sh" >"$work/selftest.log" 2>&1 && ok "rcguest self-test" || { cat "$work/selftest.log"; bad "rcguest self-test"; }
guest=$("$here/build.sh" | tail -n1)
gcc -O2 -o "$work/rcguest" "$here"/*.c -lm

run() { # name scenario-and-params...
	local name=$1
	shift
	if "$here/run-stock.sh" --qemu "$qemu" --guest "$guest" --out "$work/$name" "$@" 2>"$work/$name.err"; then
		ok "$name: powered off by itself after $(cat "$work/$name/elapsed") s"
	else
		tail -n 5 "$work/$name.err"
		bad "$name: run failed (log: $work/$name/ttyS1.log)"
	fi
}

same() { # label seed bytes file
	"$work/rcguest" gen --seed "$2" --bytes "$3" --out "$work/ref" 2>/dev/null
	if cmp -s "$work/ref" "$4"; then
		ok "$1: $3 bytes equal to the generator (seed $2)"
	else
		bad "$1: $(stat -c %s "$4" 2>/dev/null || echo 0) bytes captured, differs from the generator ($3 bytes, seed $2)"
	fi
}

freq() { # label wav expected_hz
	local got
	got=$(python3 - "$2" <<'PY'
import struct, sys, wave
w = wave.open(sys.argv[1])
rate, ch = w.getframerate(), w.getnchannels()
raw = w.readframes(w.getnframes())
s = struct.unpack("<%dh" % (len(raw) // 2), raw)[::ch]
loud = [i for i, v in enumerate(s) if abs(v) > 1000]
if len(loud) < rate // 10:
    print("silent")
    sys.exit()
seg = s[loud[0]:loud[-1]]
up = [i for i in range(1, len(seg)) if seg[i - 1] < 0 <= seg[i]]
print("%.2f %.3f %.3f" % ((len(up) - 1) * rate / (up[-1] - up[0]), len(seg) / rate,
                          max(abs(v) for v in seg) / 32768))
PY
	)
	read -r hz secs peak <<<"$got"
	if [[ $hz != silent ]] && awk -v a="$hz" -v b="$3" 'BEGIN { exit !(a > b * 0.99 && a < b * 1.01) }'; then
		ok "$1: ${hz} Hz (want $3), ${secs} s of sound, peak ${peak} of full scale"
	else
		bad "$1: measured '$got', want $3 Hz"
	fi
}

run console console rc.seed=11 rc.hvc_seed=12 rc.serial_bytes=262147 rc.hvc_bytes=4194309
same "console ttyS0" 11 262147 "$work/console/ttyS0.out"
same "console hvc0" 12 4194309 "$work/console/hvc0.out"

run tone-ac97 tone rc.tone_hz=1000 rc.tone_ms=1500 rc.rate=48000
freq "tone ac97" "$work/tone-ac97/audio.wav" 1000
run tone-hda --audio hda tone rc.tone_hz=440 rc.tone_ms=1500 rc.rate=44100
freq "tone intel-hda" "$work/tone-hda/audio.wav" 440

# echo: a client on ttyS0's unix socket waits for the ready line, then talks.
"$here/run-stock.sh" --qemu "$qemu" --guest "$guest" --out "$work/echo" --ttyS0-socket \
	echo rc.echo_bytes=100000 2>"$work/echo.err" &
qpid=$!
if python3 - "$work/echo/ttyS0.sock" <<'PY'; then
import os, socket, sys, time
path = sys.argv[1]
for _ in range(400):
    if os.path.exists(path):
        break
    time.sleep(0.05)
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.settimeout(60)
buf = b""
def until(tok):
    global buf
    while tok not in buf:
        d = s.recv(4096)
        if not d:
            sys.exit("EOF waiting for %r (have %r)" % (tok, buf[-80:]))
        buf += d
    i = buf.index(tok) + len(tok)
    r, buf = buf[:i], buf[i:]
    return r
until(b"rc-echo-ready\n")
for m in [b"hello\n", b"\x00\x01\xfe\xff raw bytes \r\n", b"x" * 1000 + b"\n", b"quit\n"]:
    s.sendall(m)
    r = until(b"\n")
    if r != b"got:" + m:
        sys.exit("sent %r, got %r" % (m[:40], r[:40]))
PY
	ok "echo: replies over the ttyS0 socket matched"
else
	bad "echo: client failed"
fi
wait "$qpid" && ok "echo: powered off by itself after $(cat "$work/echo/elapsed") s" || bad "echo: run failed"

run idle idle rc.idle_s=2

if ((big)); then
	run big console rc.seed=21 rc.hvc_seed=22 rc.serial_bytes=1048576 rc.hvc_bytes=16777216
	same "big ttyS0" 21 1048576 "$work/big/ttyS0.out"
	same "big hvc0" 22 16777216 "$work/big/hvc0.out"
	grep '^rc: \[' "$work/big/ttyS1.log" | sed 's/^/     /'
fi

if ((fail)); then
	echo "verify-stock: FAILED (captures in $work${keep:+, kept})"
	exit 1
fi
echo "verify-stock: all passed with $("$qemu" --version | head -n1)"
