//! Real QEMU (patched, under TCG): the guest writes megabytes to its 16550 and its
//! virtconsole while ringcastd is killed with SIGKILL and restarted at once. The restart
//! grace keeps both consoles lossless: the journals must equal what the guest wrote, byte for
//! byte, with nothing counted as dropped.

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use testbed::kit::bins::plugin;
use testbed::kit::journal::read_spool;
use testbed::kit::Ringcastd;
use testbed::qemu::{self, GuestRun};
use testbed::stream::GuestStream;

const BOOT: Duration = Duration::from_secs(300);

#[test]
fn ringcastd_killed_and_restarted_mid_stream_loses_no_console_byte() {
    if qemu::skipped() {
        eprintln!("real-QEMU test skipped: RINGCAST_SKIP_QEMU is set (scripts/test.sh --no-qemu)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut d = Ringcastd::start(dir.path(), &state, &[]);
    let (serial_len, hvc_len) = (1 << 20, 8 << 20);
    let g = GuestRun {
        vm_name: "e2e".into(),
        params: format!(
            "rc.scenario=console rc.seed=81 rc.hvc_seed=82 rc.serial_bytes={serial_len} \
             rc.hvc_bytes={hvc_len}"
        ),
        plugin: plugin(),
        // The default grace (5 s) is what is tested; only the socket is given.
        plugin_opts: format!("socket={}", d.socket().display()),
        log_file: dir.path().join("ttyS1.log"),
        serial: true,
        virtconsole: true,
        sound: None,
        audiodev_options: String::new(),
    };
    let mut child = g.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let spool = |dev: &str| state.join("e2e").join(dev);
    let have = |dev: &str| {
        if spool(dev).is_dir() {
            read_spool(&spool(dev)).0.len()
        } else {
            0
        }
    };
    // Kill while both consoles are mid-stream.
    d.wait_until("both consoles streaming", BOOT, || {
        have("serial0") >= 16 << 10 && have("hvc0") >= 256 << 10
    });
    let at_kill = (have("serial0"), have("hvc0"));
    d.kill9();
    d.spawn();
    assert!(
        at_kill.0 < serial_len && at_kill.1 < hvc_len,
        "the streams ended before the kill: {at_kill:?}"
    );
    let deadline = Instant::now() + BOOT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "QEMU did not exit within {BOOT:?}; guest log:\n{}",
                std::fs::read_to_string(&g.log_file).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    let err = stderr.join().unwrap();
    let guest_log = std::fs::read_to_string(&g.log_file).unwrap_or_default();
    assert!(
        status.success(),
        "QEMU failed: {status}\n{err}\n{guest_log}"
    );
    assert!(
        guest_log.contains(" done"),
        "the guest did not finish:\n{guest_log}"
    );
    assert!(
        err.contains("lost the daemon"),
        "no restart was seen:\n{err}"
    );
    assert!(!err.contains("did not come back"), "{err}");
    assert!(!err.contains("dropped by the flight recorder"), "{err}");
    for (dev, seed, len) in [("serial0", 81, serial_len), ("hvc0", 82, hvc_len)] {
        d.wait_until(&format!("all of {dev} in the journal"), BOOT, || {
            have(dev) >= len
        });
        let (got, holes) = read_spool(&spool(dev));
        assert!(holes.is_empty(), "{dev}: holes {holes:?}");
        assert_eq!(got.len(), len, "{dev}");
        assert!(got == GuestStream::bytes(seed, len), "{dev}: bytes differ");
        assert_eq!(
            d.stat(&format!("e2e/{dev}"), "LOST:FLIGHT").as_deref(),
            Some("0")
        );
    }
    eprintln!(
        "killed at serial0={} hvc0={} bytes; QEMU log:\n{err}",
        at_kill.0, at_kill.1
    );
}
