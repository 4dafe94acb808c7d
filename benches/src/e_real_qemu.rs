//! Scenario E (docs/benchmarks.md §E): the patched QEMU under TCG boots the test guest, which
//! writes its deterministic stream to the virtio console (hvc0) and the first 16550 (ttyS0)
//! at the same time; a second guest run plays a tone. Variants, interleaved within one run:
//!
//! * `plugin`: `-chardev plugin` on both devices, drained by ringcastd (`sidecar::Daemon`,
//!   in-process, journals spooled to disk as users run it); bytes read back from the journal.
//! * `file`: `-chardev file` on both devices (the baseline).
//! * `socket`: `-chardev socket,server=on,wait=on` on both devices, each drained by
//!   `socat -u UNIX-CONNECT:... OPEN:file` (lossless: QEMU waits for socat before the guest
//!   starts, and a connected socket chardev throttles the device instead of dropping).
//!
//! Throughput is the guest's own: bytes / (`console: <dev> done` − `console: start`) from
//! the `/proc/uptime` stamps `/init` logs on ttyS1. Every variant's bytes are checked
//! against the stream (sha256 and length).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sidecar::{Config, Daemon, DeviceKey, Item, StartAt};
use testbed::kit::bins::plugin;
use testbed::qemu::{guest_dir, qemu_binary, GuestRun, SoundCard};
use testbed::stream::GuestStream;
use testbed::tone::analyze_s16le;

use crate::report::{median, Comparison, Measurement, Outcome};
use crate::scenario::{Options, Scenario};
use crate::uptime;

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    key: "e",
    title: "E. Real QEMU: guest console throughput (plugin vs -chardev file / socket+socat)",
    about: "Patched QEMU (TCG) boots the test guest, which writes 64 MiB to virtconsole (hvc0) \
            and 1 MiB to the 16550 (ttyS0) at once (--quick: 16 MiB + 256 KiB), then a 2 s \
            440 Hz tone on AC97 in a second boot. Variants, interleaved, 3 repetitions \
            (--quick: 1), medians: plugin (-chardev plugin drained by ringcastd in-process), \
            file (-chardev file, the baseline), socket (-chardev socket drained by socat). \
            Throughput is timed by the guest (/proc/uptime stamps on ttyS1). Bytes are checked \
            on every variant; the tone's frequency and length are measured on what arrived \
            (plugin) and on QEMU's wav audiodev (file). Knobs: --set hvc_bytes=N, \
            --set serial_bytes=N. Needs socat; QEMU and the guest come \
            from qemu-patches/build.sh and testbed/guest/build.sh (cached) or $RINGCAST_QEMU \
            and $RINGCAST_GUEST_DIR.",
    run,
};

const VM: &str = "bench";
const SERIAL_SEED: u64 = 11;
const HVC_SEED: u64 = 12;
const TONE_HZ: f64 = 440.0;
const TONE_MS: f64 = 2000.0;
/// A guest run that takes longer than this is a failure, not a figure.
const RUN_LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plugin,
    File,
    Socket,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Plugin, Variant::File, Variant::Socket];

    fn name(self) -> &'static str {
        match self {
            Variant::Plugin => "plugin",
            Variant::File => "file",
            Variant::Socket => "socket",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    hvc: usize,
    serial: usize,
    reps: usize,
}

/// What one console boot gave.
#[derive(Debug, Clone, Copy)]
struct ConsoleRun {
    hvc_mbps: f64,
    serial_kbps: f64,
    hvc_s: f64,
    serial_s: f64,
    wall_s: f64,
    identical: bool,
    flushes: Option<FlushStats>,
}

/// The virtconsole's `flush_buf` calls, from QEMU's `virtio_console_flush_buf` trace
/// events (only when the run was given `-trace virtio_console_flush_buf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Calls.
    pub calls: u64,
    /// Calls where the backend took less than it was offered (the port is then throttled).
    pub short: u64,
    /// Bytes offered, summed over calls (retries offer the rest again).
    pub offered: u64,
    /// Bytes taken.
    pub taken: u64,
    /// `virtio_serial_throttle_port ... throttle 1` events.
    pub throttles: u64,
}

