//! Opus for audio subscribers: one encoder per device, shared by every subscriber that
//! chose Opus, on its own thread.
//!
//! The encoder thread is one more PCM subscriber of the device, with its own bounded queue:
//! the ingest hands it periods exactly as it hands them to any listener (a push and a
//! wake-up, dropping the oldest when the queue is full), so the ingest never waits on an
//! encoder. The thread starts with the device's first Opus subscriber, fans its frames out
//! to the Opus subscribers' queues (same bounded-queue rule), and stops when the last one
//! leaves or the device's QEMU goes away.
//!
//! The other way, [`MicDecoder`] turns a microphone's Opus packets back into PCM for the
//! guest's capture side.

pub mod decoder;
pub mod encoder;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use decoder::{MicDecodeStats, MicDecoder};
pub use encoder::{OpusConfig, OpusEncoder};

use crate::device::{lock, AudioQueue, Device};

/// PCM periods the encoder thread may fall behind by before the oldest are dropped.
const ENCODER_QUEUE: usize = 64;

/// Makes sure `device` has a running encoder for `config`, registering `queue` as one more
/// Opus subscriber. Fails when the encoder cannot be made for the device's format.
pub(crate) fn join(
    device: &Arc<Device>,
    closed: &Arc<AtomicBool>,
    config: &OpusConfig,
    queue: Arc<AudioQueue>,
) -> Result<(), String> {
    let mut s = lock(&device.state);
    if !s.opus_running {
        let format = s
            .audio_format
            .ok_or("the device has not announced its audio format yet")?;
        let encoder = OpusEncoder::new(format, config)?;
        let input = Arc::new(AudioQueue::new(ENCODER_QUEUE));
        s.audio_queues.push(input.clone());
        s.opus_running = true;
        let (device, closed) = (device.clone(), closed.clone());
        let name = format!("opus {}", device.key);
        let spawned = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || run(device, closed, encoder, input));
        if let Err(e) = spawned {
            s.opus_running = false;
            return Err(format!("cannot start the encoder thread: {e}"));
        }
    }
    s.opus_queues.push(queue);
    Ok(())
}

/// The encoder thread: PCM in, Opus frames out, until no Opus subscriber is left, the
/// device's QEMU went away or ringcastd stops.
fn run(
    device: Arc<Device>,
    closed: Arc<AtomicBool>,
    mut encoder: OpusEncoder,
    input: Arc<AudioQueue>,
) {
    tracing::info!(device = %device.key, params = ?encoder.params(), "opus encoder started");
    let reason = loop {
        let seen = input.signal.generation();
        let (period, ended) = {
            let mut q = lock(&input.state);
            (q.items.pop_front(), q.ended && q.items.is_empty())
        };
        if let Some(p) = period {
            match encoder.push(&p) {
                Ok(frames) => {
                    let queues = lock(&device.state).opus_queues.clone();
                    for f in &frames {
                        device.fan_out_to(&queues, f);
                    }
                }
                Err(e) => break e,
            }
            continue;
        }
        if ended {
            break "the device's QEMU went away".to_string();
        }
        if closed.load(Relaxed) {
            break "ringcastd is stopping".to_string();
        }
        {
            let mut s = lock(&device.state);
            if s.opus_queues.is_empty() {
                s.opus_running = false;
                s.audio_queues.retain(|q| !Arc::ptr_eq(q, &input));
                tracing::info!(
                    device = %device.key,
                    lost_input_frames = encoder.lost_input_frames(),
                    "opus encoder stopped: no subscriber left"
                );
                return;
            }
        }
        input
            .signal
            .wait_blocking(seen, Instant::now() + Duration::from_millis(200));
    };
    let mut s = lock(&device.state);
    s.opus_running = false;
    s.audio_queues.retain(|q| !Arc::ptr_eq(q, &input));
    for q in s.opus_queues.drain(..) {
        lock(&q.state).ended = true;
        q.signal.notify();
    }
    tracing::info!(
        device = %device.key,
        %reason,
        lost_input_frames = encoder.lost_input_frames(),
        "opus encoder stopped"
    );
}

/// Feeds `input` (one buffer per channel) through `resampler` in the chunks it takes, or
/// as it is without one, and hands each output frame to `frame` as (the output's channel
/// buffers, the frame's index in them). What is not a whole chunk yet stays in `input`.
pub(crate) fn resample_planar(
    resampler: Option<&mut rubato::FftFixedIn<f32>>,
    input: &mut [Vec<f32>],
    mut frame: impl FnMut(&[Vec<f32>], usize),
) -> Result<(), String> {
    use rubato::Resampler;
    let Some(r) = resampler else {
        for i in 0..input[0].len() {
            frame(input, i);
        }
        input.iter_mut().for_each(Vec::clear);
        return Ok(());
    };
    loop {
        let need = r.input_frames_next();
        if input[0].len() < need {
            return Ok(());
        }
        let chunk: Vec<Vec<f32>> = input
            .iter_mut()
            .map(|c| c.drain(..need).collect())
            .collect();
        let out = r
            .process(&chunk, None)
            .map_err(|e| format!("resampler: {e}"))?;
        for i in 0..out[0].len() {
            frame(&out, i);
        }
    }
}

#[cfg(test)]
mod tests;
