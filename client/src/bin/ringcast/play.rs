//! `ringcast play`: an audio device live to the sound card, a WAV file or raw PCM on stdout,
//! through the adaptive jitter buffer and the attachment's decoder (`client::playout`),
//! with the counts of what was played, rebuilt, concealed and late, and the delays.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::playout::{Player, PlayerStats};
use client::{AudioCodec, AudioEncoding, Session};
use protocol::audio::SampleFormat;
use protocol::rules::audio::{self as codec_rules, CodecChoice, PathFacts};

use crate::args::split_device;
use crate::exit::Exit;
use crate::sound_card;
use crate::wav::wav_sink;

/// Where played PCM goes: a WAV file, stdout, or the sound card.
pub type PcmSink = Box<dyn FnMut(&[u8]) -> anyhow::Result<()>>;

/// The options of `ringcast play`.
#[derive(Debug)]
pub struct PlayOptions {
    pub wav: Option<PathBuf>,
    pub raw: bool,
    pub jitter_ms: u64,
    pub fixed_jitter: bool,
    pub seconds: Option<f64>,
    pub datagrams: bool,
    pub codec: CodecChoice,
}

/// The path as the connection measured it: loopback or not, and its congestion window
/// over its round-trip time.
fn path_facts(s: &Session) -> PathFacts {
    let conn = s.connection();
    let rtt = conn.rtt().as_secs_f64().max(1e-4);
    let cwnd = conn.stats().path.cwnd;
    PathFacts {
        loopback: conn.remote_address().ip().is_loopback(),
        capacity_bps: Some((cwnd as f64 * 8.0 / rtt) as u64),
    }
}

/// The codecs to offer for `vm`/`dev` under `choice` (`play` and `mic`): `auto` weighs
/// the path against the PCM bitrate of the device's format.
pub(crate) async fn codec_offer(
    s: &Session,
    vm: &str,
    dev: &str,
    choice: CodecChoice,
) -> anyhow::Result<Vec<AudioCodec>> {
    let pcm_bps = s
        .list()
        .await?
        .iter()
        .find(|d| d.vm == vm && d.device == dev)
        .and_then(|d| d.audio.as_ref().and_then(codec_rules::pcm_bitrate));
    Ok(codec_rules::offer(choice, path_facts(s), pcm_bps))
}

/// CLOCK_MONOTONIC now, ns (the clock of the guest's stamps on ringcastd's host).
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// `ringcast play`: plays `device` until interrupted, the stream ends or `seconds` of audio
/// went out, then prints the counts.
pub async fn play(s: &Session, device: &str, o: PlayOptions) -> anyhow::Result<Exit> {
    let (vm, dev) = split_device(device)?;
    let offer = codec_offer(s, &vm, &dev, o.codec).await?;
    let mut audio = s.attach_audio_with(&vm, &dev, o.datagrams, &offer).await?;
    let format = audio
        .format()
        .context("the device has not announced its audio format yet (is its VM running?)")?;
    let encoding = audio.encoding();
    if o.codec == CodecChoice::Opus && encoding == AudioEncoding::Pcm {
        eprintln!(
            "ringcast: the server sends PCM: it cannot encode this device's audio as Opus \
             (more than two channels?) or does not know Opus"
        );
    }
    let floor = Duration::from_millis(o.jitter_ms);
    let mut player = Player::new(encoding, format, floor.as_nanos() as u64, o.fixed_jitter)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = player.output_format();
    let sample = SampleFormat::try_from(out.sample_format)?;
    let frame_bytes = sample.bytes_per_sample() as u64 * u64::from(out.channels.max(1));
    let limit_frames = o.seconds.map(|s| (s * f64::from(out.rate)) as u64);
    let mut sink: PcmSink = if let Some(path) = &o.wav {
        wav_sink(path, &out, sample)?
    } else if o.raw {
        let mut stdout = std::io::stdout();
        Box::new(move |pcm: &[u8]| {
            stdout.write_all(pcm)?;
            Ok(())
        })
    } else {
        // The jitter buffer already holds what the path needs: the card adds one tick.
        sound_card::device_sink(out, sample, Duration::from_millis(10))?
    };
    // Stamps are the server host's CLOCK_MONOTONIC: comparable only when it is this host.
    let same_host = s.connection().remote_address().ip().is_loopback();
    let mut from_qemu_us: Vec<u64> = Vec::new();
    let mut frames_done = 0u64;
    let t0 = Instant::now();
    let now_ns = || t0.elapsed().as_nanos() as u64;
    let mut next_tick: Option<tokio::time::Instant> = None;
    let mut stream_done = false;
    // The sound card plays on a clock: a unit not here at its tick is concealed. A file has
    // no clock to miss: each unit is written as the buffer lets it go (a few units behind
    // the newest, for reordering), lost ones concealed or rebuilt from FEC.
    let clocked = o.wav.is_none() && !o.raw;
    let keep = (floor.as_nanos() as u64 / player.tick_ns().unwrap_or(10_000_000).max(1)) as usize;
    let mut write = |t: client::playout::Tick, frames_done: &mut u64| -> anyhow::Result<bool> {
        if let (true, Some(stamp)) = (same_host, t.stamp_ns) {
            from_qemu_us.push(monotonic_ns().saturating_sub(stamp) / 1000);
        }
        let mut pcm = &t.pcm[..];
        if let Some(limit) = limit_frames {
            let left = limit.saturating_sub(*frames_done) * frame_bytes;
            pcm = &pcm[..pcm.len().min(left as usize)];
        }
        sink(pcm)?;
        *frames_done += pcm.len() as u64 / frame_bytes.max(1);
        Ok(limit_frames.is_some_and(|l| *frames_done >= l))
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let tick_at =
            next_tick.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            p = audio.next(), if !stream_done => match p? {
                Some(p) => {
                    player.push(now_ns(), p);
                    if !clocked {
                        if drain(&mut player, keep, now_ns(), &mut write, &mut frames_done)? {
                            break;
                        }
                    } else if next_tick.is_none() {
                        next_tick = player.tick_ns().map(|_| tokio::time::Instant::now());
                    }
                }
                None => {
                    stream_done = true;
                    if !clocked {
                        // Past the first unit's play-out time: all that is held goes out.
                        let end = now_ns() + floor.as_nanos() as u64;
                        drain(&mut player, 0, end, &mut write, &mut frames_done)?;
                        break;
                    }
                }
            },
            _ = tokio::time::sleep_until(tick_at), if next_tick.is_some() => {
                let step = Duration::from_nanos(player.tick_ns().unwrap_or(10_000_000));
                next_tick = Some(tick_at + step);
                let Some(t) = player.tick(now_ns()) else {
                    continue;
                };
                if write(t, &mut frames_done)? {
                    break;
                }
                if stream_done && player.buffered() == 0 {
                    break;
                }
            },
            _ = &mut interrupted => break,
        }
        if stream_done && next_tick.is_none() {
            break;
        }
    }
    drop(sink);
    let card_underruns = sound_card::underruns();
    eprintln!(
        "ringcast: {}",
        report(
            encoding,
            &player.stats(),
            frames_done as f64 / f64::from(out.rate.max(1)),
            card_underruns,
            &mut from_qemu_us
        )
    );
    Ok(Exit::Success)
}

