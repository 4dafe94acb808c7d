//! The `ringcast` binary against ringcastd's QUIC server on loopback, with fake QEMU
//! devices (shared-memory rings, as sidecar/tests do): capture with resume, play to WAV,
//! QMP, the interactive console driven through tmux, capture and console started with
//! --wait before their device exists, the list and stats tables and their JSON, and
//! `ringcastd stats` beside `ringcast stats`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sidecar::net::{NetConfig, NetServer};
use sidecar::Daemon;
use testbed::kit::{config, sha, stream, wait_until, FakeAudio, FakeConsole, Ringcastd};

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    dir: tempfile::TempDir,
    rt: Option<tokio::runtime::Runtime>,
    daemon: Option<Daemon>,
    server: Option<NetServer>,
    addr: String,
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let daemon = Daemon::start(cfg.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = {
            let _g = rt.enter();
            NetServer::start(
                daemon.handle(),
                NetConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    identity_dir: cfg.state_dir.clone(),
                    authorized_clients: dir.path().join("authorized_clients"),
                    client_ca: None,
                    limits: Default::default(),
                },
            )
            .unwrap()
        };
        let addr = server.local_addr().to_string();
        Env {
            dir,
            rt: Some(rt),
            daemon: Some(daemon),
            server: Some(server),
            addr,
        }
    }

    fn socket(&self) -> PathBuf {
        config(self.dir.path()).socket
    }

    /// The ringcast command with this test's server, known-hosts file and home.
    fn ringcast(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ringcast"));
        self.isolate(&mut c);
        c.args(["--server", &self.addr]);
        c
    }

    fn isolate(&self, c: &mut Command) {
        let home = self.dir.path().join("home");
        c.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env(
                "RINGCAST_CONTROL_SOCKET",
                config(self.dir.path()).control_socket,
            )
            .env_remove("RINGCAST_SERVER");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let (Some(rt), Some(server)) = (self.rt.take(), self.server.take()) {
            rt.block_on(server.shutdown());
        }
        if let Some(d) = self.daemon.take() {
            d.shutdown();
        }
    }
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "ringcast failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn capture_writes_the_exact_bytes_and_resume_appends_the_rest() {
    let env = Env::start();
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    let data = stream(5, 0, 1_500_000);
    qemu.write_all(&data[..1_000_000]);
    qemu.wait_drained();
    let file = env.path("serial.log");
    let out = ok(env
        .ringcast()
        .args(["capture", "vm/ttyS0", "-o"])
        .arg(&file)
        .output()
        .unwrap());
    assert_eq!(sha(&std::fs::read(&file).unwrap()), sha(&data[..1_000_000]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("captured 1000000 bytes") && err.contains("0 gaps"),
        "{err}"
    );
    qemu.write_all(&data[1_000_000..]);
    qemu.wait_drained();
    let out = ok(env
        .ringcast()
        .args(["capture", "vm/ttyS0", "--resume", "-o"])
        .arg(&file)
        .output()
        .unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("offsets 1000000..1500000"), "{err}");
    assert_eq!(sha(&std::fs::read(&file).unwrap()), sha(&data));
}

