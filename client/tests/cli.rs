//! The `ringcast` binary against ringcastd's QUIC server on loopback, with fake QEMU
//! devices (shared-memory rings, as sidecar/tests do): capture with resume, play to WAV,
//! QMP, and the interactive console driven through tmux.

#[path = "../../sidecar/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, sha, stream, wait_until, FakeAudio, FakeConsole};
use sidecar::net::{NetConfig, NetServer};
use sidecar::Daemon;
use testbed::kit::Ringcastd;

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
    assert!(
        err.contains("late") && err.contains("underruns") && err.contains("skipped 0"),
        "{err}"
    );
    // The server is on this host (loopback): stamp-to-arrival latency is reported.
    assert!(err.contains("latency from QEMU to here p50"), "{err}");
    let mut r = hound::WavReader::open(&wav).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 2, 16)
    );
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(samples.len(), 2400 * 2);
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let first = (0..pushed)
        .find(|&s| bytes[..480] == stream(s, 0, 480)[..])
        .expect("the first period is one the producer pushed");
    for (i, block) in bytes.chunks(480).enumerate() {
        assert_eq!(block, &stream(first + i as u64, 0, 480)[..], "period {i}");
    }
}

/// A fake QMP monitor: answers qmp_capabilities and query-status, with an event between.
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
                if text.contains("qmp_capabilities") {
                    c.write_all(b"{\"return\": {}}\r\n");
                } else if text.contains("query-status") {
                    c.write_all(b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n");
                    c.write_all(b"{\"return\": {\"status\": \"running\", \"running\": true}}\r\n");
                } else {
                    c.write_all(
                        b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\r\n",
                    );
                }
            }
        }
        seen
    })
}

#[test]
fn qmp_negotiates_capabilities_sends_the_command_and_prints_the_reply() {
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
    assert_eq!(reply["return"]["status"], "running", "{stdout}");
    let caps = seen.find("qmp_capabilities").expect("capabilities sent");
    let cmd = seen.find("query-status").expect("command sent");
    assert!(caps < cmd, "{seen}");
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
