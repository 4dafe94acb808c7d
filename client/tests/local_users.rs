//! What another local user can do with a ringcastd run by root and its defaults (no
//! authorization file): nothing. `nobody` runs the real `ringcast` and `ringcastd`
//! binaries against a real ringcastd; root (the host's admin) gets in with no extra step.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testbed::kit::bins::binary;
use testbed::kit::{FakeConsole, Ringcastd};

const NOBODY: u32 = 65534;

/// A copy of a workspace binary that `nobody` can run (the build tree may not be
/// reachable for it).
fn runnable_by_nobody(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(binary(name), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// A directory of nobody's own (its home).
fn home_of_nobody(dir: &Path) -> PathBuf {
    let home = dir.join("nobody-home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    home
}

/// Runs `bin args` as nobody with `home` as its home.
fn as_nobody(bin: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin)
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RINGCAST_SERVER")
        .env_remove("RINGCAST_CONTROL_SOCKET")
        .output()
        .expect("setpriv runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn skip_unless_root() -> bool {
    if !rustix::process::getuid().is_root() {
        eprintln!("local users: skipped, these tests switch to the nobody user and need root");
        return true;
    }
    false
}

#[test]
fn nobody_can_neither_list_nor_capture_nor_authorize_itself_and_root_gets_in() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Ringcastd::start(&dir.path().join("d"), &dir.path().join("d/state"), &[]);
    let mut qemu = FakeConsole::new(&d.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(b"root password is hunter2\r\n");
    let ringcast = runnable_by_nobody(dir.path(), "ringcast");
    let ringcastd = runnable_by_nobody(dir.path(), "ringcastd");
    let home = home_of_nobody(dir.path());
    let server = d.server();
    let ctl = d.control_socket();
    let ctl = ctl.to_str().unwrap();
    let capture = home.join("stolen.log");
    for args in [
        vec!["--server", &server, "--control-socket", ctl, "list"],
        vec![
            "--server",
            &server,
            "--control-socket",
            ctl,
            "capture",
            "vm/ttyS0",
            "-o",
            capture.to_str().unwrap(),
        ],
    ] {
        let out = as_nobody(&ringcast, &home, &args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {t}");
        assert!(
            t.contains("NOT_AUTHORIZED") && t.contains("ringcastd authorize SHA256:"),
            "{t}"
        );
        assert!(!t.contains("hunter2") && !t.contains("vm/ttyS0 "), "{t}");
    }
    assert!(
        std::fs::read(&capture).map_or(true, |b| !b.windows(7).any(|w| w == b"hunter2")),
        "nobody captured the console"
    );
    // Asking ringcastd directly: the control socket is root's.
    let out = as_nobody(
        &ringcastd,
        &home,
        &[
            "--control-socket",
            ctl,
            "authorize",
            "SHA256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    assert!(
        !d.state.join("local_clients").exists(),
        "nobody's attempts left a grant behind"
    );
    // The host's admin: the same command, no extra step.
    let out = d.ringcast().arg("list").output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("vm/ttyS0") || t.contains("vm ") && t.contains("ttyS0"),
        "{t}"
    );
    assert!(t.contains("authorized this client"), "{t}");
}

#[test]
fn a_control_socket_others_can_reach_still_grants_nothing_to_another_uid() {
    if skip_unless_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Ringcastd::start(&dir.path().join("d"), &dir.path().join("d/state"), &[]);
    // A careless admin opened the socket directory and the socket to everyone.
    for p in [dir.path().join("d"), d.socket_dir()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(d.control_socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let ringcastd = runnable_by_nobody(dir.path(), "ringcastd");
    let home = home_of_nobody(dir.path());
    let ctl = d.control_socket();
    let fp = "SHA256:1111111111111111111111111111111111111111111111111111111111111111";
    let out = as_nobody(
        &ringcastd,
        &home,
        &["--control-socket", ctl.to_str().unwrap(), "authorize", fp],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("uid 65534 may not authorize clients"), "{t}");
    assert!(
        !d.state.join("local_clients").exists(),
        "a grant was written"
    );
    // Root may, with the same command.
    let out = Command::new(binary("ringcastd"))
        .args([
            "--control-socket",
            ctl.to_str().unwrap(),
            "authorize",
            fp,
            "--rights",
            "read,spy",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let granted = std::fs::read_to_string(d.state.join("local_clients")).unwrap();
    assert_eq!(granted, format!("{fp} */* read,spy\n"));
    let mode = std::fs::metadata(d.state.join("local_clients"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