/// `ringcast capture` exits with status 0 when the file holds every byte and 3 when some
/// are missing (here: the flight recorder dropped the oldest bytes before ringcastd
/// attached), as `ringcast --help` documents. Against a ringcastd process.
#[test]
fn capture_exits_0_when_complete_and_3_when_bytes_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let capture = |device: &str, file: &Path| {
        let out = d
            .ringcast()
            .args(["capture", device, "-o"])
            .arg(file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err)
    };

    // Every byte reached ringcastd: status 0.
    let whole = stream(21, 0, 100_000);
    let mut qemu = FakeConsole::new(&d.socket(), "vm", "whole", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(&whole);
    qemu.wait_drained();
    let file = dir.path().join("whole.log");
    let (code, err) = capture("vm/whole", &file);
    assert_eq!(code, Some(0), "capture of a complete console: {err}");
    assert!(err.contains("0 gaps, 0 bytes missing"), "{err}");
    assert_eq!(sha(&std::fs::read(&file).unwrap()), sha(&whole));

    // 10000 bytes written into a 4 KiB ring before ringcastd attached: the oldest 5904 are
    // gone, and the capture says so with status 3.
    let data = stream(22, 0, 10_000);
    let mut qemu = FakeConsole::new(&d.socket(), "vm", "lossy", 1, 4096);
    qemu.write_overwriting(&data);
    assert_eq!(qemu.dropped, 10_000 - 4096);
    qemu.connect();
    qemu.wait_drained();
    let file = dir.path().join("lossy.log");
    let (code, err) = capture("vm/lossy", &file);
    assert_eq!(code, Some(3), "capture of a console with a gap: {err}");
    assert!(
        err.contains(
            "gap at offset 0: 5904 bytes missing (lost before ringcastd attached); left as a hole"
        ) && err.contains("1 gaps, 5904 bytes missing"),
        "{err}"
    );
    let got = std::fs::read(&file).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got[..5904].iter().all(|&b| b == 0), "the hole is not zeros");
    assert_eq!(sha(&got[5904..]), sha(&data[5904..]));
}

#[test]
fn play_to_a_wav_file_records_consecutive_periods_and_reports_counts() {
    let env = Env::start();
    let mut audio = FakeAudio::new(&env.socket(), "vm", "snd0");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let producer = std::thread::spawn(move || {
        let mut seq = 0;
        while !s2.load(Relaxed) {
            audio.push(seq, 120);
            seq += 1;
            std::thread::sleep(Duration::from_micros(2500)); // 120 frames at 48 kHz
        }
        seq
    });
    let wav = env.path("out.wav");
    let out = ok(env
        .ringcast()
        .args([
            "play",
            "vm/snd0",
            "--seconds",
            "0.05",
            "--jitter-ms",
            "40",
            "--wav",
        ])
        .arg(&wav)
        .output()
        .unwrap());
    stop.store(true, Relaxed);
    let pushed = producer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // On loopback `auto` takes PCM; the counts and the buffer's delays are reported.
    assert!(
        err.contains("pcm: ")
            && err.contains("units played")
            && err.contains("late")
            && err.contains("underruns")
            && err.contains("play-out delay p50"),
        "{err}"
    );
    // The server is on this host (loopback): the delay from the guest's stamp is reported.
    assert!(err.contains("from QEMU to play-out p50"), "{err}");
    let mut r = hound::WavReader::open(&wav).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 2, 16)
    );
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(samples.len(), 2400 * 2);
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    // What was played: consecutive periods, in order, and wherever the jitter buffer had to
    // conceal one (a loaded machine can make a period late) a concealment in its place (the
    // last period repeated and fading), which the closing line counts.
    let blocks: Vec<&[u8]> = bytes.chunks(480).collect();
    let first = (0..pushed)
        .find(|&s| blocks[0] == &stream(s, 0, 480)[..])
        .expect("the first period is one the producer pushed");
    let (mut seq, mut heard, mut other) = (first, 0u64, 0u64);
    for block in &blocks {
        match (seq..pushed).find(|&s| *block == &stream(s, 0, 480)[..]) {
            Some(s) => {
                seq = s + 1;
                heard += 1;
            }
            None => other += 1,
        }
    }
    assert!(
        seq - first - heard <= other,
        "periods went missing without a concealed period in their place: {err}"
    );
    let line = err.lines().find(|l| l.contains("units played")).unwrap();
    let concealed: u64 = line
        .split("concealed ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no concealed count in {line}"));
    assert!(
        other <= concealed,
        "{other} blocks are no period the producer pushed, {concealed} concealed: {err}"
    );
}