/// Counts the trace events in QEMU's stderr; `None` when there are none.
pub fn flush_stats(stderr: &str) -> Option<FlushStats> {
    let mut f = FlushStats::default();
    let num = |line: &str, key: &str| -> Option<i64> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let mut seen = false;
    for line in stderr.lines() {
        if line.contains("virtio_console_flush_buf") {
            let (Some(len), Some(ret)) = (num(line, "in_len "), num(line, "out_len ")) else {
                continue;
            };
            seen = true;
            f.calls += 1;
            f.offered += len.max(0) as u64;
            f.taken += ret.max(0) as u64;
            if ret < len {
                f.short += 1;
            }
        } else if line.contains("virtio_serial_throttle_port") && line.contains("throttle 1") {
            seen = true;
            f.throttles += 1;
        }
    }
    seen.then_some(f)
}

/// What one tone boot gave.
#[derive(Debug, Clone, Copy)]
struct ToneRun {
    frequency_hz: f64,
    duration_ms: f64,
    skipped_periods: u64,
}

/// sha256 and length of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digested {
    len: u64,
    sha256: [u8; 32],
}

fn expected(seed: u64, len: usize) -> Digested {
    let mut s = GuestStream::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        s.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n;
    }
    Digested {
        len: len as u64,
        sha256: h.finalize().into(),
    }
}

fn digest_file(path: &Path) -> Result<Digested, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok(Digested {
        len,
        sha256: h.finalize().into(),
    })
}

fn progress(msg: &str) {
    eprintln!("[e] {msg}");
}

