#!/bin/bash
# Boot the test guest under TCG with a given QEMU (default: qemu-system-x86_64
# from PATH) and plain file backends, for checks and as a baseline.
#
#   run-stock.sh [options] SCENARIO [rc.param=value ...]
#
# options:
#   --qemu BIN        QEMU binary (env QEMU also works)
#   --out DIR         where the captures go (default: ./rc-run); files:
#                       ttyS0.out  hvc0.out  ttyS1.log  audio.wav  qemu.log
#   --guest DIR       guest directory with vmlinuz and initrd.gz
#                     (default: the output of build.sh)
#   --audio ac97|hda  sound card (default ac97)
#   --ttyS0-socket    attach ttyS0 to a unix socket server DIR/ttyS0.sock
#                     (wait=off) instead of a file; guest output is still
#                     logged to ttyS0.out (needed for the echo scenario)
#   --timeout S       kill QEMU after S seconds (default 600)
#   --append STR      extra kernel command line words
#   --                rest of the arguments go to QEMU
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
qemu=${QEMU:-qemu-system-x86_64}
out=./rc-run
guest=
audio=ac97
sock=0
timeout_s=600
extra_append=
qemu_extra=()

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}
while (($#)); do
	case "$1" in
	--qemu) qemu=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--guest) guest=$2; shift 2 ;;
	--audio) audio=$2; shift 2 ;;
	--ttyS0-socket) sock=1; shift ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--append) extra_append+=" $2"; shift 2 ;;
	-h | --help) usage ;;
	--) shift; break ;;
	-*) echo "run-stock.sh: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
(($#)) || usage
scenario=$1
shift
params=()
while (($#)) && [[ $1 != -- ]]; do
	params+=("$1")
	shift
done
[[ ${1:-} == -- ]] && shift
qemu_extra=("$@")

[[ -n $guest ]] || guest=$("$here/build.sh" | tail -n1)
[[ -s $guest/vmlinuz && -s $guest/initrd.gz ]] || {
	echo "run-stock.sh: no vmlinuz/initrd.gz in $guest" >&2
	exit 1
}
mkdir -p "$out"
rm -f "$out"/{ttyS0.out,hvc0.out,ttyS1.log,audio.wav,qemu.log,ttyS0.sock}

case "$audio" in
ac97) sound=(-device AC97,audiodev=snd0) ;;
hda) sound=(-device intel-hda -device hda-output,audiodev=snd0) ;;
*) echo "run-stock.sh: --audio must be ac97 or hda" >&2; exit 2 ;;
esac
if ((sock)); then
	s0=(-chardev "socket,id=s0,path=$out/ttyS0.sock,server=on,wait=off,logfile=$out/ttyS0.out")
else
	s0=(-chardev "file,id=s0,path=$out/ttyS0.out")
fi

append="console=ttyS1 quiet loglevel=3 panic=-1 rc.scenario=$scenario ${params[*]}$extra_append"
cmd=(
	"$qemu" -M q35 -accel tcg -nodefaults -display none -no-reboot -m 256
	-L /usr/share/seabios -L /usr/share/qemu
	-kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz" -append "$append"
	"${s0[@]}"
	-chardev "file,id=s1,path=$out/ttyS1.log"
	-serial chardev:s0 -serial chardev:s1
	-device virtio-serial-pci
	-chardev "file,id=hvc0,path=$out/hvc0.out"
	-device virtconsole,chardev=hvc0
	-audiodev "wav,id=snd0,path=$out/audio.wav"
	"${sound[@]}"
	"${qemu_extra[@]}"
)
printf '%q ' "${cmd[@]}" >"$out/cmdline.txt"
echo >>"$out/cmdline.txt"
echo "run-stock.sh: $(cat "$out/cmdline.txt")" >&2

t0=$(date +%s.%N)
rc=0
timeout -k 5 "$timeout_s" "${cmd[@]}" >"$out/qemu.log" 2>&1 </dev/null || rc=$?
t1=$(date +%s.%N)
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
echo "$elapsed" >"$out/elapsed"
if ((rc == 124)); then
	echo "run-stock.sh: QEMU timed out after $timeout_s s" >&2
elif ((rc)); then
	echo "run-stock.sh: QEMU exited with $rc; see $out/qemu.log" >&2
fi
grep -q "^rc: scenario $scenario done" "$out/ttyS1.log" 2>/dev/null ||
	{ echo "run-stock.sh: guest did not report 'rc: scenario $scenario done'" >&2; ((rc)) || rc=1; }
echo "run-stock.sh: $scenario finished in $elapsed s (exit $rc); captures in $out" >&2
exit "$rc"
