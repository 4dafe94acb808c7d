#!/bin/sh
# /init of the ringcast test guest (busybox sh, PID 1).
#
# ttyS0 and hvc0 carry only test payload; everything this script says goes to
# ttyS1, which is also the kernel console (console=ttyS1). The scenario comes
# from the kernel command line (rc.scenario=... and friends, see README.md);
# dotted parameters are not passed to init, so they are read from /proc/cmdline.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp
exec </dev/null >/dev/ttyS1 2>&1

up() { read -r t _ </proc/uptime; echo "$t"; }
log() { echo "rc: [$(up)] $*"; }
failed=
fail() { log "ERROR: $*"; failed="$failed $*;"; }

finish() {
	log "powering off"
	if [ -z "$failed" ]; then
		echo "rc: scenario $scenario done"
	else
		echo "rc: scenario $scenario failed:$failed"
	fi
	poweroff -f
	# Only reached if poweroff failed: panic, so -no-reboot ends QEMU.
	echo c >/proc/sysrq-trigger
	sleep 3600
}

# ---- parameters -------------------------------------------------------------
scenario=
seed=1
hvc_seed=
serial_bytes=1048576
hvc_bytes=16777216
tone_hz=440
tone_ms=2000
rate=48000
echo_bytes=64
echo_dev=/dev/ttyS0
idle_s=5
record_ms=3000
dsp=/dev/dsp
volume=100
for w in $(cat /proc/cmdline); do
	case "$w" in
	rc.scenario=*) scenario=${w#*=} ;;
	rc.seed=*) seed=${w#*=} ;;
	rc.hvc_seed=*) hvc_seed=${w#*=} ;;
	rc.serial_bytes=*) serial_bytes=${w#*=} ;;
	rc.hvc_bytes=*) hvc_bytes=${w#*=} ;;
	rc.tone_hz=*) tone_hz=${w#*=} ;;
	rc.tone_ms=*) tone_ms=${w#*=} ;;
	rc.rate=*) rate=${w#*=} ;;
	rc.echo_bytes=*) echo_bytes=${w#*=} ;;
	rc.echo_dev=*) echo_dev=${w#*=} ;;
	rc.idle_s=*) idle_s=${w#*=} ;;
	rc.record_ms=*) record_ms=${w#*=} ;;
	rc.dsp=*) dsp=${w#*=} ;;
	rc.volume=*) volume=${w#*=} ;;
	esac
done
[ -n "$hvc_seed" ] || hvc_seed=$seed

log "init start, kernel $(uname -r), scenario '${scenario}'"

# ---- modules (order resolved from modules.dep at build time) ----------------
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$m.ko" || fail "insmod $m"
done </etc/rc-modules
log "modules loaded"

# Wait for a device node; virtio console ports appear asynchronously.
wait_dev() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		if [ "$i" -gt 200 ]; then
			fail "$1 did not appear"
			return 1
		fi
		sleep 0.05
	done
}

# ---- scenarios --------------------------------------------------------------
run_console() {
	st=0
	wait_dev /dev/ttyS0 || st=1
	wait_dev /dev/hvc0 || st=1
	log "console: start ttyS0 $serial_bytes bytes seed $seed, hvc0 $hvc_bytes bytes seed $hvc_seed"
	# Each writer reports its own finish time; the exit codes come back via wait.
	(rcguest gen --seed "$seed" --bytes "$serial_bytes" --out /dev/ttyS0 && log "console: ttyS0 done") &
	p1=$!
	(rcguest gen --seed "$hvc_seed" --bytes "$hvc_bytes" --out /dev/hvc0 && log "console: hvc0 done") &
	p2=$!
	wait "$p1" || st=1
	wait "$p2" || st=1
	[ "$st" = 0 ] || fail "console writers failed"
}

run_tone() {
	wait_dev "$dsp" || return 1
	log "tone: start $tone_hz Hz $tone_ms ms rate $rate on $dsp"
	rcguest tone --freq "$tone_hz" --ms "$tone_ms" --rate "$rate" --dev "$dsp" \
		${volume:+--volume "$volume"} ||
		fail "tone failed"
	log "tone: finished"
}

# Records the sound card's capture side (what `ringcast mic` sends) for rc.record_ms at
# rc.rate; rcguest reports the frequency it measured.
run_record() {
	wait_dev "$dsp" || return 1
	log "record: start $record_ms ms rate $rate on $dsp"
	rcguest record --ms "$record_ms" --rate "$rate" --dev "$dsp" \
		${volume:+--volume "$volume"} ||
		fail "record failed"
	log "record: finished"
}

run_echo() {
	wait_dev "$echo_dev" || return 1
	log "echo: start on $echo_dev for $echo_bytes bytes"
	rcguest echo --dev "$echo_dev" --count "$echo_bytes" || fail "echo failed"
	log "echo: finished"
}

# hvc0 written without end while a heartbeat ticks on ttyS1 every 0.2 s for rc.idle_s
# seconds: a host that stops reading hvc0 must not stop the guest.
run_flood() {
	wait_dev /dev/hvc0 || return 1
	(while :; do rcguest gen --seed "$hvc_seed" --bytes 1048576 --out /dev/hvc0 || sleep 0.1; done) &
	flooder=$!
	log "flood: start on hvc0, heartbeat for $idle_s s"
	i=0
	end=$((idle_s * 5))
	while [ "$i" -lt "$end" ]; do
		i=$((i + 1))
		log "heartbeat $i"
		sleep 0.2
	done
	kill "$flooder" 2>/dev/null
	log "flood: finished"
}

# A human-readable tour for the demo: the kernel's boot log over the serial line, a line on
# the virtio console, a countdown, the tone, a goodbye.
run_demo() {
	wait_dev /dev/ttyS0 || return 1
	wait_dev /dev/hvc0 || return 1
	{
		echo "=== ringcast demo guest: $(uname -sr), up $(up) s ==="
		echo "--- the guest kernel's boot log (dmesg), over the emulated 16550 ---"
		dmesg | head -n 30
		echo "--- $(grep -m1 'model name' /proc/cpuinfo)"
		echo "--- $(head -n1 /proc/meminfo)"
	} >/dev/ttyS0
	echo "hello from hvc0, the virtio console of the same guest" >/dev/hvc0
	for i in 3 2 1; do
		echo "a ${tone_hz} Hz tone plays in $i s..." >/dev/ttyS0
		sleep 1
	done
	run_tone
	echo "=== demo guest done, powering off ===" >/dev/ttyS0
	sleep 1
}

case "$scenario" in
demo) run_demo ;;
console) run_console ;;
tone) run_tone ;;
record) run_record ;;
all)
	run_console
	run_tone
	;;
echo) run_echo ;;
flood) run_flood ;;
idle)
	log "idle: sleeping $idle_s s"
	sleep "$idle_s"
	;;
*)
	fail "unknown or missing rc.scenario='$scenario'"
	echo "rc: scenarios: demo console tone record all echo flood idle" \
		"(parameters: rc.seed rc.hvc_seed rc.serial_bytes rc.hvc_bytes rc.tone_hz" \
		"rc.tone_ms rc.rate rc.echo_bytes rc.echo_dev rc.idle_s rc.dsp rc.volume" \
		"rc.record_ms)"
	;;
esac
finish
