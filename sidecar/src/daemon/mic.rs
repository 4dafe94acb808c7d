//! The microphone: PCM a client sends (or Opus, decoded by `transcode::MicDecoder`) (`ringcast mic`) written into an audio device's
//! input ring, which the guest's capture voice reads.
//!
//! Audio keeps real time on both ends: the client sends at the pace of its source and QEMU
//! reads at the pace of the guest's sound card. What does not fit in the ring is dropped
//! (whole frames), never queued: a queue would only make the guest hear the client later
//! and later. The device's input counter counts what went in; each sender's attachment
//! logs what went in and what was dropped when it ends.

use std::sync::atomic::Ordering::Relaxed;

use protocol::codec::OpusParams;
use shm_ring::handover::AudioFormat;

use super::Handle;
use crate::device::{lock, DeviceKind};
use crate::error::Error;
use crate::names::DeviceKey;
use crate::transcode::OpusConfig;

/// What one write of microphone audio did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicWrite {
    /// Bytes stored in the input ring.
    pub written: usize,
    /// Bytes dropped because the ring was full (the guest records slower than the client
    /// sends, or not at all).
    pub dropped: usize,
}

impl Handle {
    /// The format the guest records in on `key` (its sound card's capture voice), or why
    /// there is none.
    pub fn mic_format(&self, key: &DeviceKey) -> Result<AudioFormat, Error> {
        let d = self.reg.get(key)?;
        if d.kind != DeviceKind::Audio {
            return Err(Error::WrongKind(key.to_string(), "audio"));
        }
        let format = lock(&d.state).audio_in_format;
        format.ok_or_else(|| Error::NoCapture(key.to_string()))
    }

    /// The Opus stream a microphone client would send to `key`: 10 ms frames (in-band FEC
    /// needs 10 ms or more) in the guest's capture channels, at ringcastd's Opus bitrate;
    /// `None` when Opus cannot carry the capture voice (more than two channels).
    pub fn mic_opus_params(&self, key: &DeviceKey) -> Option<OpusParams> {
        let format = self.mic_format(key).ok()?;
        let config = OpusConfig {
            frame_us: 10_000,
            ..self.reg.cfg.opus
        };
        config.params_for(&format)
    }

    /// Writes whole frames of `pcm` (in [`Handle::mic_format`]) into the input ring of
    /// `key`; what does not fit is dropped and counted. Never waits.
    pub fn write_mic(&self, key: &DeviceKey, pcm: &[u8]) -> Result<MicWrite, Error> {
        let d = self.reg.get(key)?;
        let frame = lock(&d.state)
            .audio_in_format
            .and_then(|f| f.frame_bytes())
            .ok_or_else(|| Error::NoCapture(key.to_string()))? as usize;
        let mut input = lock(&d.input);
        let Some(side) = input.as_mut() else {
            return Err(Error::NotAttached(key.to_string()));
        };
        let free = side
            .producer
            .free()
            .map_err(|p| Error::Poisoned(key.to_string(), p))?;
        let n = pcm.len().min(free) / frame * frame;
        let written = if n > 0 {
            side.producer
                .write(&pcm[..n])
                .map_err(|p| Error::Poisoned(key.to_string(), p))?
                .bytes
        } else {
            0
        };
        d.counters.input_bytes.fetch_add(written as u64, Relaxed);
        Ok(MicWrite {
            written,
            dropped: pcm.len() - written,
        })
    }
}