#[test]
fn play_with_opus_writes_the_tone_at_48_khz_to_a_wav_file() {
    let env = Env::start();
    let mut audio = FakeAudio::new(&env.socket(), "vm", "snd0");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // A 1 kHz stereo s16 tone at 48 kHz, in 10 ms periods at the sound card's pace.
    let producer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s2.load(Relaxed) {
            let pcm: Vec<u8> = (n * 480..(n + 1) * 480)
                .flat_map(|i| {
                    let t = i as f64 / 48_000.0;
                    let v = (12_000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16;
                    [v.to_le_bytes(), v.to_le_bytes()].concat()
                })
                .collect();
            audio.try_push_pcm(n * 10_000_000, 480, &pcm).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let wav = env.path("opus.wav");
    let out = ok(env
        .ringcast()
        .args([
            "play",
            "vm/snd0",
            "--codec",
            "opus",
            "--seconds",
            "1",
            "--wav",
        ])
        .arg(&wav)
        .output()
        .unwrap());
    stop.store(true, Relaxed);
    producer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opus 64 kbit/s 10.0 ms frames")
            && err.contains("recovered by FEC")
            && err.contains("concealed"),
        "{err}"
    );
    let mut r = hound::WavReader::open(&wav).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 2, 16)
    );
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(samples.len(), 48_000 * 2);
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let tone = testbed::tone::analyze_s16le(&bytes, 2, 48_000);
    assert!((tone.frequency_hz - 1000.0).abs() < 5.0, "{tone:?}");
    assert!(tone.active_frames > 48_000 * 9 / 10, "{tone:?} {err}");
}

/// The `"id"` member of a QMP command line, ready to be put in the reply (QEMU echoes it).
fn id_of(command: &str) -> String {
    serde_json::from_str::<serde_json::Value>(command)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .map_or(String::new(), |id| format!(", \"id\": {id}"))
}

/// A fake QMP monitor: answers qmp_capabilities and query-status, with an event between,
/// echoing each command's id as QEMU does.
fn qmp_monitor(mut c: FakeConsole, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        c.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
        let mut seen = Vec::new();
        let mut line = Vec::new();
        let mut buf = [0u8; 256];
        while !stop.load(Relaxed) {
            let r = c.rx.read(&mut buf).unwrap();
            if r.wake_producer {
                c.in_space.ring();
            }
            if r.bytes == 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            for &b in &buf[..r.bytes] {
                seen.push(b);
                if b != b'\n' {
                    line.push(b);
                    continue;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                let id = id_of(&text);
                if text.contains("qmp_capabilities") {
                    c.write_all(format!("{{\"return\": {{}}{id}}}\r\n").as_bytes());
                } else if text.contains("query-status") {
                    c.write_all(b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n");
                    // A reply to somebody else's command first: it must not be taken.
                    c.write_all(
                        b"{\"return\": {\"status\": \"paused\"}, \"id\": \"another-client\"}\r\n",
                    );
                    c.write_all(b"{\"return\": {\"status\": \"inmigrate\"}}\r\n");
                    c.write_all(
                        format!("{{\"return\": {{\"status\": \"running\", \"running\": true}}{id}}}\r\n")
                            .as_bytes(),
                    );
                } else {
                    c.write_all(
                        format!("{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"no\"}}{id}}}\r\n")
                            .as_bytes(),
                    );
                }
            }
        }
        seen
    })
}

#[test]
fn qmp_negotiates_capabilities_sends_the_command_and_prints_the_reply_with_its_id() {
    let env = Env::start();
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "qmp0", 1, 1 << 16);
    qemu.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = qmp_monitor(qemu, stop.clone());
    let out = ok(env
        .ringcast()
        .args(["qmp", "vm/qmp0", r#"{"execute":"query-status"}"#])
        .output()
        .unwrap());
    stop.store(true, Relaxed);
    let seen = String::from_utf8(monitor.join().unwrap()).unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reply: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // The reply to this command (matched by id), not the ones before it; the id ringcast
    // added is not printed.
    assert_eq!(reply["return"]["status"], "running", "{stdout}");
    assert!(reply.get("id").is_none(), "{stdout}");
    let caps = seen.find("qmp_capabilities").expect("capabilities sent");
    let cmd = seen.find("query-status").expect("command sent");
    assert!(caps < cmd, "{seen}");
}

#[test]
fn qmp_keeps_the_commands_own_id_and_prints_it() {
    let env = Env::start();
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "qmp0", 1, 1 << 16);
    qemu.connect();
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = qmp_monitor(qemu, stop.clone());
    let out = ok(env
        .ringcast()
        .args([
            "qmp",
            "vm/qmp0",
            r#"{"execute":"query-status","id":"mine"}"#,
        ])
        .output()
        .unwrap());
    stop.store(true, Relaxed);
    monitor.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reply: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(reply["return"]["status"], "running", "{stdout}");
    assert_eq!(reply["id"], "mine", "{stdout}");
}

