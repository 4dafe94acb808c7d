//! The QEMU series itself, under real QEMU (patched, TCG) booting the test guest: what it
//! must never do to other backends (a pty or socket console whose reader stops must not
//! stop the guest), what it promises the plugin (a stalled consumer loses nothing), and
//! the holes a review found (two plugin audiodevs, input across stop/cont, chardev-change
//! away from a full plugin, tables of other ABI versions, loading on a running machine).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use testbed::consumer::{ConsoleEnd, Registration, TestConsumer};
use testbed::kit::bins::plugin;
use testbed::kit::wait_until;
use testbed::qemu::{self, tiny_plugin, GuestRun, Vm};
use testbed::qmp::Qmp;
use testbed::stream::GuestStream;

const BOOT: Duration = Duration::from_secs(180);

fn skip() -> bool {
    if qemu::skipped() {
        eprintln!("real-QEMU test skipped: RINGCAST_SKIP_QEMU is set (scripts/test.sh --no-qemu)");
        return true;
    }
    false
}

/// QEMU's arguments for the test guest: the plugin (with `opts`) on ttyS0 when `serial`,
/// `hvc` as the chardev behind the virtconsole (`None`: the plugin), a QMP socket, and
/// `extra` arguments.
fn guest_args(
    dir: &Path,
    params: &str,
    opts: &str,
    serial: bool,
    hvc: Option<&str>,
    extra: &[&str],
) -> Vec<String> {
    let g = GuestRun {
        vm_name: "series".into(),
        params: params.into(),
        plugin: plugin(),
        plugin_opts: opts.into(),
        log_file: dir.join("ttyS1.log"),
        serial,
        virtconsole: hvc.is_none(),
        sound: None,
        audiodev_options: String::new(),
    };
    let mut args = g.args(&qemu::guest_dir().unwrap());
    if let Some(spec) = hvc {
        let slot = args
            .iter_mut()
            .find(|a| a.as_str() == "null,id=hvc0")
            .expect("the virtconsole's chardev");
        *slot = spec.to_owned();
    }
    args.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn guest_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ttyS1.log")).unwrap_or_default()
}

fn heartbeats(dir: &Path) -> usize {
    guest_log(dir).matches("] heartbeat ").count()
}

/// The flood scenario: hvc0 written without end, a heartbeat on ttyS1 every 0.2 s.
const FLOOD: &str = "rc.scenario=flood rc.hvc_seed=7 rc.idle_s=600";

/// Reads `hvc` for a while (output flows), stops reading for 10 s and checks that the
/// guest's heartbeat kept ticking meanwhile: a console whose backend stays full must drop
/// output, not wedge the vCPU that writes it.
fn reader_stops_for_10_s(dir: &Path, vm: Vm, mut hvc: impl Read) {
    wait_until("the guest starts flooding hvc0", BOOT, || {
        guest_log(dir).contains("flood: start")
    });
    let mut buf = vec![0u8; 65536];
    let mut got = 0usize;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until || got == 0 {
        got += hvc.read(&mut buf).expect("reading the console");
    }
    assert!(got > 0, "no console output arrived");
    let before = heartbeats(dir);
    thread::sleep(Duration::from_secs(10));
    let after = heartbeats(dir);
    let stderr = vm.kill();
    assert!(
        after >= before + 3,
        "the guest stopped while nobody read its console: {before} heartbeats before the \
         10 s stall, {after} after\nguest:\n{}\nQEMU:\n{stderr}",
        guest_log(dir)
    );
    eprintln!("{before} heartbeats before the 10 s stall, {after} after ({got} bytes read)");
}

