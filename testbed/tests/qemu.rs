//! Real QEMU (patched, under TCG) booting the test guest with the plugin on isa-serial,
//! virtconsole and a sound card; the test consumer reads the rings and compares what the
//! guest wrote, byte for byte and tone for tone.

use std::collections::HashMap;
use std::io::Read;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testbed::consumer::{Registration, TestConsumer};
use testbed::kit::bins::plugin;
use testbed::kit::Ringcastd;
use testbed::qemu::{self, GuestRun, SoundCard};
use testbed::stream::GuestStream;
use testbed::tone::analyze_s16le;

const BOOT: Duration = Duration::from_secs(180);

fn skip() -> bool {
    if qemu::skipped() {
        eprintln!("real-QEMU test skipped: RINGCAST_SKIP_QEMU is set (scripts/test.sh --no-qemu)");
        return true;
    }
    false
}

fn run(dir: &std::path::Path, params: &str, opts: &str, sound: Option<SoundCard>) -> GuestRun {
    GuestRun {
        vm_name: "e2e".into(),
        params: params.into(),
        plugin: plugin(),
        plugin_opts: opts.into(),
        log_file: dir.join("ttyS1.log"),
        serial: true,
        virtconsole: true,
        sound,
        audiodev_options: String::new(),
    }
}

