//! `ringcast mic`: sound into the guest's capture side (its sound card's line-in), from a
//! generated tone, a WAV file or raw PCM, sent in real time as PCM in the format the guest
//! records in.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::Session;
use protocol::audio::SampleFormat;

use crate::args::split_device;
use crate::exit::Exit;
use crate::mic_source::{encode, Source};

/// What one send carries: 10 ms of audio.
const TICK: Duration = Duration::from_millis(10);
/// Sent at once when starting, so a late tick does not leave the guest without sound.
const LEAD_TICKS: u32 = 2;

/// Said (before connecting) when `mic` has no source.
pub const NO_SOURCE: &str = "ringcast mic needs a source: this build takes no sound from a \
     sound card; pass --wav FILE, --raw FILE (s16 little-endian at the guest's rate and \
     channels, - for stdin) or --tone HZ";

/// Where the sound comes from.
#[derive(Debug)]
pub struct MicOptions {
    pub tone: Option<f64>,
    pub wav: Option<PathBuf>,
    pub raw: Option<PathBuf>,
    pub seconds: Option<f64>,
}

/// `ringcast mic`: sends until the source ends, `seconds` went out, or the server ends it.
pub async fn mic(s: &Session, device: &str, o: MicOptions) -> anyhow::Result<Exit> {
    if o.tone.is_none() && o.wav.is_none() && o.raw.is_none() {
        anyhow::bail!("{NO_SOURCE}");
    }
    let (vm, dev) = split_device(device)?;
    let mut m = s.attach_mic(&vm, &dev).await?;
    let f = m.format();
    let sample = SampleFormat::try_from(f.sample_format)?;
    let mut source = match (&o.tone, &o.wav, &o.raw) {
        (Some(hz), _, _) => Source::tone(*hz, f.rate, f.channels)?,
        (_, Some(path), _) => Source::wav(path, f.rate, f.channels)?,
        (_, _, Some(path)) => Source::raw(path, f.channels)?,
        _ => unreachable!("checked above"),
    };
    eprintln!(
        "ringcast: sending to {vm}/{dev}'s input: {} Hz, {} channels, {}",
        f.rate,
        f.channels,
        sample.name()
    );
    let per_tick = (f.rate as usize / 100).max(1);
    let limit = o.seconds.map(|s| (s * f64::from(f.rate)) as u64);
    let (mut samples, mut pcm) = (Vec::new(), Vec::new());
    let mut sent_frames = 0u64;
    let start = Instant::now();
    let mut tick = 0u32;
    let outcome = loop {
        let want = match limit {
            Some(l) => per_tick.min(l.saturating_sub(sent_frames) as usize),
            None => per_tick,
        };
        source.next(want, &mut samples);
        if samples.is_empty() {
            break Ok(());
        }
        encode(sample, f.big_endian, &samples, &mut pcm);
        if let Err(e) = m.send(&pcm).await {
            break Err(e);
        }
        sent_frames += (samples.len() / usize::from(f.channels)) as u64;
        tick += 1;
        // Real time: tick k goes out at start + (k - lead) ticks.
        let due = start + TICK * tick.saturating_sub(LEAD_TICKS);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            end = m.ended() => break end,
        }
    };
    let seconds = sent_frames as f64 / f64::from(f.rate);
    eprintln!("ringcast: sent {sent_frames} frames ({seconds:.2} s) to {vm}/{dev}");
    outcome.with_context(|| format!("sending audio to {vm}/{dev}"))?;
    m.detach().await;
    Ok(Exit::Success)
}