fn tmux(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux is needed for this test (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn console_in_tmux_echoes_typing_and_ctrl_bracket_leaves_with_the_terminal_restored() {
    let env = Env::start();
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(b"guest login: ");
    // The fake guest echoes what it receives, as a tty in cooked mode would.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while !s2.load(Relaxed) {
            let r = qemu.rx.read(&mut buf).unwrap();
            if r.wake_producer {
                qemu.in_space.ring();
            }
            if r.bytes == 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let echoed: Vec<u8> = buf[..r.bytes]
                .iter()
                .flat_map(|&b| {
                    if b == b'\r' {
                        vec![b'\r', b'\n']
                    } else {
                        vec![b]
                    }
                })
                .collect();
            qemu.write_all(&echoed);
        }
    });
    let sock = env.path("tmux.sock");
    let before = env.path("stty.before");
    let after = env.path("stty.after");
    let done = env.path("done");
    let mut cmd = env.ringcast();
    cmd.args(["console", "vm/ttyS0"]);
    let envs: String = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}='{}' ", k.to_str()?, v?.to_str()?)))
        .collect();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let script = format!(
        "stty -a > '{b}'; env {envs} '{bin}' {args}; stty -a > '{a}'; touch '{d}'; sleep 30",
        b = before.display(),
        a = after.display(),
        d = done.display(),
        bin = cmd.get_program().to_string_lossy(),
        args = args.join(" "),
    );
    tmux(
        &sock,
        &[
            "new-session",
            "-d",
            "-s",
            "rc",
            "-x",
            "100",
            "-y",
            "30",
            "sh",
            "-c",
            &script,
        ],
    );
    let pane = || tmux(&sock, &["capture-pane", "-p", "-t", "rc"]);
    // At a terminal, a server seen for the first time is shown before it is trusted.
    wait_until("the question whether to trust the new server", WAIT, || {
        pane().contains("Trust it and remember it in")
    });
    let known_hosts = env.dir.path().join("home/.config/ringcast/known_hosts");
    assert!(!known_hosts.exists(), "pinned before the person answered");
    tmux(&sock, &["send-keys", "-t", "rc", "-l", "yes"]);
    tmux(&sock, &["send-keys", "-t", "rc", "Enter"]);
    wait_until("the console banner and history", WAIT, || {
        let p = pane();
        p.contains("Leave with Ctrl-]") && p.contains("guest login:")
    });
    tmux(&sock, &["send-keys", "-t", "rc", "-l", "root"]);
    tmux(&sock, &["send-keys", "-t", "rc", "Enter"]);
    wait_until("the guest's echo", WAIT, || {
        pane().contains("guest login: root")
    });
    let t = Instant::now();
    tmux(&sock, &["send-keys", "-t", "rc", "C-]"]);
    wait_until("ringcast to leave on Ctrl-]", WAIT, || done.exists());
    assert!(t.elapsed() < WAIT);
    assert!(pane().contains("left vm/ttyS0 at offset"), "{}", pane());
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(
        pinned.starts_with(&format!("{} SHA256:", env.addr)),
        "{pinned}"
    );
    let (b, a) = (
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
    );
    assert!(b.contains(" icanon") && b.contains(" echo "), "{b}");
    assert_eq!(a, b, "terminal settings were not restored");
    let _ = Command::new("tmux")
        .arg("-S")
        .arg(&sock)
        .args(["kill-server"])
        .output();
    stop.store(true, Relaxed);
    echo.join().unwrap();
}

