//! ringcastd refuses to start rather than run with less protection than it was asked for:
//! a QUIC port someone else holds, an authorization file that is missing or unreadable.

use std::path::Path;

use testbed::kit::*;

fn ringcastd(dir: &Path) -> Ringcastd {
    Ringcastd::with_binary(dir, &dir.join("state"), env!("CARGO_BIN_EXE_ringcastd"))
}

/// Starts `d` and returns why it did not become ready; fails the test if it did.
fn refusal(mut d: Ringcastd) -> String {
    match d.try_spawn() {
        Ok(()) => {
            let log = d.log_tail(20);
            d.kill9();
            panic!("ringcastd started; its log:\n{log}")
        }
        Err(e) => e,
    }
}

#[test]
fn a_taken_default_port_stops_ringcastd_with_what_to_do() {
    // Hold 127.0.0.1:7878 for the test; if another program already holds it, it is taken
    // all the same.
    let _holder = std::net::UdpSocket::bind("127.0.0.1:7878");
    let dir = tempfile::tempdir().unwrap();
    let why = refusal(ringcastd(dir.path()).default_listen());
    assert!(why.contains("exited"), "{why}");
    assert!(why.contains("cannot listen on 127.0.0.1:7878"), "{why}");
    assert!(why.contains("--listen ADDR:PORT"), "{why}");
}

#[test]
fn a_taken_explicit_port_stops_ringcastd() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let why = refusal(ringcastd(dir.path()).listen(&addr));
    assert!(why.contains(&format!("cannot listen on {addr}")), "{why}");
}

#[test]
fn a_named_authorization_file_that_is_missing_stops_ringcastd() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("authorized_clients");
    let why = refusal(
        ringcastd(dir.path()).args(&["--authorized-clients".as_ref(), missing.as_os_str()]),
    );
    assert!(why.contains("named by --authorized-clients"), "{why}");
    assert!(why.contains(&missing.display().to_string()), "{why}");
}

#[test]
fn a_named_authorization_file_that_cannot_be_read_stops_ringcastd() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, whoever runs the test (root reads any file).
    let unreadable = dir.path().join("authorized_clients");
    std::fs::create_dir(&unreadable).unwrap();
    let why = refusal(
        ringcastd(dir.path()).args(&["--authorized-clients".as_ref(), unreadable.as_os_str()]),
    );
    assert!(why.contains("cannot read"), "{why}");
    assert!(why.contains(&unreadable.display().to_string()), "{why}");
}

#[test]
fn a_default_authorization_file_that_cannot_be_read_stops_ringcastd() {
    let dir = tempfile::tempdir().unwrap();
    // The kit gives ringcastd its own XDG_CONFIG_HOME; a dangling symlink there is a file
    // that exists but cannot be read, not an absent one.
    let config = dir.path().join("home/.config/ringcast");
    std::fs::create_dir_all(&config).unwrap();
    let file = config.join("authorized_clients");
    std::os::unix::fs::symlink(dir.path().join("gone"), &file).unwrap();
    let why = refusal(ringcastd(dir.path()));
    assert!(why.contains("cannot read"), "{why}");
    assert!(why.contains(&file.display().to_string()), "{why}");
}

/// A daemon stops at once even when its control socket's file was removed behind its back
/// (its thread is woken through the listening socket, not through the path).
#[test]
fn a_daemon_whose_control_socket_file_is_gone_still_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = sidecar::Daemon::start(cfg.clone()).unwrap();
    std::fs::remove_file(&cfg.control_socket).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        daemon.shutdown();
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("ringcastd did not stop within 10 s");
}
