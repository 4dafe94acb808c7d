//! ringcastd faults on the daemon side: an immediate restart after SIGKILL.

use std::path::Path;
use std::time::Duration;

use testbed::kit::*;

/// ringcastd (this package's binary, no network server) with everything under `dir`,
/// started and ready.
fn daemon(dir: &Path) -> Ringcastd {
    let mut d = Ringcastd::with_binary(dir, &dir.join("state"), env!("CARGO_BIN_EXE_ringcastd"))
        .args(&["--no-network"])
        .rust_log("warn");
    d.spawn();
    d
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
        d.kill9();
        // No pause: the killed process's io_uring may still hold the listener.
        d.try_spawn()
            .unwrap_or_else(|e| panic!("round {round}: the restarted ringcastd: {e}"));
        d.wait_until("re-registration", Duration::from_secs(30), || {
            c.attached() || c.try_connect().is_ok()
        });
    }
    d.kill9();
    let (spool, holes) = read_spool(&dir.path().join("state/vmi/serial0"));
    assert!(holes.is_empty());
    assert_eq!(sha(&spool), sha(&stream(3, 0, sent)));
}

#[test]
fn ringcastd_that_cannot_create_its_identity_stops_before_it_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = Tmpfs::mount(&state, "256k");
    disk.fill("filler");
    let mut d = Ringcastd::with_binary(dir.path(), &state, env!("CARGO_BIN_EXE_ringcastd"));
    let e = d.try_spawn().unwrap_err();
    assert!(
        e.contains("exited") && e.contains("before it was ready"),
        "{e}"
    );
    assert!(e.contains("No space left on device"), "{e}");
    assert!(e.contains("server.key") || e.contains("server.crt"), "{e}");
    // It stopped before QEMU could register with it.
    let log = d.log();
    assert!(!log.contains("registration socket up"), "{log}");
}