/// Writes what the buffer lets go while it holds more than `keep` units (at most one pass
/// over them); true when the --seconds limit was reached.
fn drain(
    player: &mut Player,
    keep: usize,
    now_ns: u64,
    write: &mut impl FnMut(client::playout::Tick, &mut u64) -> anyhow::Result<bool>,
    frames_done: &mut u64,
) -> anyhow::Result<bool> {
    let mut budget = player.buffered() + 8;
    while player.buffered() > keep && budget > 0 {
        budget -= 1;
        let Some(t) = player.tick(now_ns) else {
            return Ok(false);
        };
        if write(t, frames_done)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The closing line: what was played and how, and the delays.
fn report(
    encoding: AudioEncoding,
    s: &PlayerStats,
    seconds: f64,
    card_underruns: u64,
    from_qemu_us: &mut [u64],
) -> String {
    let j = &s.jitter;
    let codec = match encoding {
        AudioEncoding::Pcm => "pcm".to_string(),
        AudioEncoding::Opus(p) => format!(
            "opus {} kbit/s {:.1} ms frames",
            p.bitrate / 1000,
            p.frame_ns() as f64 / 1e6
        ),
    };
    let pct = |v: &mut [u64], q: f64| {
        v.sort_unstable();
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let mut delays = j.delays_ns.clone();
    let mut line = format!(
        "{codec}: {} units played ({seconds:.2} s), recovered by FEC {}, concealed {}, late {}, \
         underruns {}, silent {}; play-out delay p50 {:.1} ms, p99 {:.1} ms",
        j.played,
        j.recovered,
        j.concealed,
        j.late,
        j.underruns + card_underruns,
        j.silent,
        pct(&mut delays, 0.5) as f64 / 1e6,
        pct(&mut delays, 0.99) as f64 / 1e6,
    );
    if j.inserted + j.shrunk + j.overflow > 0 {
        line += &format!(
            "; delay grown in silence {}, shrunk {}, dropped over the maximum {}",
            j.inserted, j.shrunk, j.overflow
        );
    }
    if s.decode_errors > 0 {
        line += &format!("; undecodable packets {}", s.decode_errors);
    }
    if !from_qemu_us.is_empty() {
        line += &format!(
            "; from QEMU to play-out p50 {:.1} ms, p99 {:.1} ms",
            pct(from_qemu_us, 0.5) as f64 / 1000.0,
            pct(from_qemu_us, 0.99) as f64 / 1000.0
        );
    }
    line
}
