//! The runs of scenario F: ringcastd and `ringcast play` across the lossy link, GStreamer's
//! RTP pipelines across the same link, and the speech sample.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::devices::FakeAudio;
use testbed::kit::daemon::Ringcastd;
use testbed::lossy::LossyLink;

use super::analysis::{parse_play_summary, BLOCK};
use super::RunOutput;

const VM: &str = "wan";
/// How long the receivers get to start before the sound does.
const SETTLE: Duration = Duration::from_millis(2000);
/// How long after the last period the receivers get to play what is still on its way.
const DRAIN: Duration = Duration::from_millis(2500);
const RTP_PORT: u16 = 5004;

/// Whether `tool` is an executable on `PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn run_ok(c: &mut Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// espeak-ng's voice reading a sentence, converted by GStreamer to 48 kHz stereo s16le and
/// repeated (with the pauses between) to `frames` frames.
pub fn speech_s16le_stereo(dir: &Path, frames: usize) -> Result<Vec<u8>, String> {
    let wav = dir.join("speech.wav");
    let raw = dir.join("speech.raw");
    run_ok(
        Command::new("espeak-ng").arg("-w").arg(&wav).arg(
            "The quick brown fox jumps over the lazy dog. Sound over a narrow link, \
             with loss, should still be understood.",
        ),
        "espeak-ng",
    )?;
    run_ok(
        Command::new("gst-launch-1.0").arg("-q").args([
            "filesrc",
            &format!("location={}", wav.display()),
            "!",
            "wavparse",
            "!",
            "audioconvert",
            "!",
            "audioresample",
            "!",
            "audio/x-raw,format=S16LE,rate=48000,channels=2",
            "!",
            "filesink",
            &format!("location={}", raw.display()),
        ]),
        "gst-launch-1.0 (converting the speech sample)",
    )?;
    let one = std::fs::read(&raw).map_err(|e| format!("{}: {e}", raw.display()))?;
    if one.len() < 4 * BLOCK {
        return Err("espeak-ng made no speech".into());
    }
    Ok(one.iter().copied().cycle().take(frames * 4).collect())
}

/// ringcastd in namespace A, a client identity it authorizes.
pub struct Served {
    daemon: Ringcastd,
    dir: PathBuf,
    server: String,
}

impl Served {
    pub fn start(link: &LossyLink, dir: &Path) -> Result<Served, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ringcast = testbed::kit::bins::try_binary("ringcast")?;
        let out = Command::new(&ringcast)
            .arg("--identity-dir")
            .arg(dir.join("id"))
            .args(["identity", "new", "--name", "bench-f"])
            .output()
            .map_err(|e| format!("ringcast identity new: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fp = text
            .split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .ok_or_else(|| format!("no fingerprint from ringcast identity new: {text}"))?;
        let auth = dir.join("authorized_clients");
        std::fs::write(&auth, format!("{fp} */* read,spy,audio\n"))
            .map_err(|e| format!("{}: {e}", auth.display()))?;
        let server = format!("{}:7878", link.addr_a());
        let mut daemon = Ringcastd::with_launcher(
            dir,
            &dir.join("state"),
            link.launcher_in_a(testbed::kit::bins::try_binary("ringcastd")?),
        )
        .listen(&server)
        .args(&[
            std::ffi::OsString::from("--authorized-clients"),
            auth.into(),
        ]);
        daemon.try_spawn()?;
        let sock = daemon.socket();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(format!("ringcastd did not start: {}", daemon.log_tail(20)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Served {
            daemon,
            dir: dir.to_path_buf(),
            server,
        })
    }
}

/// CLOCK_MONOTONIC, ns: the clock of the stamps and of the arrivals.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

type Arrivals = Arc<Mutex<(Vec<u8>, Vec<(u64, u64)>)>>;

/// Reads `child`'s stdout to the end, stamping every read.
fn read_stdout(child: &mut Child) -> Result<(Arrivals, JoinHandle<()>), String> {
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let got: Arrivals = Arc::default();
    let g = got.clone();
    let h = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let t = mono_ns();
            let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
            g.0.extend_from_slice(&buf[..n]);
            let total = g.0.len() as u64;
            g.1.push((total, t));
        }
    });
    Ok((got, h))
}