#[test]
fn pty_virtconsole_whose_reader_stops_does_not_stop_the_guest() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = guest_args(dir.path(), FLOOD, "", false, Some("pty,id=hvc0"), &[]);
    let vm = Vm::start(&args).unwrap();
    let mut qmp = Qmp::connect(&dir.path().join("qmp.sock"), BOOT).unwrap();
    let reply = qmp.execute("query-chardev", "{}").unwrap();
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let pts = v["return"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "hvc0")
        .and_then(|c| c["filename"].as_str())
        .and_then(|f| f.strip_prefix("pty:"))
        .unwrap_or_else(|| panic!("no pty for hvc0 in {reply}"))
        .to_owned();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pts)
        .unwrap();
    // Raw: the pty must not echo the guest's output back to it as input.
    // SAFETY: tty is an open terminal; t is initialised by tcgetattr before use.
    unsafe {
        use std::os::fd::AsRawFd;
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(tty.as_raw_fd(), &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t), 0);
    }
    reader_stops_for_10_s(dir.path(), vm, tty);
}

#[test]
fn socket_virtconsole_whose_client_stops_reading_does_not_stop_the_guest() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hvc0.sock");
    let spec = format!("socket,id=hvc0,path={},server=on,wait=off", sock.display());
    let args = guest_args(dir.path(), FLOOD, "", false, Some(&spec), &[]);
    let vm = Vm::start(&args).unwrap();
    let _qmp = Qmp::connect(&dir.path().join("qmp.sock"), BOOT).unwrap();
    let client = UnixStream::connect(&sock).unwrap();
    reader_stops_for_10_s(dir.path(), vm, client);
}

/// Accepts registrations until one for `id` arrives.
fn console_of(consumer: &TestConsumer, id: &str) -> ConsoleEnd {
    let deadline = Instant::now() + BOOT;
    loop {
        assert!(Instant::now() < deadline, "{id} never registered");
        if let Ok(Registration::Console(c)) = consumer.accept(Duration::from_millis(200)) {
            if c.desc.device_id == id {
                return c;
            }
        }
    }
}

#[test]
fn plugin_virtconsole_with_a_stalled_consumer_loses_nothing() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}:ring=4K", consumer.path().display());
    let len = 512 * 1024 + 7;
    let params =
        format!("rc.scenario=console rc.seed=3 rc.hvc_seed=4 rc.serial_bytes=1 rc.hvc_bytes={len}");
    let args = guest_args(dir.path(), &params, &opts, false, None, &[]);
    let vm = Vm::start(&args).unwrap();
    let mut hvc = console_of(&consumer, "hvc0");
    let mut got = Vec::new();
    hvc.read_until(&mut got, 4096, Duration::ZERO, BOOT)
        .unwrap();
    // The consumer stalls: the guest must wait for it, not lose output.
    thread::sleep(Duration::from_secs(10));
    assert!(
        !guest_log(dir.path()).contains("hvc0 done"),
        "the guest finished writing hvc0 while nothing read it: output was lost"
    );
    hvc.read_until(&mut got, len, Duration::ZERO, BOOT).unwrap();
    let (status, stderr) = vm.wait(BOOT).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        guest_log(dir.path()).contains("scenario console done"),
        "{stderr}"
    );
    assert_eq!(hvc.lost + hvc.start_position, 0);
    assert!(got == GuestStream::bytes(4, len), "hvc0 bytes differ");
}

/// What QEMU logs when an audiodev cannot create a voice a sound card asks for.
const NO_VOICE: &str = "Could not create a backend for voice";

#[test]
fn two_plugin_audiodevs_one_with_capture_start() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_plugin(11, dir.path()).unwrap();
    let opts = format!("socket={}", dir.path().join("nobody.sock").display()).replace(',', ",,");
    // ringcast's plugin has capture, the tiny one has none; either order.
    for (first, second) in [(plugin(), tiny.clone()), (tiny.clone(), plugin())] {
        let qmp = dir.path().join("qmp.sock");
        let _ = std::fs::remove_file(&qmp);
        let args: Vec<String> = [
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-L",
            "/usr/share/seabios",
            "-L",
            "/usr/share/qemu",
            "-name",
            "guest=audio2",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-audiodev".into(),
            format!("plugin,id=a0,path={},config={opts}", first.display()),
            "-audiodev".into(),
            format!("plugin,id=a1,path={},config={opts}", second.display()),
            "-device".into(),
            "AC97,audiodev=a0".into(),
            "-device".into(),
            "intel-hda".into(),
            "-device".into(),
            "hda-duplex,audiodev=a1".into(),
            "-device".into(),
            "AC97,audiodev=a1".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ])
        .collect();
        let vm = Vm::start(&args).unwrap();
        let mut q = Qmp::connect(&qmp, BOOT).unwrap();
        q.execute("cont", "{}").unwrap();
        let status = q.execute("query-status", "{}").unwrap();
        assert!(status.contains("\"running\""), "{status}");
        q.call("quit", "{}").unwrap();
        let (status, stderr) = vm.wait(BOOT).unwrap();
        eprintln!("--- QEMU stderr ---\n{stderr}");
        assert!(status.success(), "QEMU failed: {status}\n{stderr}");
        assert!(!stderr.contains(NO_VOICE), "{stderr}");
    }
}

