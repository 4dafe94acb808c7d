#!/usr/bin/env bash
# The ringcast demo: a tiny Linux guest boots under the patched QEMU with its serial console,
# its virtio console and its sound card on the ringcast plugin; ringcastd collects them and
# the ringcast client shows the console live here and plays the guest's tone (or writes it to
# a WAV file where there is no sound device). When the guest powers off, a summary follows
# and everything started here is stopped.
#
#   scripts/demo.sh              run it
#   scripts/demo.sh --keep       keep the working directory (journals, WAV, logs) afterwards
#
# First run: installs packages and builds QEMU (about 10-20 minutes, cached afterwards).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

keep=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "scripts/demo.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# npm for the browser client's page, unless a Node.js from elsewhere brought its own.
npm_pkg=()
command -v npm >/dev/null || npm_pkg=(npm)
scripts/install-build-deps.sh "${npm_pkg[@]}"
say "building the browser client's page (web/build.sh)"
web/build.sh >/dev/null
say "building the patched QEMU and the test guest (cached after the first run)"
qemu=$(qemu-patches/build.sh | tail -n1)
guest=$(testbed/guest/build.sh | tail -n1)
say "building ringcastd, the ringcast client and the plugin library"
cargo build --release --quiet -p backend-so -p sidecar -p client
bin=$root/target/release
so=$bin/libringcast_backend.so

work=$(mktemp -d /tmp/ringcast-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private client configuration, so the demo's throw-away server identity is not pinned in
# the user's own known_hosts.
export XDG_CONFIG_HOME=$work/config XDG_STATE_HOME=$work/client-state
client=("$bin/ringcast" --known-hosts "$work/known_hosts" --identity-dir "$work/identity")

say "starting ringcastd (journals in $work/state)"
# Port 0: the kernel picks a free UDP port, and ringcastd names it on its readiness line
# (`ready quic=ADDR socket=PATH`), printed once QEMU can register and clients can connect.
# --web: the same port number also serves the browser client (docs/web.md).
"$bin/ringcastd" --socket "$work/run/ringcastd.sock" --state-dir "$work/state" \
    --listen 127.0.0.1:0 --web >"$work/ringcastd.ready" 2>"$work/ringcastd.log" &
pids+=($!)
for _ in $(seq 600); do
    grep -q '^ready ' "$work/ringcastd.ready" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
done
ready=$(grep -m1 '^ready ' "$work/ringcastd.ready" || true)
[ -n "$ready" ] || { echo "ringcastd did not start; its log:" >&2; cat "$work/ringcastd.log" >&2; exit 1; }
quic=${ready#*quic=}
export RINGCAST_SERVER=${quic%% *}
# The client asks this ringcastd's control socket to authorize it on first use (as root).
export RINGCAST_CONTROL_SOCKET=$work/run/ringcastd.ctl
say "ringcastd is ready: QUIC on $RINGCAST_SERVER"
# A browser link for this client's identity (which the client authorizes on first use):
# single-use, 10 minutes to open it. The page's self-signed certificate gets the browser's
# warning (docs/web.md says why and what to do); WebTransport is pinned by the link's hash.
if link=$("${client[@]}" web-link 2>/dev/null); then
    say "the same, in a browser on this host: $link"
fi

say "booting the guest: serial0 (16550), hvc0 (virtconsole), snd0 (intel-hda) on the plugin"
plugin_config="socket=$work/run/ringcastd.sock"
"$qemu" -M q35 -accel tcg -nodefaults -display none -no-reboot -m 256 \
    -L /usr/share/seabios -L /usr/share/qemu -name guest=demo \
    -kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz" \
    -append "console=ttyS1 quiet loglevel=3 panic=-1 rc.scenario=demo rc.tone_hz=440 rc.tone_ms=2000 rc.rate=44100" \
    -chardev "plugin,id=serial0,path=$so,config=$plugin_config" -serial chardev:serial0 \
    -chardev "file,id=log,path=$work/guest-init.log" -serial chardev:log \
    -device virtio-serial-pci \
    -chardev "plugin,id=hvc0,path=$so,config=$plugin_config" -device virtconsole,chardev=hvc0 \
    -audiodev "plugin,id=snd0,path=$so,config=$plugin_config" -device intel-hda -device hda-output,audiodev=snd0 \
    </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!
pids+=($qemu_pid)

for _ in $(seq 200); do
    "${client[@]}" list 2>/dev/null | grep -q 'demo/snd0' && break
    sleep 0.1
done
"${client[@]}" list

if [ -e /dev/snd/pcmC0D0p ] || [ -n "${PULSE_SERVER:-}" ]; then
    say "playing demo/snd0 on this machine's sound output"
    "${client[@]}" play demo/snd0 >"$work/play.log" 2>&1 &
else
    say "no sound device here: writing demo/snd0 to $work/demo-tone.wav"
    "${client[@]}" play demo/snd0 --wav "$work/demo-tone.wav" >"$work/play.log" 2>&1 &
fi
play_pid=$!
pids+=($play_pid)

say "demo/serial0, live (the guest's kernel log, a countdown, then the tone):"
"${client[@]}" capture demo/serial0 -o "$work/serial0.log" --follow 2>"$work/capture.log" &
capture_pid=$!
pids+=($capture_pid)
touch "$work/serial0.log"
tail -n +1 -f --pid="$capture_pid" "$work/serial0.log" &
pids+=($!)

status=0
wait "$qemu_pid" || status=$?
sleep 1
kill -INT "$capture_pid" "$play_pid" 2>/dev/null || true
wait "$capture_pid" 2>/dev/null || true
wait "$play_pid" 2>/dev/null || true

echo
say "the guest powered off (QEMU exit status $status); summary:"
echo "--- demo/hvc0 (the virtio console) ---"
"${client[@]}" capture demo/hvc0 -o "$work/hvc0.log" >/dev/null 2>&1 && cat "$work/hvc0.log"
echo "--- ringcastd stats ---"
"$bin/ringcastd" stats --socket "$work/run/ringcastd.sock"
echo "--- audio ---"
cat "$work/play.log"
if [ -f "$work/demo-tone.wav" ]; then
    python3 - "$work/demo-tone.wav" <<'EOF'
import struct, sys, wave
w = wave.open(sys.argv[1])
rate, ch, n = w.getframerate(), w.getnchannels(), w.getnframes()
s = struct.unpack("<%dh" % (n * ch), w.readframes(n))[::ch]
loud = [i for i, v in enumerate(s) if abs(v) > 1000]
if not loud:
    print(f"WAV: {n / rate:.2f} s at {rate} Hz, {ch} channels, silent")
else:
    a, b = loud[0], loud[-1]
    x = sum(1 for i in range(a, b) if (s[i] < 0) != (s[i + 1] < 0))
    print(f"WAV: {n / rate:.2f} s at {rate} Hz x {ch} channels; tone {(b - a) / rate:.2f} s "
          f"at {x / 2 / ((b - a) / rate):.1f} Hz")
EOF
fi
echo "--- QEMU's log (the plugin reports its drops here) ---"
cat "$work/qemu.log"
exit "$status"