/// Hands `pcm` over in periods of 480 frames on a 10 ms schedule; returns their stamps.
fn pace(pcm: &[u8], mut hand_over: impl FnMut(u64, &[u8]) -> bool) -> Vec<u64> {
    let t0 = Instant::now();
    let mut stamps = Vec::new();
    for (n, period) in pcm.chunks(BLOCK * 4).enumerate() {
        let next = t0 + Duration::from_millis(10 * n as u64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let stamp = mono_ns();
        stamps.push(stamp);
        if !hand_over(stamp, period) {
            break;
        }
    }
    stamps
}

fn interrupt(c: &Child) {
    // SAFETY: a signal to our own child, by its id.
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
}

fn wait_or_kill(c: &mut Child, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn finish(got: Arrivals, reader: JoinHandle<()>, run: &mut RunOutput) {
    let _ = reader.join();
    let mut g = got.lock().unwrap_or_else(|e| e.into_inner());
    run.pcm = std::mem::take(&mut g.0);
    run.arrivals = std::mem::take(&mut g.1);
}

/// `ringcast play --codec CODEC --datagrams --raw` in B of a fake device in A playing `pcm`.
pub fn ringcast(
    link: &LossyLink,
    served: &Served,
    codec: &str,
    pcm: &[u8],
    secs: usize,
    label: &str,
) -> Result<RunOutput, String> {
    let device = label.replace(['/', '%', '.'], "-");
    let mut audio = FakeAudio::try_new(&served.daemon.socket(), VM, &device)?;
    let d = &served.dir;
    let mut play = link
        .command_in_b(testbed::kit::bins::try_binary("ringcast")?)
        .args(["--server", &served.server, "--known-hosts"])
        .arg(d.join("known_hosts"))
        .arg("--identity-dir")
        .arg(d.join("id"))
        .args(["play", &format!("{VM}/{device}"), "--codec", codec])
        .args(["--datagrams", "--raw", "--jitter-ms", "40"])
        .env("HOME", d.join("home"))
        .env_remove("RINGCAST_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ringcast play: {e}"))?;
    let (got, reader) = read_stdout(&mut play)?;
    let mut stderr = play.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    std::thread::sleep(SETTLE);
    let before = link.stats().a_to_b.forwarded_bytes;
    let t = Instant::now();
    let stamps = pace(pcm, |stamp, period| {
        audio
            .try_push_pcm(stamp, (period.len() / 4) as u32, period)
            .is_ok()
    });
    // PCM does not fit the link: give it the time it takes, up to three times real time.
    let deadline = t + Duration::from_secs(3 * secs as u64) + DRAIN;
    let want = pcm.len() as u64;
    while Instant::now() < deadline {
        let have = got.lock().map(|g| g.0.len() as u64).unwrap_or(0);
        if have >= want || t.elapsed() > Duration::from_secs(secs as u64) + DRAIN && codec != "pcm"
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let link_ns = t.elapsed().as_nanos() as u64;
    let link_bytes = link.stats().a_to_b.forwarded_bytes - before;
    interrupt(&play);
    wait_or_kill(&mut play, Duration::from_secs(10));
    drop(audio);
    let mut run = RunOutput {
        stamps,
        link_bytes,
        link_ns,
        ..RunOutput::default()
    };
    finish(got, reader, &mut run);
    let err = err_reader.join().unwrap_or_default();
    run.summary = parse_play_summary(&err);
    if run.summary.is_none() {
        return Err(format!(
            "no closing line from ringcast play: {}",
            err.trim()
        ));
    }
    Ok(run)
}

/// GStreamer's Opus over RTP/UDP from A to B, fed `pcm` on the same schedule.
pub fn gstreamer(link: &LossyLink, pcm: &[u8], secs: usize) -> Result<RunOutput, String> {
    let caps = "application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=96";
    let mut rx = link
        .command_in_b("gst-launch-1.0")
        .arg("-q")
        .args([
            "udpsrc",
            &format!("port={RTP_PORT}"),
            &format!("caps={caps}"),
        ])
        .args(["!", "rtpjitterbuffer", "latency=40", "do-lost=true"])
        .args([
            "!",
            "rtpopusdepay",
            "!",
            "opusdec",
            "plc=true",
            "use-inband-fec=true",
        ])
        .args([
            "!",
            "audioconvert",
            "!",
            "audio/x-raw,format=S16LE,rate=48000,channels=2",
        ])
        .args(["!", "fdsink", "fd=1", "sync=false"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("gst-launch-1.0 (receiver): {e}"))?;
    let (got, reader) = read_stdout(&mut rx)?;
    let mut tx = link
        .command_in_a("gst-launch-1.0")
        .arg("-q")
        .args(["fdsrc", "fd=0", "blocksize=1920", "!", "rawaudioparse"])
        .args(["use-sink-caps=false", "format=pcm", "pcm-format=s16le"])
        .args(["sample-rate=48000", "num-channels=2", "!", "audioconvert"])
        .args([
            "!",
            "opusenc",
            "bitrate=64000",
            "frame-size=10",
            "inband-fec=true",
        ])
        .args(["packet-loss-percentage=5", "!", "rtpopuspay", "pt=96"])
        .args(["!", "udpsink", &format!("host={}", link.addr_b())])
        .args([&format!("port={RTP_PORT}"), "sync=false"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("gst-launch-1.0 (sender): {e}"))?;
    let mut stdin = tx.stdin.take().ok_or("no stdin")?;
    std::thread::sleep(SETTLE);
    let before = link.stats().a_to_b.forwarded_bytes;
    let t = Instant::now();
    let stamps = pace(pcm, |_, period| stdin.write_all(period).is_ok());
    drop(stdin);
    let want = pcm.len() as u64;
    let deadline = t + Duration::from_secs(secs as u64) + DRAIN;
    while Instant::now() < deadline {
        if got.lock().map(|g| g.0.len() as u64).unwrap_or(0) >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let link_ns = t.elapsed().as_nanos() as u64;
    let link_bytes = link.stats().a_to_b.forwarded_bytes - before;
    wait_or_kill(&mut tx, Duration::from_secs(2));
    interrupt(&rx);
    wait_or_kill(&mut rx, Duration::from_secs(3));
    let mut run = RunOutput {
        stamps,
        link_bytes,
        link_ns,
        ..RunOutput::default()
    };
    finish(got, reader, &mut run);
    if run.pcm.is_empty() {
        return Err("the GStreamer receiver wrote nothing".into());
    }
    Ok(run)
}