#[test]
fn input_typed_while_the_vm_is_stopped_arrives_after_cont() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let params = "rc.scenario=echo rc.echo_dev=/dev/hvc0 rc.echo_bytes=1000";
    let args = guest_args(dir.path(), params, &opts, false, None, &[]);
    let vm = Vm::start(&args).unwrap();
    let mut qmp = Qmp::connect(&dir.path().join("qmp.sock"), BOOT).unwrap();
    let mut hvc = console_of(&consumer, "hvc0");
    let mut out = Vec::new();
    let ready = b"rc-echo-ready\n";
    hvc.read_until(&mut out, ready.len(), Duration::ZERO, BOOT)
        .unwrap();
    assert!(out.ends_with(ready), "{:?}", String::from_utf8_lossy(&out));

    qmp.execute("stop", "{}").unwrap();
    let line = b"typed while stopped\n";
    assert_eq!(hvc.send_input(line).unwrap(), line.len());
    // Let the plugin see the input while the console takes none.
    thread::sleep(Duration::from_secs(1));
    qmp.execute("cont", "{}").unwrap();

    let answer = b"got:typed while stopped\n";
    let want = ready.len() + answer.len();
    let r = hvc.read_until(&mut out, want, Duration::ZERO, Duration::from_secs(60));
    let stderr = if r.is_err() || out.len() < want {
        vm.kill()
    } else {
        assert_eq!(hvc.send_input(b"quit\n").unwrap(), 5);
        let (status, stderr) = vm.wait(BOOT).unwrap();
        assert!(status.success(), "{stderr}");
        stderr
    };
    assert_eq!(
        String::from_utf8_lossy(&out[ready.len().min(out.len())..]),
        String::from_utf8_lossy(answer),
        "input typed while the VM was stopped did not arrive after cont ({r:?})\nguest:\n{}\nQEMU:\n{stderr}",
        guest_log(dir.path())
    );
}

#[test]
fn chardev_change_away_from_a_full_plugin_leaves_the_console_writable() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}:ring=4K", consumer.path().display());
    let params = "rc.scenario=console rc.seed=5 rc.serial_bytes=1 rc.hvc_bytes=1048576";
    let args = guest_args(dir.path(), params, &opts, false, None, &[]);
    let vm = Vm::start(&args).unwrap();
    let mut qmp = Qmp::connect(&dir.path().join("qmp.sock"), BOOT).unwrap();
    // Attached but never read: the ring fills and the console waits for it (the guest's
    // vCPU with it: the hvc driver waits for the host).
    let _hvc = console_of(&consumer, "hvc0");
    wait_until("the guest starts writing", BOOT, || {
        guest_log(dir.path()).contains("console: start")
    });
    thread::sleep(Duration::from_secs(3));
    assert!(
        !guest_log(dir.path()).contains("hvc0 done"),
        "hvc0 was not held back by the full plugin"
    );
    qmp.execute(
        "chardev-change",
        r#"{"id":"hvc0","backend":{"type":"null","data":{}}}"#,
    )
    .unwrap();
    let done = Instant::now() + Duration::from_secs(60);
    while Instant::now() < done && !guest_log(dir.path()).contains("scenario console done") {
        thread::sleep(Duration::from_millis(100));
    }
    let finished = guest_log(dir.path()).contains("scenario console done");
    let stderr = if finished {
        let (status, stderr) = vm.wait(BOOT).unwrap();
        assert!(status.success(), "{stderr}");
        stderr
    } else {
        vm.kill()
    };
    assert!(
        finished,
        "the console stayed throttled after chardev-change to null\nguest:\n{}\nQEMU:\n{stderr}",
        guest_log(dir.path())
    );
}