/// `ringcast --help` and every subcommand's teach by example and state their defaults.
#[test]
fn help_explains_the_defaults_and_gives_examples_for_every_command() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .args(args)
            .arg("--help")
            .env_remove("RINGCAST_SERVER")
            .output()
            .unwrap();
        assert!(out.status.success(), "ringcast {args:?} --help failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let top = help(&[]);
    for want in ["Examples:", "127.0.0.1:7878", "known_hosts", "Exit status"] {
        assert!(top.contains(want), "ringcast --help lacks {want:?}:\n{top}");
    }
    for cmd in [
        "list", "stats", "console", "capture", "play", "qmp", "identity",
    ] {
        let h = help(&[cmd]);
        assert!(
            h.contains("Example"),
            "ringcast {cmd} --help has no example:\n{h}"
        );
        assert!(
            h.contains(&format!("ringcast {cmd}")),
            "ringcast {cmd} --help shows no command line:\n{h}"
        );
    }
    let capture = help(&["capture"]);
    assert!(capture.contains("[default: 127.0.0.1:7878]"), "{capture}");
}

/// A build without the `sound-card` feature (no ALSA) says so before connecting anywhere,
/// and still plays to a WAV file (the rest of this file's tests).
#[cfg(not(feature = "sound-card"))]
#[test]
fn play_without_the_sound_card_feature_says_what_to_do_instead() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--server", "127.0.0.1:9", "play", "vm/snd0"])
        .env_remove("RINGCAST_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "without sound-card support",
        "--wav",
        "--raw",
        "libasound2-dev",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(!err.contains("cannot connect"), "{err}");
}

