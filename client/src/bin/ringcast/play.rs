//! `ringcast play`: an audio device live to the sound card, a WAV file or raw PCM on stdout,
//! with counts of late, underrun and skipped periods and the latency from QEMU.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::Session;
use protocol::audio::SampleFormat;

use crate::args::split_device;
use crate::exit::Exit;
use crate::sound_card;
use crate::wav::wav_sink;

/// Where played PCM goes: a WAV file, stdout, or the sound card.
pub type PcmSink = Box<dyn FnMut(&[u8]) -> anyhow::Result<()>>;

/// What `play` reports at the end.
#[derive(Default, Debug)]
struct PlayCounts {
    periods: u64,
    late: u64,
    underruns: u64,
    skipped: u64,
}

/// `ringcast play`: plays `device` until interrupted, the stream ends or `seconds` of audio
/// went out, then prints the counts.
#[allow(clippy::too_many_arguments)]
pub async fn play(
    s: &Session,
    device: &str,
    wav: Option<PathBuf>,
    raw: bool,
    jitter_ms: u64,
    seconds: Option<f64>,
    datagrams: bool,
) -> anyhow::Result<Exit> {
    let (vm, dev) = split_device(device)?;
    let mut audio = s.attach_audio(&vm, &dev, datagrams).await?;
    let format = audio
        .format()
        .context("the device has not announced its audio format yet (is its VM running?)")?;
    let sample = SampleFormat::try_from(format.sample_format)?;
    let frame_bytes = sample.bytes_per_sample() as u64 * u64::from(format.channels.max(1));
    let limit_frames = seconds.map(|s| (s * f64::from(format.rate)) as u64);
    let jitter = Duration::from_millis(jitter_ms);
    let mut sink: PcmSink = if let Some(path) = &wav {
        wav_sink(path, &format, sample)?
    } else if raw {
        let mut out = std::io::stdout();
        Box::new(move |pcm: &[u8]| {
            out.write_all(pcm)?;
            Ok(())
        })
    } else {
        sound_card::device_sink(format, sample, jitter)?
    };
    let mut counts = PlayCounts::default();
    // Stamps are the server host's CLOCK_MONOTONIC: comparable only when it is this host.
    let same_host = s.connection().remote_address().ip().is_loopback();
    let mut latencies_us: Vec<u64> = Vec::new();
    let mut frames_done = 0u64;
    let mut clock: Option<(Instant, u64)> = None;
    let mut last_seq: Option<u64> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let p = tokio::select! {
            p = audio.next() => p?,
            _ = &mut interrupted => break,
        };
        let Some(p) = p else { break };
        counts.periods += 1;
        counts.skipped += p.skipped_before;
        if let Some(l) = last_seq {
            counts.skipped += p.seq.saturating_sub(l + 1);
        }
        last_seq = Some(p.seq);
        // Play-out time: the first period's arrival plus the jitter target, then the
        // backend's own timestamps.
        let now = Instant::now();
        if same_host {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let arrival_ns = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
            latencies_us.push(arrival_ns.saturating_sub(p.timestamp_ns) / 1000);
        }
        let (t0, ts0) = *clock.get_or_insert((now, p.timestamp_ns));
        let due = t0 + jitter + Duration::from_nanos(p.timestamp_ns.saturating_sub(ts0));
        if now > due {
            counts.late += 1;
        }
        let mut pcm = &p.pcm[..];
        if let Some(limit) = limit_frames {
            let left = limit.saturating_sub(frames_done) * frame_bytes;
            pcm = &pcm[..pcm.len().min(left as usize)];
        }
        sink(pcm)?;
        frames_done += pcm.len() as u64 / frame_bytes.max(1);
        if limit_frames.is_some_and(|l| frames_done >= l) {
            break;
        }
    }
    drop(sink);
    counts.underruns += sound_card::underruns();
    let latency = if latencies_us.is_empty() {
        String::new()
    } else {
        latencies_us.sort_unstable();
        let pct = |q: f64| {
            let i = ((latencies_us.len() - 1) as f64 * q).round() as usize;
            latencies_us[i] as f64 / 1000.0
        };
        format!(
            "; latency from QEMU to here p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        )
    };
    eprintln!(
        "ringcast: {} periods ({:.2} s), late {}, underruns {}, skipped {}{latency}",
        counts.periods,
        frames_done as f64 / f64::from(format.rate.max(1)),
        counts.late,
        counts.underruns,
        counts.skipped
    );
    Ok(Exit::Success)
}
