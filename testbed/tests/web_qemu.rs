//! The browser client against real QEMU (patched, under TCG) booting the test guest: the
//! page in headless Chromium lists the guest's devices, types into its console and reads
//! the answer (a second tab spying), downloads a capture identical to what the guest
//! wrote, and plays the guest's tone through its AudioWorklet.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use testbed::kit::bins::plugin;
use testbed::kit::browser::{Browser, Tab};
use testbed::kit::Ringcastd;
use testbed::qemu::{self, GuestRun, SoundCard};
use testbed::stream::GuestStream;
use transport_quic::authz::Rule;

const BOOT: Duration = Duration::from_secs(180);
const T: Duration = Duration::from_secs(30);

fn skip() -> bool {
    if qemu::skipped() {
        eprintln!("real-QEMU test skipped: RINGCAST_SKIP_QEMU is set (scripts/test.sh --no-qemu)");
        return true;
    }
    false
}

fn web_ringcastd(dir: &std::path::Path) -> Ringcastd {
    let d = Ringcastd::start(dir, &dir.join("state"), &["--web"]);
    for rule in ["cn:alice */* all", "cn:bob */* spy"] {
        transport_quic::local::authorize(&d.control_socket(), &Rule::parse(rule).unwrap()).unwrap();
    }
    d
}

fn link(d: &Ringcastd, who: &str) -> String {
    let out = d
        .ringcast()
        .args(["web-link", who, "--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn browser() -> Browser {
    Browser::launch(&["--ignore-certificate-errors"]).unwrap_or_else(|e| panic!("{e}"))
}

fn open(b: &mut Browser, url: &str) -> Tab {
    b.open_connected(url, T).unwrap()
}

/// Opens a page for `cn:alice` and plays the guest's `e2e/snd0` with `codec` and a 200 ms
/// jitter target, until the worklet has played a second at `hz` (its own count of what it
/// played in the last second); returns the page's audio counters then.
fn play_tone(d: &Ringcastd, b: &mut Browser, codec: &str, hz: f64) -> (Tab, serde_json::Value) {
    let tab = open(b, &link(d, "cn:alice"));
    wait_device(b, &tab, "e2e/snd0");
    b.eval(&tab, "document.getElementById('jitter').value = 200")
        .unwrap();
    b.eval(
        &tab,
        &format!("document.getElementById('codec').value = '{codec}'"),
    )
    .unwrap();
    b.eval(&tab, "ringcast.play('e2e/snd0')").unwrap();
    let expr = format!(
        "(a => a && a.played > a.rate && Math.abs(a.frequency - {hz}) < 7 && a)(ringcast.audio())"
    );
    let a = b
        .wait_for(&tab, "the tone played at its frequency", &expr, BOOT)
        .unwrap();
    eprintln!("the page's audio counters while the tone played: {a}");
    assert_eq!(a["codec"], json!(codec), "{a}");
    assert_eq!(a["underruns"], json!(0), "{a}");
    (tab, a)
}

fn wait_device(b: &mut Browser, tab: &Tab, name: &str) {
    b.wait_listed(tab, name, BOOT).unwrap();
}

fn guest(dir: &std::path::Path, d: &Ringcastd, params: &str, sound: Option<SoundCard>) -> GuestRun {
    GuestRun {
        vm_name: "e2e".into(),
        params: params.into(),
        plugin: plugin(),
        plugin_opts: format!("socket={}", d.socket().display()),
        log_file: dir.join("ttyS1.log"),
        serial: true,
        virtconsole: true,
        sound,
        audiodev_options: String::new(),
    }
}

/// Waits for the guest to power off; its log says whether its scenario finished.
fn wait_exit(mut child: Child, log: &std::path::Path) {
    let deadline = Instant::now() + BOOT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "QEMU did not exit; guest log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let guest_log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        guest_log.contains(" done"),
        "the guest did not finish:\n{guest_log}"
    );
}

/// Kills QEMU if the test fails before it exits.
struct Qemu(Option<Child>);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn typing_in_the_page_reaches_the_guest_and_a_spy_tab_sees_the_answer() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = web_ringcastd(dir.path());
    let g = guest(dir.path(), &d, "rc.scenario=echo rc.echo_bytes=1000", None);
    let mut vm = Qemu(Some(g.spawn().unwrap()));
    let mut b = browser();
    let writer = open(&mut b, &link(&d, "cn:alice"));
    wait_device(&mut b, &writer, "e2e/serial0");
    b.eval(&writer, "ringcast.openConsole('e2e/serial0', 'write')")
        .unwrap();
    let spy = open(&mut b, &link(&d, "cn:bob"));
    wait_device(&mut b, &spy, "e2e/serial0");
    b.eval(&spy, "ringcast.openConsole('e2e/serial0', 'spy')")
        .unwrap();
    b.wait_for(
        &writer,
        "the guest's echo ready",
        "ringcast.screen().includes('rc-echo-ready')",
        BOOT,
    )
    .unwrap();
    b.wait_for(&spy, "spy attached", "ringcast.console().attached", T)
        .unwrap();
    // The spy's keystrokes go nowhere: the guest would answer "got:" to them.
    b.eval(&spy, "document.querySelector('#terminal textarea').focus()")
        .unwrap();
    b.type_line(&spy, "typed by the spy").unwrap();
    b.eval(
        &writer,
        "document.querySelector('#terminal textarea').focus()",
    )
    .unwrap();
    b.type_line(&writer, "hello from the browser").unwrap();
    for tab in [&writer, &spy] {
        b.wait_for(
            tab,
            "the guest's answer",
            "ringcast.screen().includes('got:hello from the browser')",
            T,
        )
        .unwrap();
    }
    b.type_line(&writer, "quit").unwrap();
    wait_exit(vm.0.take().unwrap(), &g.log_file);
    for tab in [&writer, &spy] {
        let screen = b.eval(tab, "ringcast.screen()").unwrap();
        assert!(
            !screen.as_str().unwrap().contains("got:typed by the spy"),
            "{screen}"
        );
    }
    let shot = std::env::var_os("RINGCAST_WEB_SCREENSHOT");
    if let Some(path) = shot {
        b.screenshot(&writer, std::path::Path::new(&path)).unwrap();
    }
}