fn run(opts: &Options) -> Result<Outcome, String> {
    let mut sizes = if opts.quick {
        Sizes {
            hvc: 16 << 20,
            serial: 256 << 10,
            reps: 1,
        }
    } else {
        Sizes {
            hvc: 64 << 20,
            serial: 1 << 20,
            reps: 3,
        }
    };
    if let Some(n) = opts.reps {
        sizes.reps = n;
    }
    opts.check_settings(&["hvc_bytes", "serial_bytes"])?;
    if let Some(n) = opts.setting_usize("hvc_bytes")? {
        sizes.hvc = n;
    }
    if let Some(n) = opts.setting_usize("serial_bytes")? {
        sizes.serial = n;
    }
    if sizes.hvc == 0 || sizes.serial == 0 {
        return Err("hvc_bytes and serial_bytes must be positive".into());
    }
    let qemu = qemu_binary()?;
    let guest = guest_dir()?;
    let plugin = plugin();
    if !plugin.exists() {
        return Err(format!("no plugin at {}", plugin.display()));
    }
    let socat = Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !socat.is_ok_and(|s| s.success()) {
        return Err("socat not found (apt-get install -y socat)".into());
    }
    progress(&format!(
        "qemu {}, guest {}, plugin {}",
        qemu.display(),
        guest.display(),
        plugin.display()
    ));
    let want_serial = expected(SERIAL_SEED, sizes.serial);
    let want_hvc = expected(HVC_SEED, sizes.hvc);
    let env = Env {
        qemu,
        guest,
        plugin,
        want_serial,
        want_hvc,
        sizes,
        qemu_args: opts.qemu_args.clone(),
        plugin_opts: opts.plugin_opts.clone(),
    };

    let mut console: Vec<(Variant, ConsoleRun)> = Vec::new();
    let mut tones: Vec<(Variant, ToneRun)> = Vec::new();
    for rep in 1..=sizes.reps {
        for v in Variant::ALL {
            let dir = opts.work_dir.join(format!("e-{}-{rep}", v.name()));
            fresh_dir(&dir)?;
            progress(&format!(
                "rep {rep}/{}: {} console, hvc0 {} B + ttyS0 {} B",
                sizes.reps,
                v.name(),
                sizes.hvc,
                sizes.serial
            ));
            let r = env.console_run(v, &dir)?;
            progress(&format!(
                "  {}: hvc0 {:.3} MB/s ({:.2} s), ttyS0 {:.1} KB/s ({:.2} s), wall {:.2} s, bytes {}",
                v.name(),
                r.hvc_mbps,
                r.hvc_s,
                r.serial_kbps,
                r.serial_s,
                r.wall_s,
                if r.identical { "identical" } else { "DIFFER" }
            ));
            if let Some(f) = r.flushes {
                progress(&format!("  {}: hvc0 {f:?}", v.name()));
            }
            console.push((v, r));
            if !opts.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        for v in [Variant::Plugin, Variant::File] {
            let dir = opts.work_dir.join(format!("e-tone-{}-{rep}", v.name()));
            fresh_dir(&dir)?;
            progress(&format!("rep {rep}/{}: {} tone", sizes.reps, v.name()));
            let t = env.tone_run(v, &dir)?;
            progress(&format!(
                "  {}: {:.2} Hz, {:.0} ms, {} periods skipped",
                v.name(),
                t.frequency_hz,
                t.duration_ms,
                t.skipped_periods
            ));
            tones.push((v, t));
            if !opts.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    Ok(summarize(&console, &tones, sizes))
}

fn fresh_dir(dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn summarize(
    console: &[(Variant, ConsoleRun)],
    tones: &[(Variant, ToneRun)],
    sizes: Sizes,
) -> Outcome {
    let mut o = Outcome::default();
    for v in Variant::ALL {
        let runs: Vec<&ConsoleRun> = console
            .iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, r)| r)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let col = |f: fn(&ConsoleRun) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let n = v.name();
        o.measurements.extend([
            Measurement::new(n, "hvc0_throughput", median(&col(|r| r.hvc_mbps)), "MB/s"),
            Measurement::new(
                n,
                "ttyS0_throughput",
                median(&col(|r| r.serial_kbps)),
                "KB/s",
            ),
            Measurement::new(n, "wall_time", median(&col(|r| r.wall_s)), "s"),
            Measurement::new(
                n,
                "bytes_identical",
                f64::from(u8::from(runs.iter().all(|r| r.identical))),
                "bool",
            ),
        ]);
        if runs.iter().all(|r| r.flushes.is_some()) {
            let fl = |f: fn(&FlushStats) -> u64| {
                median(
                    &runs
                        .iter()
                        .filter_map(|r| r.flushes.as_ref().map(|x| f(x) as f64))
                        .collect::<Vec<_>>(),
                )
            };
            o.measurements.extend([
                Measurement::new(n, "hvc0_flush_calls", fl(|f| f.calls), "calls"),
                Measurement::new(n, "hvc0_short_writes", fl(|f| f.short), "calls"),
                Measurement::new(n, "hvc0_throttles", fl(|f| f.throttles), "events"),
                Measurement::new(
                    n,
                    "hvc0_bytes_per_flush",
                    fl(|f| f.taken / f.calls.max(1)),
                    "B",
                ),
            ]);
        }
        let spread = |xs: Vec<f64>| {
            xs.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        o.notes.push(format!(
            "{n}: hvc0 MB/s per repetition [{}], ttyS0 KB/s [{}], wall s [{}]",
            spread(col(|r| r.hvc_mbps)),
            spread(col(|r| r.serial_kbps)),
            spread(col(|r| r.wall_s)),
        ));
    }
    for v in [Variant::Plugin, Variant::File] {
        let runs: Vec<&ToneRun> = tones
            .iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, r)| r)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let n = v.name();
        let f: Vec<f64> = runs.iter().map(|r| r.frequency_hz).collect();
        let d: Vec<f64> = runs.iter().map(|r| r.duration_ms).collect();
        o.measurements.extend([
            Measurement::new(n, "tone_frequency", median(&f), "Hz"),
            Measurement::new(n, "tone_duration", median(&d), "ms"),
        ]);
        if v == Variant::Plugin {
            let skipped: u64 = runs.iter().map(|r| r.skipped_periods).sum();
            o.measurements.push(Measurement::new(
                n,
                "tone_periods_skipped",
                skipped as f64,
                "periods",
            ));
        }
    }
    if !tones.is_empty() {
        o.measurements.extend([
            Measurement::new("requested", "tone_frequency", TONE_HZ, "Hz"),
            Measurement::new("requested", "tone_duration", TONE_MS, "ms"),
        ]);
    }
    for baseline in ["file", "socket", "requested"] {
        o.comparisons.push(Comparison {
            variant: "plugin".into(),
            baseline: baseline.into(),
        });
    }
    o.notes.push(format!(
        "hvc0 {} B, ttyS0 {} B, {} repetition(s) interleaved, medians; MB = 10^6 B; \
         throughput timed by the guest; wall = QEMU start to exit",
        sizes.hvc, sizes.serial, sizes.reps
    ));
    if let Some(q) = o
        .rows()
        .iter()
        .find(|r| {
            r.metric == "hvc0_throughput" && r.baseline.as_ref().is_some_and(|(b, _)| b == "file")
        })
        .and_then(|r| r.ratio())
    {
        o.notes.push(format!(
            "target: plugin hvc0 throughput >= 0.95x file: {:.3}x, {}",
            q,
            if q >= 0.95 { "met" } else { "missed" }
        ));
    }
    o
}

struct Env {
    qemu: PathBuf,
    guest: PathBuf,
    plugin: PathBuf,
    want_serial: Digested,
    want_hvc: Digested,
    sizes: Sizes,
    qemu_args: Vec<String>,
    plugin_opts: Option<String>,
}

/// Replaces the argument `from` (which must be there) by `to`.
fn replace_arg(args: &mut [String], from: &str, to: String) -> Result<(), String> {
    let a = args
        .iter_mut()
        .find(|a| *a == from)
        .ok_or_else(|| format!("no '{from}' in the QEMU arguments"))?;
    *a = to;
    Ok(())
}

impl Env {
    /// The QEMU arguments for a variant: the same for all but the backends of serial0
    /// (ttyS0), hvc0 and snd0.
    fn args(
        &self,
        v: Variant,
        dir: &Path,
        params: &str,
        sound: bool,
    ) -> Result<Vec<String>, String> {
        let socket = dir.join("run/ringcastd.sock");
        let g = GuestRun {
            vm_name: VM.into(),
            params: params.into(),
            plugin: self.plugin.clone(),
            plugin_opts: match &self.plugin_opts {
                Some(o) => format!("socket={}:{o}", socket.display()),
                None => format!("socket={}", socket.display()),
            },
            log_file: dir.join("ttyS1.log"),
            serial: v == Variant::Plugin,
            virtconsole: v == Variant::Plugin,
            sound: sound.then_some(SoundCard::Ac97),
            audiodev_options: String::new(),
        };
        let mut args = g.args(&self.guest);
        let p = |name: &str| dir.join(name).display().to_string();
        match v {
            Variant::Plugin => {}
            Variant::File => {
                replace_arg(
                    &mut args,
                    "null,id=serial0",
                    format!("file,id=serial0,path={}", p("ttyS0.out")),
                )?;
                replace_arg(
                    &mut args,
                    "null,id=hvc0",
                    format!("file,id=hvc0,path={}", p("hvc0.out")),
                )?;
            }
            Variant::Socket => {
                for (id, sock) in [("serial0", "ttyS0.sock"), ("hvc0", "hvc0.sock")] {
                    replace_arg(
                        &mut args,
                        &format!("null,id={id}"),
                        format!("socket,id={id},path={},server=on,wait=on", p(sock)),
                    )?;
                }
            }
        }
        if sound && v != Variant::Plugin {
            let i = args
                .iter()
                .position(|a| a.starts_with("plugin,id=snd0"))
                .ok_or("no snd0 audiodev in the QEMU arguments")?;
            args[i] = format!("wav,id=snd0,path={}", p("tone.wav"));
        }
        Ok(args)
    }

    fn spawn(&self, args: &[String], dir: &Path) -> Result<Child, String> {
        let err = std::fs::File::create(dir.join("qemu.stderr")).map_err(|e| e.to_string())?;
        Command::new(&self.qemu)
            .args(args)
            .args(&self.qemu_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.qemu.display()))
    }

    fn console_params(&self) -> String {
        format!(
            "rc.scenario=console rc.seed={SERIAL_SEED} rc.hvc_seed={HVC_SEED} \
             rc.serial_bytes={} rc.hvc_bytes={}",
            self.sizes.serial, self.sizes.hvc
        )
    }

    fn console_run(&self, v: Variant, dir: &Path) -> Result<ConsoleRun, String> {
        let args = self.args(v, dir, &self.console_params(), false)?;
        let daemon = match v {
            Variant::Plugin => Some(start_daemon(dir)?),
            _ => None,
        };
        let t0 = Instant::now();
        let child = self.spawn(&args, dir)?;
        let mut socats = Vec::new();
        if v == Variant::Socket {
            for (sock, out) in [("ttyS0.sock", "ttyS0.out"), ("hvc0.sock", "hvc0.out")] {
                socats.push(spawn_socat(&dir.join(sock), &dir.join(out))?);
            }
        }
        let exited = wait_exit(child, dir, RUN_LIMIT);
        let wall_s = t0.elapsed().as_secs_f64();
        for mut s in socats {
            // socat ends on EOF when QEMU closes the socket.
            let deadline = Instant::now() + Duration::from_secs(30);
            while s.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let identical = match (&daemon, exited.is_ok()) {
            (Some(d), true) => {
                let h = d.handle();
                let got_serial = journal_digest(&h, "serial0", self.want_serial.len)?;
                let got_hvc = journal_digest(&h, "hvc0", self.want_hvc.len)?;
                got_serial == self.want_serial && got_hvc == self.want_hvc
            }
            (None, true) => {
                digest_file(&dir.join("ttyS0.out"))? == self.want_serial
                    && digest_file(&dir.join("hvc0.out"))? == self.want_hvc
            }
            _ => false,
        };
        if let Some(d) = daemon {
            d.shutdown();
        }
        exited?;
        let log = std::fs::read_to_string(dir.join("ttyS1.log")).map_err(|e| e.to_string())?;
        let t = uptime::console_times(&log)?;
        let stderr = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
        Ok(ConsoleRun {
            flushes: flush_stats(&stderr),
            hvc_mbps: self.sizes.hvc as f64 / t.hvc0_s / 1e6,
            serial_kbps: self.sizes.serial as f64 / t.ttys0_s / 1e3,
            hvc_s: t.hvc0_s,
            serial_s: t.ttys0_s,
            wall_s,
            identical,
        })
    }

    fn tone_run(&self, v: Variant, dir: &Path) -> Result<ToneRun, String> {
        let params =
            format!("rc.scenario=tone rc.tone_hz={TONE_HZ} rc.tone_ms={TONE_MS} rc.rate=48000");
        let args = self.args(v, dir, &params, true)?;
        match v {
            Variant::Plugin => {
                let daemon = start_daemon(dir)?;
                let h = daemon.handle();
                let mut child = self.spawn(&args, dir)?;
                let snd = DeviceKey::new(VM, "snd0");
                let deadline = Instant::now() + RUN_LIMIT;
                while !h.devices().iter().any(|d| d.key == snd) {
                    if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("snd0 never registered (see {})", dir.display()));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut sub = h
                    .subscribe_audio(&snd, 4096)
                    .map_err(|e| format!("subscribing to snd0: {e}"))?;
                let done = Arc::new(AtomicBool::new(false));
                let finished = done.clone();
                let reader = std::thread::spawn(move || {
                    let mut pcm = Vec::new();
                    let mut skipped = 0;
                    // Until QEMU is gone and nothing more comes.
                    loop {
                        let was_done = finished.load(Ordering::Relaxed);
                        match sub.next_blocking(Duration::from_millis(300)) {
                            Ok(Some(p)) => {
                                skipped += p.skipped_before;
                                pcm.extend_from_slice(&p.pcm);
                            }
                            Ok(None) if was_done => break,
                            Ok(None) => {}
                            Err(_) => break,
                        }
                    }
                    (pcm, skipped)
                });
                let exited = wait_exit(child, dir, RUN_LIMIT);
                done.store(true, Ordering::Relaxed);
                let (pcm, skipped) = reader.join().map_err(|_| "audio reader panicked")?;
                daemon.shutdown();
                exited?;
                Ok(tone(&pcm, skipped))
            }
            _ => {
                let child = self.spawn(&args, dir)?;
                wait_exit(child, dir, RUN_LIMIT)?;
                let wav = std::fs::read(dir.join("tone.wav")).map_err(|e| e.to_string())?;
                let pcm = wav_data(&wav)?;
                Ok(tone(pcm, 0))
            }
        }
    }
}

fn tone(pcm: &[u8], skipped: u64) -> ToneRun {
    // QEMU's mixing engine hands over 44.1 kHz stereo s16 whatever the guest plays.
    let t = analyze_s16le(pcm, 2, 44100);
    ToneRun {
        frequency_hz: t.frequency_hz,
        duration_ms: t.active_frames as f64 / 44.1,
        skipped_periods: skipped,
    }
}

/// The samples of a canonical WAV file (the `data` chunk; QEMU writes a 44-byte header).
fn wav_data(wav: &[u8]) -> Result<&[u8], String> {
    if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return Err("not a WAV file".into());
    }
    let mut at = 12;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let len = u32::from_le_bytes(wav[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let body = at + 8;
        if id == b"data" {
            // QEMU fills the length in at close; trust the file size if it did not.
            let end = if len == 0 {
                wav.len()
            } else {
                (body + len).min(wav.len())
            };
            return Ok(&wav[body..end]);
        }
        at = body + len + (len & 1);
    }
    Err("no data chunk in the WAV file".into())
}

fn start_daemon(dir: &Path) -> Result<Daemon, String> {
    let socket = dir.join("run/ringcastd.sock");
    let cfg = Config {
        control_socket: sidecar::control_socket_for(&socket),
        socket,
        state_dir: dir.join("state"),
        ..Config::default()
    };
    Daemon::start(cfg).map_err(|e| format!("starting ringcastd: {e}"))
}

/// sha256 and length of a device's journal from offset 0, checking for gaps and drops.
fn journal_digest(h: &sidecar::Handle, dev: &str, len: u64) -> Result<Digested, String> {
    let key = DeviceKey::new(VM, dev);
    let stats = h.device_stats(&key).map_err(|e| format!("{key}: {e}"))?;
    if stats.dropped_flight_recorder != 0 {
        progress(&format!(
            "  {key}: {} bytes dropped by the flight recorder",
            stats.dropped_flight_recorder
        ));
    }
    let mut sub = h
        .subscribe(&key, StartAt::Offset(0))
        .map_err(|e| format!("{key}: {e}"))?;
    let mut hash = Sha256::new();
    let mut got = 0u64;
    while got < len {
        match sub.next_blocking(Duration::from_secs(30)) {
            Ok(Some(Item::Chunk(c))) => {
                hash.update(&c.bytes);
                got += c.bytes.len() as u64;
            }
            Ok(Some(Item::Gap(g))) => {
                progress(&format!("  {key}: gap {g:?}"));
                got += g.len;
                // A gap makes the digest wrong; keep counting to report the length.
                hash.update([0xff]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Digested {
        len: got,
        sha256: hash.finalize().into(),
    })
}

fn spawn_socat(sock: &Path, out: &Path) -> Result<Child, String> {
    // -u: socket to file only; retry until QEMU listens (it creates the sockets one after
    // the other and waits on each for a client).
    Command::new("socat")
        .args(["-u", "-b", "131072"])
        .arg(format!(
            "UNIX-CONNECT:{},retry=2000,interval=0.01",
            sock.display()
        ))
        .arg(format!("OPEN:{},creat,trunc", out.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting socat: {e}"))
}

/// Waits for QEMU to exit by itself; checks the guest finished its scenario.
fn wait_exit(mut child: Child, dir: &Path, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "QEMU did not exit within {limit:?} (see {})",
                    dir.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let log = std::fs::read_to_string(dir.join("ttyS1.log")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
    if !status.success() {
        return Err(format!("QEMU failed ({status}):\n{err}\nguest log:\n{log}"));
    }
    if !log
        .lines()
        .any(|l| l.starts_with("rc: scenario") && l.trim_end().ends_with(" done"))
    {
        return Err(format!(
            "the guest did not finish its scenario:\n{log}\nQEMU:\n{err}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_differ_only_in_their_backends() {
        let env = Env {
            qemu: "qemu".into(),
            guest: "/g".into(),
            plugin: "/p.so".into(),
            want_serial: expected(1, 0),
            want_hvc: expected(1, 0),
            sizes: Sizes {
                hvc: 1,
                serial: 1,
                reps: 1,
            },
            qemu_args: vec![],
            plugin_opts: None,
        };
        let d = Path::new("/d");
        let plugin = env.args(Variant::Plugin, d, "x", true).unwrap();
        let file = env.args(Variant::File, d, "x", true).unwrap();
        let socket = env.args(Variant::Socket, d, "x", false).unwrap();
        assert_eq!(plugin.len(), file.len());
        let differ: Vec<_> = plugin.iter().zip(&file).filter(|(a, b)| a != b).collect();
        assert_eq!(differ.len(), 3, "{differ:?}");
        assert!(file.contains(&"file,id=hvc0,path=/d/hvc0.out".to_string()));
        assert!(file.contains(&"wav,id=snd0,path=/d/tone.wav".to_string()));
        assert!(
            socket.contains(&"socket,id=serial0,path=/d/ttyS0.sock,server=on,wait=on".to_string())
        );
        assert!(plugin
            .iter()
            .any(|a| a.starts_with("plugin,id=hvc0,path=/p.so")));
    }

    #[test]
    fn expected_digest_matches_the_stream_bytes() {
        let bytes = GuestStream::bytes(HVC_SEED, (1 << 20) + 5);
        let d = expected(HVC_SEED, bytes.len());
        assert_eq!(d.len, bytes.len() as u64);
        assert_eq!(d.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    #[test]
    fn flush_stats_counts_calls_short_writes_and_throttles() {
        let err = "qemu: some warning\n\
            1234@1795466096.000001:virtio_console_flush_buf port 0, in_len 4096, out_len 4096\n\
            virtio_console_flush_buf port 0, in_len 4096, out_len 1000\n\
            virtio_serial_throttle_port port 0, throttle 1\n\
            virtio_serial_throttle_port port 0, throttle 0\n\
            virtio_console_flush_buf port 0, in_len 3096, out_len -1\n";
        let f = flush_stats(err).unwrap();
        assert_eq!(
            f,
            FlushStats {
                calls: 3,
                short: 2,
                offered: 4096 + 4096 + 3096,
                taken: 5096,
                throttles: 1,
            }
        );
        assert_eq!(flush_stats("nothing traced\n"), None);
    }

    #[test]
    fn wav_data_finds_the_samples() {
        let mut w = b"RIFF\0\0\0\0WAVEfmt \x02\0\0\0abdata\x04\0\0\0wxyz".to_vec();
        assert_eq!(wav_data(&w).unwrap(), b"wxyz");
        w.truncate(8);
        assert!(wav_data(&w).is_err());
    }
}
