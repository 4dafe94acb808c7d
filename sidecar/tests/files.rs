//! ringcastd's files are its user's alone: the state directory `0700`, journals and their
//! metadata `0600` from the moment they exist, whatever the umask; a state or socket
//! directory that others can write, or that another user owns, is refused at startup.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use testbed::kit::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringcastd");

/// ringcastd run with the umask most systems have (022), so nothing is private by accident.
fn ringcastd(dir: &Path) -> Ringcastd {
    Ringcastd::with_launcher(
        dir,
        &dir.join("state"),
        Box::new(|| {
            let mut c = Command::new("sh");
            c.args(["-c", "umask 022; exec \"$0\" \"$@\"", BIN]);
            c
        }),
    )
    .args(&["--no-network"])
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
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
fn journals_and_their_directories_are_private_from_creation() {
    let dir = tempfile::tempdir().unwrap();
    // Open the way to the state directory, so that its own mode is what keeps others out.
    set_mode(dir.path(), 0o755);
    let mut d = ringcastd(dir.path());
    d.spawn();
    let mut c = FakeConsole::new(&d.socket(), "vm1", "serial0", 1, 1 << 16);
    c.connect();
    c.write_all(&stream(1, 0, 10_000));
    c.wait_drained();
    let dev = d.state.join("vm1").join("serial0");
    let segment = dev.join(format!("{:020}.log", 0));
    d.wait_until("the first segment to hold the bytes", WAIT, || {
        std::fs::metadata(&segment).is_ok_and(|m| m.len() == 10_000)
    });
    assert_eq!(mode(&d.state), 0o700, "state directory");
    assert_eq!(mode(&d.state.join("vm1")), 0o700, "VM directory");
    assert_eq!(mode(&dev), 0o700, "device directory");
    assert_eq!(mode(&segment), 0o600, "segment");
    assert_eq!(mode(&dev.join("device.meta")), 0o600, "metadata");
    assert_eq!(mode(&d.socket()), 0o600, "registration socket");
    if rustix::process::getuid().is_root() {
        // `nobody` cannot read a console log.
        let out = Command::new("cat")
            .arg(&segment)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!out.status.success(), "nobody read the journal");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Permission denied"), "{err}");
        assert!(out.stdout.is_empty());
    }
    d.kill9();
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[test]
fn a_state_directory_others_can_write_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    set_mode(&state, 0o777);
    let why = refusal(ringcastd(dir.path()));
    assert!(
        why.contains(&format!(
            "the state directory {} can be written by other users (mode 0777)",
            state.display()
        )),
        "{why}"
    );
    assert!(why.contains("chmod go-w"), "{why}");
    assert!(why.contains("--state-dir"), "{why}");
    assert_eq!(
        mode(&state),
        0o777,
        "ringcastd changed the directory it refused"
    );
}

#[test]
fn a_socket_directory_others_can_write_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    set_mode(&run, 0o1777);
    let why = refusal(ringcastd(dir.path()));
    assert!(
        why.contains(&format!(
            "the socket directory {} can be written by other users (mode 1777)",
            run.display()
        )),
        "{why}"
    );
    assert!(!run.join("ringcastd.sock").exists());
}

#[test]
fn a_socket_directory_another_user_owns_is_refused() {
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: cannot give a directory to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let why = refusal(ringcastd(dir.path()));
    assert!(
        why.contains(&format!(
            "the socket directory {} belongs to uid 65534, not to ringcastd's uid 0",
            run.display()
        )),
        "{why}"
    );
    assert_eq!(std::fs::metadata(&run).unwrap().uid(), 65534);
}
