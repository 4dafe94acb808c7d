//! The plugin hands its rings only to a daemon running as root, as QEMU's uid, or as the
//! uid named by `daemon-uid=`: a listener of another uid (a child process that dropped to
//! `nobody`) is refused with one line in QEMU's log, however often the plugin retries.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::consumer::TestConsumer;
use testbed::harness::{MainLoop, Plugin};
use testbed::kit::bins;

const T: Duration = Duration::from_secs(30);
const NOBODY: u32 = 65534;
/// Set in the child: the socket path it listens on as `nobody`.
const CHILD: &str = "RINGCAST_PEER_UID_CHILD";

fn child(path: &Path) -> ! {
    // SAFETY: plain credential calls; glibc applies them to every thread.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setgid(NOBODY), 0);
        assert_eq!(libc::setuid(NOBODY), 0);
    }
    let consumer = TestConsumer::bind(path).expect("bind as nobody");
    println!("listening");
    // A refusing plugin connects, asks who listens, and closes without sending anything.
    let reg = loop {
        match consumer.accept(T) {
            Ok(reg) => break reg,
            Err(e) => println!("connection without rings: {e}"),
        }
    };
    println!("accepted {}", reg.console().desc.device_id);
    std::thread::sleep(T);
    std::process::exit(0);
}

#[test]
fn a_daemon_of_another_uid_gets_no_ring_unless_daemon_uid_names_it() {
    if let Some(path) = std::env::var_os(CHILD) {
        child(Path::new(&path));
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        // Another uid than ours needs root to make; the refusal logic itself is unit-tested.
        eprintln!("skipped: needs root to run a listener as another uid");
        return;
    }
    let p = Plugin::load(&bins::plugin()).expect("load libringcast_backend.so");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("d.sock");
    let mut listener = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_daemon_of_another_uid_gets_no_ring_unless_daemon_uid_names_it",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    while !path.exists() {
        assert!(Instant::now() < deadline, "the listener never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lp = MainLoop::new();
    let opts = format!("socket={}:ring=16K", path.display());
    let refused = p.open_chardev("vm", "con", &opts).unwrap();
    let want = format!(
        "refusing the daemon at {}: it runs as uid {NOBODY}",
        path.display()
    );
    assert!(lp.run_until(T, || lp.logged(&want)), "{:?}", lp.logs());
    // Several retries (100, 200, 400, 800 ms apart), one log line.
    let until = Instant::now() + Duration::from_millis(1600);
    lp.run_until(Duration::from_secs(2), || Instant::now() > until);
    let lines = lp.logs().iter().filter(|l| l.contains(&want)).count();
    assert_eq!(lines, 1, "{:?}", lp.logs());
    assert!(!lp.logged("streaming to the daemon"));
    drop(refused);

    let named = p
        .open_chardev("vm", "con2", &format!("{opts}:daemon-uid={NOBODY}"))
        .unwrap();
    assert!(
        lp.run_until(T, || lp.logged("vm/con2: streaming to the daemon")),
        "{:?}",
        lp.logs()
    );
    // What the listener saw, up to the registration it accepted.
    let mut said = String::new();
    let mut out = std::io::BufReader::new(listener.stdout.take().unwrap());
    while !said.contains("accepted") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            break;
        }
        said.push_str(&line);
    }
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(
        said.contains("accepted con2") && !said.contains("accepted con\n"),
        "{said}"
    );
    drop(named);
}
