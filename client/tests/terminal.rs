//! `ringcast console` in a real pseudo-terminal: whatever the guest turned on through its
//! output (alternate screen, mouse reporting, bracketed paste, a hidden cursor) is turned
//! off on leaving, and the terminal leaves raw mode also when ringcast is ended by SIGTERM
//! or SIGHUP.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testbed::kit::*;

const WAIT: Duration = Duration::from_secs(30);

struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn openpty() -> Pty {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two fds into the pointers and reads nothing else (null name,
    // termios and window size mean defaults).
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened for us and are owned by nothing else.
    unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(m),
            slave: OwnedFd::from_raw_fd(s),
        }
    }
}

/// Whether the terminal is in canonical (cooked) mode, i.e. not raw.
fn canonical(master: &OwnedFd) -> bool {
    // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid pointer.
    let r = unsafe { libc::tcgetattr(master.as_raw_fd(), &mut t) };
    assert_eq!(r, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    t.c_lflag & libc::ICANON != 0
}

/// Everything the terminal showed, collected from the master side.
fn collect(master: &OwnedFd) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut f = std::fs::File::from(master.try_clone().unwrap());
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once every slave fd is closed.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

/// A first `ringcast` run without a terminal: it pins the server (at a terminal it would
/// ask) and gets its identity authorized, so the console below starts at once.
fn pin(d: &Ringcastd) {
    let out = d.ringcast().arg("list").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "ringcast did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leave_by_signal(signal: libc::c_int, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let mut guest = FakeConsole::new(&d.socket(), "vm", "ttyS0", 1, 1 << 16);
    guest.connect();
    pin(&d);
    let pty = openpty();
    assert!(canonical(&pty.master), "a new terminal starts cooked");
    let seen = collect(&pty.master);
    let fd = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = d
        .ringcast()
        .args(["console", "vm/ttyS0"])
        .stdin(fd())
        .stdout(fd())
        .stderr(fd())
        .spawn()
        .unwrap();
    drop(pty.slave);
    // The guest turns on the alternate screen, mouse reporting and bracketed paste, and
    // hides the cursor.
    guest.write_all(b"\x1b[?1049h\x1b[?1000h\x1b[?1006h\x1b[?2004h\x1b[?25lguest-is-up");
    wait_until("the guest's output on the terminal", WAIT, || {
        let s = seen.lock().unwrap();
        s.windows(11).any(|w| w == b"guest-is-up")
    });
    assert!(!canonical(&pty.master), "the console runs in raw mode");
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = wait_exit(&mut child);
    assert!(
        canonical(&pty.master),
        "the terminal stayed raw after {name} ({status})"
    );
    let shown = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let after = &shown[shown.find("guest-is-up").unwrap()..];
    for reset in [
        "\x1b[?1049l",
        "\x1b[?1000l",
        "\x1b[?1006l",
        "\x1b[?2004l",
        "\x1b[?25h",
    ] {
        assert!(
            after.contains(reset),
            "{reset:?} not sent after {name}: {after:?}"
        );
    }
    assert!(
        after.contains(&format!("left vm/ttyS0 on {name}")),
        "{after:?}"
    );
    assert_eq!(status.code(), Some(1), "{after:?}");
}

#[test]
fn sigterm_restores_the_terminal_and_resets_the_guests_modes() {
    leave_by_signal(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_restores_the_terminal_and_resets_the_guests_modes() {
    leave_by_signal(libc::SIGHUP, "SIGHUP");
}

#[test]
fn leaving_with_ctrl_close_bracket_resets_the_guests_modes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let mut guest = FakeConsole::new(&d.socket(), "vm", "ttyS0", 1, 1 << 16);
    guest.connect();
    pin(&d);
    let pty = openpty();
    let seen = collect(&pty.master);
    let fd = || Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = d
        .ringcast()
        .args(["console", "vm/ttyS0"])
        .stdin(fd())
        .stdout(fd())
        .stderr(fd())
        .spawn()
        .unwrap();
    drop(pty.slave);
    guest.write_all(b"\x1b[?1049h\x1b[?1002h\x1b[?25lguest-is-up");
    wait_until("the guest's output on the terminal", WAIT, || {
        let s = seen.lock().unwrap();
        s.windows(11).any(|w| w == b"guest-is-up")
    });
    let mut m = std::fs::File::from(pty.master.try_clone().unwrap());
    std::io::Write::write_all(&mut m, &[0x1d]).unwrap();
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status}");
    assert!(canonical(&pty.master));
    let shown = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let after = &shown[shown.find("guest-is-up").unwrap()..];
    for reset in ["\x1b[?1049l", "\x1b[?1002l", "\x1b[?25h"] {
        assert!(after.contains(reset), "{reset:?} not sent: {after:?}");
    }
}