/// QEMU started with `-chardev plugin` of `so` and `-S`: quits at once through QMP when it
/// starts; returns whether it ran and its stderr.
fn load_chardev_plugin(dir: &Path, so: &Path) -> (bool, String) {
    let qmp = dir.join("load.sock");
    let _ = std::fs::remove_file(&qmp);
    let args: Vec<String> = [
        "-M",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-S",
        "-chardev",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("plugin,id=c0,path={}", so.display()),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ])
    .collect();
    let mut vm = Vm::start(&args).unwrap();
    // QEMU either refuses the plugin and exits, or starts and opens its QMP socket.
    let deadline = Instant::now() + BOOT;
    while !qmp.exists() && vm.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "QEMU neither started nor exited");
        thread::sleep(Duration::from_millis(20));
    }
    let ran = match Qmp::connect(&qmp, Duration::from_secs(5)) {
        Ok(mut q) => {
            let chardevs = q.execute("query-chardev", "{}").unwrap();
            assert!(chardevs.contains("plugin:"), "{chardevs}");
            let _ = q.call("quit", "{}");
            true
        }
        Err(_) => false,
    };
    let (_, stderr) = vm.wait(Duration::from_secs(60)).unwrap();
    (ran, stderr)
}

#[test]
fn plugins_of_other_abi_versions_load_and_broken_tables_are_refused() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut results: HashMap<u32, (bool, String)> = HashMap::new();
    for abi in [10, 11, 12, 9, 20] {
        let so = tiny_plugin(abi, dir.path()).unwrap();
        results.insert(abi, load_chardev_plugin(dir.path(), &so));
    }
    for abi in [10, 11, 12] {
        let (ran, stderr) = &results[&abi];
        assert!(*ran, "ABI variant {abi} did not load:\n{stderr}");
        // The plugin reads QEMU's host table by its size: a member QEMU lacks is absent.
        let want = format!("tiny plugin: ABI variant {abi}, host ABI 1.1");
        assert!(stderr.contains(&want), "{stderr}");
        assert!(stderr.contains("1.2 host member absent"), "{stderr}");
    }
    let (ran, stderr) = &results[&9];
    assert!(
        !*ran && stderr.contains("chardev ops is too small"),
        "{stderr}"
    );
    let (ran, stderr) = &results[&20];
    assert!(!*ran && stderr.contains("has ABI version 2."), "{stderr}");
}

#[test]
fn plugins_load_only_from_an_absolute_path_and_only_at_startup() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let so = tiny_plugin(11, dir.path()).unwrap();
    let relative = PathBuf::from(so.file_name().unwrap());
    let (ran, stderr) = load_chardev_plugin(dir.path(), &relative);
    assert!(!ran && stderr.contains("not an absolute path"), "{stderr}");
    let (ran, stderr) = load_chardev_plugin(dir.path(), &so);
    assert!(ran, "{stderr}");

    let qmp = dir.path().join("run.sock");
    let args: Vec<String> = ["-M", "none", "-nodefaults", "-display", "none", "-qmp"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("unix:{},server=on,wait=off", qmp.display())])
        .collect();
    let vm = Vm::start(&args).unwrap();
    let mut q = Qmp::connect(&qmp, Duration::from_secs(30)).unwrap();
    let arguments = format!(
        r#"{{"id":"late","backend":{{"type":"plugin","data":{{"path":"{}"}}}}}}"#,
        so.display()
    );
    let reply = q.call("chardev-add", &arguments).unwrap();
    let _ = q.call("quit", "{}");
    let _ = vm.wait(Duration::from_secs(60));
    assert!(
        reply.contains("\"error\"")
            && reply.contains("only be loaded while the machine is created"),
        "chardev-add of a plugin on a running machine: {reply}"
    );
}
