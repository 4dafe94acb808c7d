//! ringcastd as a real process, killed with SIGKILL in the middle of streams from fake
//! QEMU processes, then restarted: no console byte may be lost or duplicated.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testbed::kit::*;

const CHILD_ENV: &str = "SIDECAR_TEST_PRODUCER";
const TOTAL: u64 = 16 << 20;
const CHUNK: u64 = 16 << 10;

/// ringcastd (this package's binary, no network server) with everything under `dir`,
/// started and ready.
fn daemon(dir: &Path) -> Ringcastd {
    let mut d = Ringcastd::with_binary(dir, &dir.join("state"), env!("CARGO_BIN_EXE_ringcastd"))
        .args(&[
            "--no-network",
            "--journal-window",
            "256K",
            "--segment-size",
            "1M",
        ])
        .rust_log("warn");
    d.spawn();
    d
}

/// The fake QEMU process: streams TOTAL bytes with the backend's policy (backpressure while
/// attached; while detached, flight-recorder writes that only use free space), reconnects
/// when the daemon comes back, and waits until everything was drained.
fn producer(spec: &str) {
    let parts: Vec<&str> = spec.split(';').collect();
    let socket = PathBuf::from(parts[0]);
    let vm = parts[1];
    let seed: u64 = parts[2].parse().unwrap();
    let mut c = FakeConsole::new(&socket, vm, "serial0", 1000 + seed, 1 << 20);
    wait_until("first registration", Duration::from_secs(30), || {
        c.try_connect().is_ok()
    });
    let mut reconnects = 0;
    let mut was_attached = true;
    let mut pos = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    while pos < TOTAL || !pending.is_empty() {
        if pending.is_empty() {
            let n = CHUNK.min(TOTAL - pos);
            pending = stream(seed, pos, n);
            pos += n;
            if pos % (64 << 10) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if c.attached() {
            if !was_attached {
                reconnects += 1;
                was_attached = true;
            }
            let w = c.tx.write(&pending).unwrap();
            if w.wake_consumer {
                c.out_data.ring();
            }
            pending.drain(..w.bytes);
            if w.bytes == 0
                && !c
                    .tx
                    .space_or_arm(1, || {
                        c.out_space.drain();
                    })
                    .unwrap()
            {
                c.out_space.wait(20);
            }
        } else {
            was_attached = false;
            if c.free() >= pending.len() {
                c.write_overwriting(&pending);
                pending.clear();
            } else if c.try_connect().is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    wait_until(
        "the daemon to drain the ring",
        Duration::from_secs(60),
        || {
            if !c.attached() {
                let _ = c.try_connect();
                return false;
            }
            c.free() == 1 << 20
        },
    );
    if !was_attached {
        reconnects += 1;
    }
    println!("done dropped={} reconnects={reconnects}", c.dropped);
}

fn spool_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().len() == 24)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_mid_stream_then_restart_loses_no_console_byte() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        producer(&spec);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut a = daemon(dir.path());
    let sock = dir.path().join("run/ringcastd.sock");
    let producers: Vec<Child> = (0..2)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "kill_9_mid_stream_then_restart_loses_no_console_byte",
                    "--nocapture",
                ])
                .env(CHILD_ENV, format!("{};vmk{i};{i}", sock.display()))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let dev_dir = |i: usize| dir.path().join(format!("state/vmk{i}/serial0"));
    a.wait_until("2 MiB in each spool", Duration::from_secs(60), || {
        (0..2).all(|i| spool_len(&dev_dir(i)) >= 2 << 20)
    });
    a.kill9(); // SIGKILL
    let at_kill: Vec<u64> = (0..2).map(|i| spool_len(&dev_dir(i))).collect();
    assert!(
        at_kill.iter().all(|&n| n < TOTAL),
        "the streams ended before the kill"
    );
    std::thread::sleep(Duration::from_millis(100));
    let mut b = daemon(dir.path());
    for (i, p) in producers.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "producer {i} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("done dropped=0 reconnects=1"),
            "producer {i}: {text}"
        );
    }
    let stats = Command::new(env!("CARGO_BIN_EXE_ringcastd"))
        .args(["stats", "--socket-dir"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{table}");
    assert!(table.starts_with("DEVICE"), "{table}");
    assert!(
        table.contains("vmk0/serial0") && table.contains("vmk1/serial0"),
        "{table}"
    );
    b.kill9();
    for i in 0..2 {
        let (spool, holes) = read_spool(&dev_dir(i));
        assert!(holes.is_empty(), "device {i}: {holes:?}");
        assert_eq!(spool.len() as u64, TOTAL, "device {i}");
        assert_eq!(sha(&spool), sha(&stream(i as u64, 0, TOTAL)), "device {i}");
    }
}

#[test]
fn help_explains_the_defaults_and_gives_an_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcastd"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "/var/lib/ringcast",
        "XDG_RUNTIME_DIR",
        "Example",
        "tail -F",
        "--journal-window",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = daemon(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_ringcastd"))
        .arg("--socket")
        .arg(dir.path().join("run/ringcastd.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state2"))
        .output()
        .unwrap();
    a.kill9();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("already listens"), "{text}");
}

const FOREIGN_ENV: &str = "SIDECAR_TEST_FOREIGN";

#[test]
fn registrations_from_another_user_are_refused_with_a_reason() {
    if let Ok(sock) = std::env::var(FOREIGN_ENV) {
        let mut c = FakeConsole::new(Path::new(&sock), "vmf", "serial0", 1, 4096);
        match c.try_connect() {
            Err(e) => println!("outcome: {e}"),
            Ok(()) => println!("outcome: accepted"),
        }
        return;
    }
    if !rustix::process::getuid().is_root() {
        // Running a process as another user needs root; the CI machine runs as root.
        eprintln!("not root: cannot start a process as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    let mut a = daemon(dir.path());
    // Loosen the permissions on purpose so that the peer-credential check is what stops it.
    let sock = dir.path().join("run/ringcastd.sock");
    open(&dir.path().join("run"), 0o755);
    open(&sock, 0o666);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registrations_from_another_user_are_refused_with_a_reason",
            "--nocapture",
        ])
        .env(FOREIGN_ENV, &sock)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    a.kill9();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "outcome: refused: ringcastd runs as uid 0 and accepts devices only from that \
             user or root, not from uid 65534"
        ),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("state/vmf").exists());
}