/// `mic` with no file or tone records the client's sound input; one that cannot be opened
/// is refused with what to pass instead, and nothing reaches the guest's capture ring. Two
/// sources at once are refused by the command line.
#[test]
fn mic_from_a_sound_input_that_cannot_be_opened_says_what_to_pass() {
    let env = Env::start();
    let input = shm_ring::handover::AudioFormat {
        frequency: 44_100,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    let mut audio = FakeAudio::with_input(&env.socket(), "vm", "snd0", input);
    // Until the device is registered, `mic` says there is no such device: wait for the
    // refusal that comes from the sound input instead.
    let mut err = String::new();
    wait_until("mic refused by its sound input", WAIT, || {
        let out = env
            .ringcast()
            .args(["mic", "vm/snd0", "--device", "ringcast_test_no_such_input"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        err = String::from_utf8_lossy(&out.stderr).into_owned();
        !err.contains("no device")
    });
    for want in ["--wav FILE", "--raw FILE", "--tone HZ"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    #[cfg(feature = "sound-card")]
    assert!(
        err.contains("no sound input") && err.contains("ringcast_test_no_such_input"),
        "{err}"
    );
    #[cfg(not(feature = "sound-card"))]
    assert!(err.contains("without sound-card support"), "{err}");
    assert!(audio.read_input().is_empty());
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["mic", "vm/snd0", "--tone", "1000", "--wav", "x.wav"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses two sources");
}

/// A running `ringcast` whose stderr (and stdout) are collected as they come.
struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(String::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            buf
        };
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        Running {
            child,
            stderr,
            stdout,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGINT (Ctrl-C), then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        self.wait()
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the readers take the last bytes.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ringcast did not exit; stderr: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WAITING: &str = "waiting for vm/late0 to appear...";

#[test]
fn capture_follow_wait_started_before_the_device_exists_gets_every_byte() {
    let env = Env::start();
    let file = env.path("boot.log");
    let mut cmd = env.ringcast();
    cmd.args(["capture", "vm/late0", "--follow", "--wait", "-o"])
        .arg(&file);
    let mut capture = Running::spawn(cmd);
    wait_until("ringcast to say it waits", WAIT, || {
        capture.stderr().contains(WAITING)
    });
    // It keeps waiting (polling), rather than failing with "no device".
    std::thread::sleep(Duration::from_millis(800));
    assert!(capture.running(), "{}", capture.stderr());
    // The VM boots now: its console registers and writes at once.
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "late0", 1, 1 << 16);
    qemu.connect();
    let data = stream(17, 0, 700_000);
    qemu.write_all(&data);
    qemu.wait_drained();
    wait_until("the capture file to hold every byte", WAIT, || {
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) >= data.len() as u64
    });
    let status = capture.interrupt();
    let err = capture.stderr();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(err.matches(WAITING).count(), 1, "{err}");
    assert!(
        err.contains("captured 700000 bytes") && err.contains("0 gaps"),
        "{err}"
    );
    assert_eq!(sha(&std::fs::read(&file).unwrap()), sha(&data));
}

#[test]
fn console_wait_attaches_when_the_device_appears() {
    let env = Env::start();
    let mut cmd = env.ringcast();
    cmd.args(["console", "vm/late0", "--spy", "--wait-timeout", "60s"]);
    let mut console = Running::spawn(cmd);
    wait_until("ringcast to say it waits", WAIT, || {
        console.stderr().contains(WAITING)
    });
    assert!(console.running(), "{}", console.stderr());
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "late0", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(b"Linux version 6.1 booting\r\n");
    wait_until("the guest's first line on the console", WAIT, || {
        console.stdout().contains("Linux version 6.1 booting")
    });
    assert!(console.stderr().contains("vm/late0 (spy, read-only)"));
    assert_eq!(console.stderr().matches(WAITING).count(), 1);
}

#[test]
fn waiting_for_a_device_that_never_appears_gives_up_with_status_4() {
    let env = Env::start();
    for args in [
        vec![
            "capture",
            "vm/never",
            "--follow",
            "--wait-timeout",
            "1s",
            "-o",
        ],
        vec!["console", "vm/never", "--wait", "--wait-timeout", "1500ms"],
    ] {
        let t = Instant::now();
        let mut cmd = env.ringcast();
        cmd.args(&args);
        if args[0] == "capture" {
            cmd.arg(env.path("never.log"));
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(t.elapsed() >= Duration::from_secs(1), "{args:?}");
        assert!(t.elapsed() < Duration::from_secs(20), "{args:?}");
        assert_eq!(
            err.matches("waiting for vm/never to appear...").count(),
            1,
            "{err}"
        );
        assert!(err.contains("vm/never did not appear within 1"), "{err}");
    }
    // Without --wait a missing device is an error at once, which names the option.
    let out = env
        .ringcast()
        .args(["capture", "vm/never", "-o"])
        .arg(env.path("never.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait"));
    // A duration that is not one is bad usage (status 2), not a panic.
    let out = env
        .ringcast()
        .args(["capture", "vm/x", "--wait-timeout", "soon", "-o", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
}

/// The header line's column names: cells are separated by two or more spaces.
fn columns(header: &str) -> Vec<String> {
    header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn list_and_stats_fit_long_names_and_print_json_with_the_documented_fields() {
    let env = Env::start();
    let long = "ci-runner-with-a-rather-long-name-0123456789";
    let mut c1 = FakeConsole::new(&env.socket(), long, "serial0", 1, 1 << 16);
    c1.connect();
    c1.write_all(b"hello");
    c1.wait_drained();
    let mut c2 = FakeConsole::new(&env.socket(), "vm", "hvc0", 2, 1 << 16);
    c2.connect();
    let mut audio = FakeAudio::new(&env.socket(), "vm", "snd0");
    audio.push(0, 120);
    let run = |args: &[&str]| {
        String::from_utf8(ok(env.ringcast().args(args).output().unwrap()).stdout).unwrap()
    };
    let wait_for_periods = || {
        let v: serde_json::Value = serde_json::from_str(&run(&["list", "--json"])).unwrap();
        v.as_array().unwrap().len() == 3
            && v.as_array()
                .unwrap()
                .iter()
                .any(|d| d["device"] == "snd0" && d["periods"] == 1)
    };
    wait_until("three devices, one audio period", WAIT, wait_for_periods);

    // The tables: each column as wide as its widest cell, so the long name stands alone.
    for cmd in ["list", "stats"] {
        let table = run(&[cmd]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let row = lines
            .iter()
            .find(|l| l.starts_with(long))
            .unwrap_or_else(|| panic!("no row for {long}:\n{table}"));
        let name = format!("{long}/serial0");
        assert!(row.starts_with(&format!("{name}  console")), "{table}");
        let kind_col = lines[0].find("KIND").unwrap();
        assert_eq!(kind_col, name.len() + 2, "{table}");
        assert!(
            lines
                .iter()
                .all(|l| l[kind_col..].starts_with(|c: char| c != ' ')),
            "{table}"
        );
    }

    // list --json: the fields `ringcast list --help` documents, with the right values.
    let list_help = run(&["list", "--help"]);
    let v: serde_json::Value = serde_json::from_str(&run(&["list", "--json"])).unwrap();
    let devices = v.as_array().unwrap();
    let console = devices.iter().find(|d| d["vm"] == long).unwrap();
    assert_eq!(console["device"], "serial0");
    assert_eq!(console["kind"], "console");
    assert_eq!(console["state"], "attached");
    assert_eq!(console["journal_end"], 5);
    assert_eq!(console["audio"], serde_json::Value::Null);
    let snd = devices.iter().find(|d| d["device"] == "snd0").unwrap();
    assert_eq!(snd["kind"], "audio");
    assert_eq!(snd["audio"]["rate"], 48_000);
    assert_eq!(snd["audio"]["channels"], 2);
    assert_eq!(snd["audio"]["sample_format"], "s16");
    for d in devices {
        for key in d.as_object().unwrap().keys() {
            assert!(
                list_help.contains(key),
                "list --help does not document {key:?}"
            );
        }
    }

    // stats --json: every counter, documented in `ringcast stats --help`.
    let stats_help = run(&["stats", "--help"]);
    let v: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    let console = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["vm"] == long)
        .unwrap();
    for key in [
        "dropped_flight_recorder",
        "dropped_audio_overflow",
        "subscriber_gap_bytes",
        "subscriber_dropped_periods",
        "spool_errors",
        "dropped_no_spool",
        "ring_fill",
        "ring_capacity",
        "input_bytes",
        "registrations",
    ] {
        assert!(console[key].is_u64(), "{key} in {console}");
    }
    assert_eq!(console["bytes"], 5);
    assert_eq!(console["registrations"], 1);
    assert_eq!(console["ring_capacity"], 1 << 16);
    assert_eq!(console["poisoned"], serde_json::Value::Null);
    for d in v.as_array().unwrap() {
        for key in d.as_object().unwrap().keys() {
            assert!(
                stats_help.contains(key),
                "stats --help does not document {key:?}"
            );
        }
    }
    // And the table's columns are the ones `stats --help` explains.
    let table = run(&["stats"]);
    for col in columns(table.lines().next().unwrap()) {
        assert!(
            stats_help.contains(&col),
            "stats --help does not explain {col}"
        );
    }
}

/// `ringcastd stats` (the operator, on the server) and `ringcast stats` (a client over the
/// network) show the same counters under the same column names, and the same values.
#[test]
fn ringcastd_stats_and_ringcast_stats_have_the_same_columns_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let mut qemu = FakeConsole::new(&d.socket(), "vm1", "serial0", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(&stream(3, 0, 10_000));
    qemu.wait_drained();
    let mut audio = FakeAudio::new(&d.socket(), "vm1", "snd0");
    audio.push(0, 120);
    // The device rows (the table ends with the ring fence's line, which is the server's own).
    let rows = |t: &str| t.lines().filter(|l| l.starts_with("vm1/")).count();
    let server = d.stats_table();
    wait_until("both devices in ringcastd stats", WAIT, || {
        rows(&d.stats_table()) == 2
    });
    let server = if rows(&server) == 2 {
        server
    } else {
        d.stats_table()
    };
    let out = ok(d.ringcast().arg("stats").output().unwrap());
    let client = String::from_utf8(out.stdout).unwrap();
    let (sh, ch) = (
        server.lines().next().unwrap(),
        client.lines().next().unwrap(),
    );
    assert_eq!(
        columns(sh),
        columns(ch),
        "server:\n{server}\nclient:\n{client}"
    );
    assert!(
        columns(ch).contains(&"LOST:NO-SPOOL".to_string()),
        "{client}"
    );
    // Nothing changes between the two calls here but the audio ring's fill: the console
    // rows are identical, cell for cell.
    let row = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("vm1/serial0"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert_eq!(
        row(&server),
        row(&client),
        "server:\n{server}\nclient:\n{client}"
    );
}