/// Waits for QEMU to exit by itself (the guest powers off); returns its stderr.
fn wait_exit(mut child: Child, log: &std::path::Path) -> String {
    let deadline = Instant::now() + BOOT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let guest_log = std::fs::read_to_string(log).unwrap_or_default();
            eprintln!("--- QEMU stderr ---\n{err}--- guest log ---\n{guest_log}");
            assert!(
                status.success(),
                "QEMU failed: {status}\n{err}\nguest:\n{guest_log}"
            );
            assert!(
                guest_log.contains(" done"),
                "the guest did not finish its scenario:\n{guest_log}\nQEMU:\n{err}"
            );
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let guest_log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("QEMU did not exit within {BOOT:?}; guest log:\n{guest_log}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// How long the guest's sound driver took to play its tone, from the guest log (`rcguest
/// tone ... took 0.879 s`): under TCG on a loaded machine the guest can feed the emulated
/// card late, and the card then plays for longer than the tone.
fn guest_play_ms(guest_log: &std::path::Path) -> Option<f64> {
    let log = std::fs::read_to_string(guest_log).ok()?;
    let line = log.lines().find(|l| l.contains("rcguest: tone"))?;
    let took = line.split("took ").nth(1)?.split_whitespace().next()?;
    Some(took.parse::<f64>().ok()? * 1000.0)
}

/// Asserts that `pcm` (QEMU's 44.1 kHz stereo s16) holds one tone of `hz` ± `tol_hz` lasting
/// `ms` - 60 ms (the 10 ms periods at either end) to 60 ms more than the tone or than the
/// guest took to play it (`guest_log`), whichever is longer.
fn assert_tone(pcm: &[u8], hz: f64, tol_hz: f64, ms: f64, guest_log: &std::path::Path) {
    assert_tone_at(pcm, 44_100, hz, tol_hz, ms, guest_log);
}

/// [`assert_tone`] for stereo s16 at `rate`.
fn assert_tone_at(
    pcm: &[u8],
    rate: u32,
    hz: f64,
    tol_hz: f64,
    ms: f64,
    guest_log: &std::path::Path,
) {
    let t = analyze_s16le(pcm, 2, rate);
    assert!((t.frequency_hz - hz).abs() < tol_hz, "tone {t:?}");
    let lasted = t.active_frames as f64 * 1000.0 / f64::from(rate);
    let played = guest_play_ms(guest_log).unwrap_or(ms).max(ms);
    assert!(
        lasted > ms - 60.0 && lasted < played + 60.0,
        "tone lasted {lasted} ms for a {ms} ms tone the guest took {played} ms to play: {t:?}"
    );
}

/// What the consumer collected per device.
#[derive(Default)]
struct Collected {
    console: HashMap<String, (Vec<u8>, u64)>,
    audio: Vec<u8>,
    audio_periods: u64,
    audio_seq_gaps: u64,
}

/// Accepts devices until `done`, reading each in its own thread; `pause` slows console
/// reads down; `want` says how many console bytes to wait for per device.
fn consume(
    consumer: TestConsumer,
    want: HashMap<&'static str, usize>,
    pause: Duration,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<Collected> {
    thread::spawn(move || {
        let mut readers = Vec::new();
        while !done.load(Ordering::Relaxed) {
            let Ok(reg) = consumer.accept(Duration::from_millis(200)) else {
                continue;
            };
            let done = done.clone();
            let want = want.clone();
            readers.push(thread::spawn(move || match reg {
                Registration::Console(mut c) => {
                    let id = c.desc.device_id.clone();
                    let len = want.get(id.as_str()).copied().unwrap_or(0);
                    let mut got = Vec::new();
                    // Until everything arrived, or QEMU is gone and the ring is empty.
                    while got.len() < len {
                        let finished = done.load(Ordering::Relaxed);
                        let before = got.len();
                        let _ = c.read_until(&mut got, len, pause, Duration::from_millis(200));
                        if finished && got.len() == before {
                            break;
                        }
                    }
                    // Stay attached until QEMU is gone, as a daemon would.
                    while !done.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    (Some((id, got, c.lost + c.start_position)), Vec::new(), 0, 0)
                }
                Registration::Audio(mut a) => {
                    let mut pcm = Vec::new();
                    let (mut n, mut gaps, mut next) = (0u64, 0u64, None);
                    loop {
                        let finished = done.load(Ordering::Relaxed);
                        for (meta, p) in a.pop_all().unwrap() {
                            if let Some(want) = next {
                                gaps += meta.seq - want;
                            }
                            next = Some(meta.seq + 1);
                            n += 1;
                            pcm.extend_from_slice(&p);
                        }
                        if finished {
                            break;
                        }
                        a.wait(Duration::from_millis(50)).unwrap();
                    }
                    (None, pcm, n, gaps)
                }
            }));
        }
        let mut c = Collected::default();
        for r in readers {
            let (console, pcm, n, gaps) = r.join().unwrap();
            if let Some((id, bytes, lost)) = console {
                c.console.insert(id, (bytes, lost));
            }
            c.audio.extend(pcm);
            c.audio_periods += n;
            c.audio_seq_gaps += gaps;
        }
        c
    })
}

#[test]
fn guest_console_and_tone_arrive_exactly_through_the_plugin() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let (serial_len, hvc_len) = (256 * 1024 + 3, 4 * 1024 * 1024 + 5);
    let params = format!(
        "rc.scenario=all rc.seed=21 rc.hvc_seed=22 rc.serial_bytes={serial_len} \
         rc.hvc_bytes={hvc_len} rc.tone_hz=1000 rc.tone_ms=1000 rc.rate=48000"
    );
    let done = Arc::new(AtomicBool::new(false));
    let want = HashMap::from([("serial0", serial_len), ("hvc0", hvc_len)]);
    let reader = consume(consumer, want, Duration::ZERO, done.clone());
    let g = run(dir.path(), &params, &opts, Some(SoundCard::Ac97));
    let stderr = wait_exit(g.spawn().unwrap(), &g.log_file);
    done.store(true, Ordering::Relaxed);
    let c = reader.join().unwrap();

    let (serial, lost) = &c.console["serial0"];
    assert_eq!(*lost, 0, "{stderr}");
    assert!(
        *serial == GuestStream::bytes(21, serial_len),
        "ttyS0 bytes differ"
    );
    let (hvc, lost) = &c.console["hvc0"];
    assert_eq!(*lost, 0);
    assert!(*hvc == GuestStream::bytes(22, hvc_len), "hvc0 bytes differ");

    // QEMU's mixing engine delivers 44.1 kHz stereo s16 whatever the guest plays.
    assert_eq!(c.audio_seq_gaps, 0, "audio periods were dropped");
    assert_tone(&c.audio, 1000.0, 10.0, 1000.0, &g.log_file);
    // AC97's capture voices got the plugin's (silent) input: QEMU could create them.
    assert!(!stderr.contains(NO_VOICE), "{stderr}");
}

/// What QEMU logs when an audiodev cannot create a voice the sound card asks for.
const NO_VOICE: &str = "Could not create a backend for voice";

/// AC97 opens its output and both capture voices (line-in `ac97.pi`, microphone `ac97.mc`)
/// when the machine is created, before any guest code runs: start QEMU paused, let it
/// finish creating the machine (its QMP greeting), quit, and read its log.
#[test]
fn ac97_on_the_plugin_gets_every_voice_it_asks_for() {
    if skip() {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    let qemu = qemu::qemu_binary().unwrap();
    let so = plugin();
    let dir = tempfile::tempdir().unwrap();
    let opts = format!("socket={}", dir.path().join("nobody.sock").display()).replace(',', ",,");
    let mut child = std::process::Command::new(&qemu)
        .args([
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-S",
        ])
        .args([
            "-L",
            "/usr/share/seabios",
            "-L",
            "/usr/share/qemu",
            "-name",
            "guest=voices",
        ])
        .arg("-audiodev")
        .arg(format!(
            "plugin,id=snd0,path={},config={opts}",
            so.display()
        ))
        .args(["-device", "AC97,audiodev=snd0", "-qmp", "stdio"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut greeting = String::new();
    stdout.read_line(&mut greeting).unwrap();
    assert!(
        greeting.contains("\"QMP\""),
        "no QMP greeting: {greeting:?}"
    );
    stdin
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("QEMU did not quit");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("--- QEMU stderr ---\n{stderr}");
    assert!(status.success(), "QEMU failed: {status}\n{stderr}");
    assert!(!stderr.contains(NO_VOICE), "{stderr}");
    assert!(
        !stderr.contains("could not open an input voice"),
        "{stderr}"
    );
}

#[test]
fn slow_consumer_loses_no_console_byte_on_either_device() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    // Tiny rings and a reader that sleeps after every read: the guest must be throttled
    // (16550 via the watch, virtconsole via the throttling patch), never lose a byte.
    let opts = format!("socket={}:ring=4K", consumer.path().display());
    let (serial_len, hvc_len) = (64 * 1024, 1024 * 1024);
    let params = format!(
        "rc.scenario=console rc.seed=31 rc.hvc_seed=32 rc.serial_bytes={serial_len} \
         rc.hvc_bytes={hvc_len}"
    );
    let done = Arc::new(AtomicBool::new(false));
    let want = HashMap::from([("serial0", serial_len), ("hvc0", hvc_len)]);
    let reader = consume(consumer, want, Duration::from_millis(2), done.clone());
    let g = run(dir.path(), &params, &opts, None);
    wait_exit(g.spawn().unwrap(), &g.log_file);
    done.store(true, Ordering::Relaxed);
    let c = reader.join().unwrap();
    let (serial, lost) = &c.console["serial0"];
    assert_eq!(*lost, 0);
    assert!(
        *serial == GuestStream::bytes(31, serial_len),
        "ttyS0 bytes differ"
    );
    let (hvc, lost) = &c.console["hvc0"];
    assert_eq!(*lost, 0);
    assert!(*hvc == GuestStream::bytes(32, hvc_len), "hvc0 bytes differ");
}

#[test]
fn typed_input_reaches_the_guest_and_its_answer_comes_back() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let typist = thread::spawn(move || {
        let mut serial = None;
        while serial.is_none() && !d2.load(Ordering::Relaxed) {
            if let Ok(Registration::Console(c)) = consumer.accept(Duration::from_millis(200)) {
                if c.desc.device_id == "serial0" {
                    serial = Some(c);
                }
            }
        }
        let mut c = serial.expect("serial0 registered");
        let mut out = Vec::new();
        let ready = b"rc-echo-ready\n";
        c.read_until(&mut out, ready.len(), Duration::ZERO, BOOT)
            .unwrap();
        assert!(out.ends_with(ready), "{:?}", String::from_utf8_lossy(&out));
        let line = b"hello from the host 0123456789\n";
        assert_eq!(c.send_input(line).unwrap(), line.len());
        let answer = b"got:hello from the host 0123456789\n";
        c.read_until(&mut out, ready.len() + answer.len(), Duration::ZERO, BOOT)
            .unwrap();
        assert_eq!(c.send_input(b"quit\n").unwrap(), 5);
        String::from_utf8_lossy(&out[ready.len()..]).into_owned()
    });
    let g = GuestRun {
        virtconsole: false,
        ..run(
            dir.path(),
            "rc.scenario=echo rc.echo_bytes=1000",
            &opts,
            None,
        )
    };
    wait_exit(g.spawn().unwrap(), &g.log_file);
    done.store(true, Ordering::Relaxed);
    assert_eq!(
        typist.join().unwrap(),
        "got:hello from the host 0123456789\n"
    );
}

#[test]
fn guest_finishes_with_no_consumer_and_the_drops_are_counted() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens: the plugin runs as a flight recorder and the guest must not hang.
    let opts = format!(
        "socket={}:ring=64K",
        dir.path().join("nobody.sock").display()
    );
    let params = "rc.scenario=console rc.seed=41 rc.serial_bytes=131072 rc.hvc_bytes=2097152";
    let g = run(dir.path(), params, &opts, Some(SoundCard::Ac97));
    let stderr = wait_exit(g.spawn().unwrap(), &g.log_file);
    assert!(stderr.contains("flight recorder"), "{stderr}");
    // 2 MiB through a 64 KiB recorder: exactly the surplus is reported dropped.
    let want = format!(
        "e2e/hvc0: 2097152 console bytes written, {} dropped",
        2097152 - 65536
    );
    assert!(stderr.contains(&want), "expected '{want}' in:\n{stderr}");
    let want = format!(
        "e2e/serial0: 131072 console bytes written, {} dropped",
        131072 - 65536
    );
    assert!(stderr.contains(&want), "expected '{want}' in:\n{stderr}");
}

#[test]
fn tone_through_intel_hda_arrives_at_the_right_frequency() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let done = Arc::new(AtomicBool::new(false));
    let reader = consume(consumer, HashMap::new(), Duration::ZERO, done.clone());
    let params = "rc.scenario=tone rc.tone_hz=440 rc.tone_ms=700 rc.rate=44100";
    let g = run(dir.path(), params, &opts, Some(SoundCard::IntelHda));
    wait_exit(g.spawn().unwrap(), &g.log_file);
    done.store(true, Ordering::Relaxed);
    let c = reader.join().unwrap();
    assert!(c.audio_periods > 0);
    assert_tone(&c.audio, 440.0, 5.0, 700.0, &g.log_file);
}

/// Plays the guest's 440 Hz tone through AC97 with the guest's mixer at `volume` (percent;
/// `None` leaves it alone) and `options` on the audiodev; returns the PCM (s16le stereo).
fn tone_at_volume(options: &str, volume: Option<u32>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let done = Arc::new(AtomicBool::new(false));
    let reader = consume(consumer, HashMap::new(), Duration::ZERO, done.clone());
    let mut params = "rc.scenario=tone rc.tone_hz=440 rc.tone_ms=700 rc.rate=44100".to_owned();
    if let Some(v) = volume {
        params.push_str(&format!(" rc.volume={v}"));
    }
    let g = GuestRun {
        serial: false,
        virtconsole: false,
        audiodev_options: options.into(),
        ..run(dir.path(), &params, &opts, Some(SoundCard::Ac97))
    };
    let stderr = wait_exit(g.spawn().unwrap(), &g.log_file);
    assert!(!stderr.contains("not applied"), "{stderr}");
    done.store(true, Ordering::Relaxed);
    let c = reader.join().unwrap();
    assert!(c.audio_periods > 0, "no audio arrived");
    c.audio
}

/// The largest absolute sample of the left channel.
fn peak(pcm: &[u8]) -> u16 {
    pcm.chunks_exact(4)
        .map(|f| i16::from_le_bytes([f[0], f[1]]).unsigned_abs())
        .max()
        .unwrap_or(0)
}

/// The guest's output volume reaches what the plugin gets, with QEMU's mixing engine on and
/// off: the audio driver applies it itself (with the mixing engine off nothing else would).
#[test]
fn guest_volume_applies_with_the_mixing_engine_on_and_off() {
    if skip() {
        return;
    }
    // The guest's tone has amplitude 16383. At 40% (AC97's master and PCM attenuators
    // together) QEMU's mixing engine brings it to about 2500 on a backend without a volume
    // hook (`-audiodev wav`).
    for options in ["out.mixing-engine=off", "out.mixing-engine=on"] {
        let full = tone_at_volume(options, Some(100));
        let t = analyze_s16le(&full, 2, 44100);
        assert!((t.frequency_hz - 440.0).abs() < 5.0, "{options}: {t:?}");
        assert!(
            peak(&full) > 15_000,
            "{options}: full volume peak {}",
            peak(&full)
        );
        let quieter = tone_at_volume(options, Some(40));
        let p = peak(&quieter);
        assert!(
            (1_000..8_000).contains(&p),
            "{options}: at 40% the peak was {p} (full volume: {})",
            peak(&full)
        );
    }
}

#[test]
fn guest_output_goes_through_ringcastd_to_subscribers_and_the_spool() {
    use sidecar::{Config, Daemon, DeviceKey, Item, StartAt};
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/ringcastd.sock");
    let cfg = Config {
        control_socket: sidecar::control_socket_for(&socket),
        socket: socket.clone(),
        state_dir: dir.path().join("state"),
        ..Config::default()
    };
    let daemon = Daemon::start(cfg).unwrap();
    let h = daemon.handle();
    let (serial_len, hvc_len) = (128 * 1024, 4 * 1024 * 1024);
    let params = format!(
        "rc.scenario=all rc.seed=51 rc.hvc_seed=52 rc.serial_bytes={serial_len} \
         rc.hvc_bytes={hvc_len} rc.tone_hz=880 rc.tone_ms=800 rc.rate=48000"
    );
    let g = run(
        dir.path(),
        &params,
        &format!("socket={}", socket.display()),
        Some(SoundCard::Ac97),
    );
    let child = g.spawn().unwrap();
    // Audio is live only: subscribe as soon as the device shows up (the tone comes after
    // the console part).
    let snd = DeviceKey::new("e2e", "snd0");
    let deadline = Instant::now() + BOOT;
    while !h.devices().iter().any(|d| d.key == snd) {
        assert!(Instant::now() < deadline, "snd0 never registered");
        thread::sleep(Duration::from_millis(20));
    }
    let mut audio = h.subscribe_audio(&snd, 1024).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let audio_reader = thread::spawn(move || {
        let mut pcm = Vec::new();
        let mut skipped = 0;
        loop {
            let was_done = finished.load(Ordering::Relaxed);
            match audio.next_blocking(Duration::from_millis(200)) {
                Ok(Some(p)) => {
                    skipped += p.skipped_before;
                    pcm.extend_from_slice(&p.pcm);
                }
                // The VM powered off: live audio ends after the queued periods.
                Err(sidecar::Error::NotAttached(_)) => return (pcm, skipped),
                Err(e) => panic!("audio subscription: {e}"),
                Ok(None) if was_done => return (pcm, skipped),
                Ok(None) => {}
            }
        }
    });
    wait_exit(child, &g.log_file);
    done.store(true, Ordering::Relaxed);
    for (dev, seed, len) in [("serial0", 51, serial_len), ("hvc0", 52, hvc_len)] {
        let key = DeviceKey::new("e2e", dev);
        let mut sub = h.subscribe(&key, StartAt::Offset(0)).unwrap();
        let mut got = Vec::new();
        while got.len() < len {
            match sub.next_blocking(Duration::from_secs(10)).unwrap() {
                Some(Item::Chunk(c)) => got.extend_from_slice(&c.bytes),
                Some(Item::Gap(gap)) => panic!("{dev}: gap {gap:?}"),
                None => panic!("{dev}: only {} of {len} bytes", got.len()),
            }
        }
        assert!(got == GuestStream::bytes(seed, len), "{dev} bytes differ");
        let spool = dir.path().join(format!("state/e2e/{dev}/current.log"));
        assert!(
            std::fs::read(&spool).unwrap() == got,
            "{dev}: spool differs"
        );
        assert_eq!(h.device_stats(&key).unwrap().dropped_flight_recorder, 0);
    }
    let (pcm, skipped) = audio_reader.join().unwrap();
    assert_eq!(skipped, 0);
    assert_tone(&pcm, 880.0, 9.0, 800.0, &g.log_file);
    daemon.shutdown();
}

#[test]
fn patched_qemu_lists_the_plugin_backends_in_its_help() {
    if skip() {
        return;
    }
    let qemu = qemu::qemu_binary().unwrap();
    let out = std::process::Command::new(&qemu)
        .args(["-M", "none", "-chardev", "help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim() == "plugin"), "{text}");
    let out = std::process::Command::new(&qemu)
        .args(["-audiodev", "help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.trim() == "plugin"), "{text}");
}

/// ringcastd from the test kit, with its state under `dir`.
fn start_ringcastd(dir: &std::path::Path) -> Ringcastd {
    Ringcastd::start(dir, &dir.join("state"), &[])
}

/// Waits until `name` is in `ringcast list`.
fn wait_for_device(d: &Ringcastd, name: &str) {
    testbed::kit::wait_until(&format!("{name} in `ringcast list`"), BOOT, || {
        let out = d.ringcast().arg("list").output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(name)
    });
}

#[test]
fn guest_console_and_tone_reach_ringcast_capture_and_play_over_quic() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_ringcastd(dir.path());
    let (serial_len, hvc_len) = (200_000, 3_000_000);
    let params = format!(
        "rc.scenario=all rc.seed=61 rc.hvc_seed=62 rc.serial_bytes={serial_len} \
         rc.hvc_bytes={hvc_len} rc.tone_hz=660 rc.tone_ms=900 rc.rate=48000"
    );
    let opts = format!("socket={}", d.socket().display());
    let g = run(dir.path(), &params, &opts, Some(SoundCard::Ac97));
    let qemu = g.spawn().unwrap();
    wait_for_device(&d, "e2e/snd0");
    let wav = dir.path().join("tone.wav");
    let mut play = d
        .ringcast()
        .args(["play", "e2e/snd0", "--wav"])
        .arg(&wav)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_exit(qemu, &g.log_file);
    // The player ends by itself when the VM is gone, finishing the WAV.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = play.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = play.kill();
            panic!("ringcast play did not end after the VM powered off");
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "ringcast play failed");
    for (dev, seed, len) in [("serial0", 61, serial_len), ("hvc0", 62, hvc_len)] {
        let file = dir.path().join(format!("{dev}.cap"));
        let st = d
            .ringcast()
            .args(["capture", &format!("e2e/{dev}"), "-o"])
            .arg(&file)
            .status()
            .unwrap();
        assert!(st.success(), "ringcast capture {dev} failed");
        let got = std::fs::read(&file).unwrap();
        assert_eq!(got.len(), len, "{dev}");
        assert!(
            got == GuestStream::bytes(seed, len),
            "{dev} bytes differ over QUIC"
        );
    }
    let wav_bytes = std::fs::read(&wav).unwrap();
    assert_eq!(&wav_bytes[..4], b"RIFF");
    // 44-byte canonical header; the format is QEMU's 44.1 kHz stereo s16.
    assert_eq!(
        u32::from_le_bytes(wav_bytes[24..28].try_into().unwrap()),
        44100
    );
    assert_eq!(u16::from_le_bytes(wav_bytes[22..24].try_into().unwrap()), 2);
    assert_tone(&wav_bytes[44..], 660.0, 7.0, 900.0, &g.log_file);
}

#[test]
fn ringcast_qmp_gets_a_real_query_status_reply_from_a_plugin_monitor() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_ringcastd(dir.path());
    let opts = format!("socket={}", d.socket().display());
    let mut g = run(dir.path(), "rc.scenario=idle rc.idle_s=60", &opts, None);
    g.virtconsole = false;
    let qemu = qemu::qemu_binary().unwrap();
    let guest = qemu::guest_dir().unwrap();
    let mut args = g.args(&guest);
    args.extend([
        "-chardev".into(),
        format!(
            "plugin,id=mon0,path={},config={}",
            g.plugin.display(),
            opts.replace(',', ",,")
        ),
        "-mon".into(),
        "chardev=mon0,mode=control".into(),
    ]);
    let child = std::process::Command::new(qemu)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    wait_for_device(&d, "e2e/mon0");
    let out = d
        .ringcast()
        .args(["qmp", "e2e/mon0", r#"{"execute":"query-status"}"#])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{reply}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(reply.trim()).unwrap();
    assert_eq!(v["return"]["status"], "running", "{reply}");
    assert_eq!(v["return"]["running"], true);
    // And QEMU obeys a command sent the same way.
    let out = d
        .ringcast()
        .args(["qmp", "e2e/mon0", r#"{"execute":"quit"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "QEMU did not quit on QMP quit");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guest's tone through `card`, played by `ringcast play --codec opus --wav`: Opus at
/// 48 kHz out of QEMU's 44.1 kHz, at the tone's frequency and length.
fn opus_tone_through(card: SoundCard, hz: f64) {
    let dir = tempfile::tempdir().unwrap();
    let d = start_ringcastd(dir.path());
    let params = format!("rc.scenario=tone rc.tone_hz={hz} rc.tone_ms=900 rc.rate=44100");
    let opts = format!("socket={}", d.socket().display());
    let g = run(dir.path(), &params, &opts, Some(card));
    let qemu = g.spawn().unwrap();
    wait_for_device(&d, "e2e/snd0");
    let wav = dir.path().join("tone.wav");
    let play = d
        .ringcast()
        .args(["play", "e2e/snd0", "--codec", "opus", "--wav"])
        .arg(&wav)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_exit(qemu, &g.log_file);
    let out = play.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ringcast play failed: {err}");
    assert!(err.contains("opus 64 kbit/s"), "not Opus: {err}");
    // Shown when the tone is wrong: what the jitter buffer did.
    eprintln!("{err}");
    let wav_bytes = std::fs::read(&wav).unwrap();
    assert_eq!(
        u32::from_le_bytes(wav_bytes[24..28].try_into().unwrap()),
        48_000
    );
    assert_eq!(u16::from_le_bytes(wav_bytes[22..24].try_into().unwrap()), 2);
    assert_tone_at(&wav_bytes[44..], 48_000, hz, 7.0, 900.0, &g.log_file);
}

#[test]
fn opus_tone_through_ac97_arrives_at_the_right_frequency_and_length() {
    if skip() {
        return;
    }
    opus_tone_through(SoundCard::Ac97, 660.0);
}

#[test]
fn opus_tone_through_intel_hda_arrives_at_the_right_frequency_and_length() {
    if skip() {
        return;
    }
    opus_tone_through(SoundCard::IntelHda, 440.0);
}

/// What the guest measured of its recording (`rcguest: record ... active N frames, rises
/// R, frequency F Hz, ...` on its log): (active frames, frequency).
fn recorded(guest_log: &std::path::Path) -> Option<(u64, f64)> {
    let log = std::fs::read_to_string(guest_log).ok()?;
    let line = log.lines().find(|l| l.contains("rcguest: record"))?;
    let field = |name: &str| line.split(name).nth(1)?.split_whitespace().next();
    let active = field("active ")?.parse().ok()?;
    let hz = field("frequency ")?.parse().ok()?;
    Some((active, hz))
}

/// `ringcast mic --codec CODEC` sends a 1 kHz tone to `card`'s capture side while the
/// guest records 3 s of it at 44.1 kHz (OSS, line-in): the guest measures 1 kHz over at
/// least one second of sound, and QEMU created every voice the card asked for.
fn mic_tone_recorded_through(card: SoundCard, codec: &str) {
    mic_recorded_through(card, codec, &["--tone", "1000"], &[]);
}

/// `ringcast mic` with `source` (its options) and `env` sends a 1 kHz tone: as above.
fn mic_recorded_through(card: SoundCard, codec: &str, source: &[&str], env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let d = start_ringcastd(dir.path());
    let params = "rc.scenario=record rc.record_ms=3000 rc.rate=44100";
    let opts = format!("socket={}", d.socket().display());
    let g = run(dir.path(), params, &opts, Some(card));
    let qemu = g.spawn().unwrap();
    wait_for_device(&d, "e2e/snd0");
    let mut mic = d
        .ringcast()
        .args(["mic", "e2e/snd0", "--codec", codec])
        .args(source)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let qemu_err = wait_exit(qemu, &g.log_file);
    // The VM went away: `mic` ends by itself, saying so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while mic.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = mic.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = mic.wait_with_output().unwrap();
    let mic_err = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- ringcast mic ---\n{mic_err}");
    assert!(
        mic_err.contains("sending to e2e/snd0's input: 44100 Hz, 2 channels, s16"),
        "{mic_err}"
    );
    if source.is_empty() {
        let from = "recording from the sound input \"default\"";
        assert!(mic_err.contains(from), "{mic_err}");
    }
    let sent_as = if codec == "opus" { "as opus" } else { "as pcm" };
    assert!(mic_err.contains(sent_as), "not sent {sent_as}: {mic_err}");
    assert!(!qemu_err.contains(NO_VOICE), "{qemu_err}");
    let guest_log = std::fs::read_to_string(&g.log_file).unwrap_or_default();
    let (active, hz) = recorded(&g.log_file)
        .unwrap_or_else(|| panic!("no record report in the guest log:\n{guest_log}"));
    assert!(
        (hz - 1000.0).abs() < 10.0,
        "the guest recorded {hz} Hz:\n{guest_log}"
    );
    assert!(
        active > 44_100,
        "the guest recorded only {active} frames of sound:\n{guest_log}"
    );
}

#[test]
fn a_tone_sent_with_mic_is_recorded_by_the_guest_through_ac97() {
    if skip() {
        return;
    }
    mic_tone_recorded_through(SoundCard::Ac97, "pcm");
}

#[test]
fn a_tone_sent_with_mic_is_recorded_by_the_guest_through_intel_hda() {
    if skip() {
        return;
    }
    mic_tone_recorded_through(SoundCard::IntelHdaDuplex, "pcm");
}

#[test]
fn a_tone_sent_with_mic_as_opus_is_recorded_by_the_guest_through_ac97() {
    if skip() {
        return;
    }
    mic_tone_recorded_through(SoundCard::Ac97, "opus");
}

#[test]
fn a_tone_sent_with_mic_as_opus_is_recorded_by_the_guest_through_intel_hda() {
    if skip() {
        return;
    }
    mic_tone_recorded_through(SoundCard::IntelHdaDuplex, "opus");
}

/// With no source option `mic` records ALSA's default input: here an ALSA configuration
/// (ALSA_CONFIG_PATH) whose `default` is a `file` plugin reading a 1 kHz tone (raw s16,
/// 44.1 kHz stereo) over a `null` device, so the sound comes through libasound's capture
/// path as from a sound card.
#[test]
fn the_default_sound_input_sent_with_mic_is_recorded_by_the_guest() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone.raw");
    let pcm: Vec<u8> = (0..44_100 * 30)
        .flat_map(|n| {
            let v = (0.5 * 32767.0 * (std::f64::consts::TAU * 1000.0 * n as f64 / 44_100.0).sin())
                as i16;
            [v.to_le_bytes(), v.to_le_bytes()].concat()
        })
        .collect();
    std::fs::write(&tone, pcm).unwrap();
    let conf = dir.path().join("asound.conf");
    let text = format!(
        "pcm.!default {{\n  type file\n  slave.pcm {{ type null }}\n  file \"/dev/null\"\n  \
         infile \"{}\"\n  format \"raw\"\n}}\n",
        tone.display()
    );
    std::fs::write(&conf, text).unwrap();
    let conf = conf.to_str().unwrap();
    mic_recorded_through(SoundCard::Ac97, "pcm", &[], &[("ALSA_CONFIG_PATH", conf)]);
}
