#!/bin/sh
# Install the baseline tools the benchmarks compare ringcast against, from Debian's packages:
# socat, openssl, stunnel4, openssh-server, openssh-client, iperf3; for scenario F espeak-ng (the
# speech sample) and GStreamer (gst-launch-1.0; Opus, RTP, rtpjitterbuffer, UDP: plugins-base and
# plugins-good).
#
# Only missing packages are installed. No service is left running or enabled: the benchmarks start
# sshd (and anything else they need) themselves, in the foreground, with a throwaway configuration
# and host key, only for the length of a run (see README.md and benches/src/baselines.rs).
set -eu

export DEBIAN_FRONTEND=noninteractive

# package:command that proves the package is there
want="socat:socat openssl:openssl stunnel4:stunnel4 openssh-server:sshd openssh-client:ssh iperf3:iperf3 espeak-ng:espeak-ng gstreamer1.0-tools:gst-launch-1.0"

missing=""
for pair in $want; do
    pkg=${pair%%:*}
    cmd=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
        missing="$missing $pkg"
    fi
done
# GStreamer's elements, by the plugin package that has them (gst-inspect-1.0 comes with the tools).
for pair in gstreamer1.0-plugins-base:opusenc gstreamer1.0-plugins-good:rtpjitterbuffer; do
    pkg=${pair%%:*}
    element=${pair#*:}
    if ! gst-inspect-1.0 "$element" >/dev/null 2>&1; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "baselines: all tools present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

echo "baselines: installing$missing"

# Keep package scripts from starting or enabling services (ssh, stunnel4, iperf3) while installing:
# policy-rc.d answering 101 tells invoke-rc.d "not allowed". Remove it again afterwards unless it
# was there before.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    if [ "$made_policy" = 1 ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT INT TERM

$SUDO apt-get update -qq
# iperf3 asks whether to start a daemon; answer no.
echo "iperf3 iperf3/start_daemon boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing

# The packages enable their units for the next boot: disable them (works without a running
# systemd too) and, where systemd runs, stop anything that started anyway.
if command -v systemctl >/dev/null 2>&1; then
    now=
    [ -d /run/systemd/system ] && now=--now
    for unit in ssh.service ssh.socket stunnel4.service stunnel.target iperf3.service; do
        $SUDO systemctl disable $now "$unit" >/dev/null 2>&1 || true
    done
fi

echo "baselines: done"
