//! ringcastd faults on the daemon side: an immediate restart after SIGKILL.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;

fn daemon(dir: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_ringcastd"))
        .arg("--socket")
        .arg(dir.join("run/ringcastd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--no-network")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    wait_until("the daemon's sockets", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(dir.join("run/ringcastd.ctl")).is_ok()
            && dir.join("run/ringcastd.sock").exists()
    });
    child
}

#[test]
fn ringcastd_restarted_at_once_after_kill_9_starts_and_takes_its_devices_back() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/ringcastd.sock");
    let mut d = daemon(dir.path());
    let mut c = FakeConsole::new(&sock, "vmi", "serial0", 1, 1 << 16);
    c.connect();
    let mut sent = 0u64;
    for round in 0..3 {
        let data = stream(3, sent, 100_000);
        c.write_all(&data);
        sent += data.len() as u64;
        c.wait_drained();
        d.kill().unwrap();
        d.wait().unwrap();
        // No pause: the killed process's io_uring may still hold the listener.
        let mut restarted = Command::new(env!("CARGO_BIN_EXE_ringcastd"))
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--no-network")
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        wait_until("the restarted daemon", Duration::from_secs(30), || {
            if let Some(st) = restarted.try_wait().unwrap() {
                panic!("round {round}: the restarted ringcastd exited: {st}");
            }
            std::os::unix::net::UnixStream::connect(dir.path().join("run/ringcastd.ctl")).is_ok()
        });
        d = restarted;
        wait_until("re-registration", Duration::from_secs(30), || {
            c.attached() || c.try_connect().is_ok()
        });
    }
    d.kill().unwrap();
    d.wait().unwrap();
    let (spool, holes) = read_spool(&dir.path().join("state/vmi/serial0"));
    assert!(holes.is_empty());
    assert_eq!(sha(&spool), sha(&stream(3, 0, sent)));
}
