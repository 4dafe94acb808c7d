//! `ringcast mic`: sound into the guest's capture side (its sound card's line-in), from the
//! client's sound input (ALSA), a generated tone, a WAV file or raw PCM, sent in real time as PCM in the format the guest
//! records in or as Opus (`--codec`, chosen as for `play`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{AudioEncoding, Session};
use protocol::audio::{encode_pcm, SampleFormat};
use protocol::rules::audio::CodecChoice;

use crate::args::split_device;
use crate::exit::Exit;
use crate::mic_capture::Capture;
use crate::mic_opus::MicEncoder;
use crate::mic_source::Source;
use crate::play::codec_offer;

/// What one send carries: 10 ms of audio.
const TICK: Duration = Duration::from_millis(10);
/// Sent at once when starting, so a late tick does not leave the guest without sound.
const LEAD_TICKS: u32 = 2;
/// Under Opus, a tick this late (the connection backs up) is not sent: its packets are
/// numbered and left out, which ringcastd fills in (FEC, concealment), so the guest hears
/// the client with a delay that does not grow.
const BEHIND: Duration = Duration::from_millis(100);

/// Where the sound comes from.
#[derive(Debug)]
pub struct MicOptions {
    pub tone: Option<f64>,
    pub wav: Option<PathBuf>,
    pub raw: Option<PathBuf>,
    pub seconds: Option<f64>,
    pub codec: CodecChoice,
    /// The ALSA input to record from when there is no tone or file (`default`).
    pub device: Option<String>,
}

/// How the samples go out.
enum Sender {
    Pcm(SampleFormat, bool),
    Opus(Box<MicEncoder>),
}

/// `ringcast mic`: sends until the source ends, `seconds` went out, or the server ends it.
pub async fn mic(s: &Session, device: &str, o: MicOptions) -> anyhow::Result<Exit> {
    let (vm, dev) = split_device(device)?;
    let offer = codec_offer(s, &vm, &dev, o.codec).await?;
    let mut m = s.attach_mic_with(&vm, &dev, &offer).await?;
    let f = m.format();
    let sample = SampleFormat::try_from(f.sample_format)?;
    let mut source = match (&o.tone, &o.wav, &o.raw) {
        (Some(hz), _, _) => Source::tone(*hz, f.rate, f.channels)?,
        (_, Some(path), _) => Source::wav(path, f.rate, f.channels)?,
        (_, _, Some(path)) => Source::raw(path, f.channels)?,
        _ => {
            let input = o.device.as_deref().unwrap_or("default");
            let c = Capture::open(input, f.rate, f.channels)?;
            eprintln!("ringcast: recording from the sound input {input:?}");
            Source::Capture(Box::new(c))
        }
    };
    let (mut sender, codec) = match m.encoding() {
        AudioEncoding::Opus(p) => (
            Sender::Opus(Box::new(MicEncoder::new(p, f.rate)?)),
            format!("opus {} kbit/s", p.bitrate / 1000),
        ),
        AudioEncoding::Pcm => (Sender::Pcm(sample, f.big_endian), "pcm".to_string()),
    };
    if o.codec == CodecChoice::Opus && matches!(sender, Sender::Pcm(..)) {
        eprintln!(
            "ringcast: the server takes PCM: it cannot decode Opus for this input (more than \
             two channels?) or does not know Opus"
        );
    }
    eprintln!(
        "ringcast: sending to {vm}/{dev}'s input: {} Hz, {} channels, {}, as {codec}",
        f.rate,
        f.channels,
        sample.name()
    );
    let per_tick = (f.rate as usize / 100).max(1);
    let limit = o.seconds.map(|s| (s * f64::from(f.rate)) as u64);
    let (mut samples, mut pcm, mut packets) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sent_frames, mut seq, mut left_out) = (0u64, 0u64, 0u64);
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
        // Real time: tick k goes out at start + (k - lead) ticks.
        let due_at = |k: u32| start + TICK * k.saturating_sub(LEAD_TICKS);
        let sent = match &mut sender {
            Sender::Pcm(format, big_endian) => {
                pcm.clear();
                encode_pcm(*format, *big_endian, &samples, &mut pcm);
                m.send(&pcm).await
            }
            Sender::Opus(e) => {
                e.push(&samples, &mut packets)?;
                let behind = Instant::now() > due_at(tick) + BEHIND;
                let mut sent = Ok(());
                for p in &packets {
                    if behind {
                        left_out += 1;
                    } else if sent.is_ok() {
                        sent = m.send_opus(seq, p).await;
                    }
                    seq += 1;
                }
                sent
            }
        };
        if let Err(e) = sent {
            break Err(e);
        }
        sent_frames += (samples.len() / usize::from(f.channels)) as u64;
        tick += 1;
        tokio::select! {
            _ = tokio::time::sleep_until(due_at(tick).into()) => {}
            end = m.ended() => break end,
        }
    };
    if left_out > 0 {
        eprintln!("ringcast: {left_out} Opus packets were left out: the connection fell behind");
    }
    let seconds = sent_frames as f64 / f64::from(f.rate);
    eprintln!("ringcast: sent {sent_frames} frames ({seconds:.2} s) to {vm}/{dev}");
    outcome.with_context(|| format!("sending audio to {vm}/{dev}"))?;
    m.detach().await;
    Ok(Exit::Success)
}