#[test]
fn the_page_captures_the_guest_console_exactly_and_plays_its_tone() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = web_ringcastd(dir.path());
    let serial_len = 200_000;
    let hz = 660.0;
    let params = format!(
        "rc.scenario=all rc.seed=61 rc.hvc_seed=62 rc.serial_bytes={serial_len} \
         rc.hvc_bytes=100000 rc.tone_hz={hz} rc.tone_ms=4000 rc.rate=48000"
    );
    let g = guest(dir.path(), &d, &params, Some(SoundCard::Ac97));
    let vm = Qemu(Some(g.spawn().unwrap()));
    let mut b = browser();
    // PCM: its periods are the plugin's, so the page's count of lost ones is ringcastd's.
    let (tab, a) = play_tone(&d, &mut b, "pcm", hz);
    // On the stream every period arrives, in order: the only gaps are periods the plugin
    // itself dropped (counted by ringcastd).
    let plugin_lost: u64 = d.stat("e2e/snd0", "LOST:AUDIO").unwrap().parse().unwrap();
    assert_eq!(a["lost"], json!(plugin_lost), "{a}");
    assert_eq!(a["skippedByServer"], json!(0), "{a}");
    assert_eq!(a["reordered"], json!(0), "{a}");
    let mut vm = vm;
    wait_exit(vm.0.take().unwrap(), &g.log_file);
    let cap = b.eval(&tab, "ringcast.capture('e2e/serial0')").unwrap();
    assert_eq!(cap["bytes"], json!(serial_len), "{cap}");
    let file = b.downloads.join("e2e-serial0.log");
    testbed::kit::wait_until("the capture downloaded", T, || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() == serial_len as u64)
    });
    assert!(
        std::fs::read(&file).unwrap() == GuestStream::bytes(61, serial_len),
        "the capture downloaded from the page differs from what the guest wrote"
    );
}

#[test]
fn the_page_plays_the_guests_tone_as_opus_at_its_frequency_without_underruns() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = web_ringcastd(dir.path());
    let hz = 660.0;
    // QEMU's 44.1 kHz, which ringcastd resamples to Opus's 48 kHz.
    let params = format!("rc.scenario=tone rc.tone_hz={hz} rc.tone_ms=4000 rc.rate=44100");
    let g = guest(dir.path(), &d, &params, Some(SoundCard::Ac97));
    let vm = Qemu(Some(g.spawn().unwrap()));
    let mut b = browser();
    let (_tab, a) = play_tone(&d, &mut b, "opus", hz);
    assert_eq!(a["rate"], json!(48_000), "{a}");
    // On the stream every Opus frame arrives and decodes: none concealed.
    assert_eq!(a["lost"], json!(0), "{a}");
    assert_eq!(a["concealed"], json!(0), "{a}");
    assert_eq!(a["decodeErrors"], json!(0), "{a}");
    let mut vm = vm;
    wait_exit(vm.0.take().unwrap(), &g.log_file);
}
