//! The codec of an audio attachment, as plain functions: what a client offers (its
//! `--codec auto` policy included), what the server chooses, and the client's check of the
//! server's answer.
//!
//! The client offers codecs in its order of preference; the server takes the first it can
//! produce for the device and falls back to PCM, which every server and client speak. An
//! `Attach` that offers nothing (every client older than codecs) gets PCM.

use crate::codec::{AudioCodec, AudioEncoding, AudioFormat, OpusParams};

use super::Refusal;

/// What the client asks for on its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    /// PCM only.
    Pcm,
    /// Opus, PCM if the server cannot.
    Opus,
    /// Opus beyond loopback or when the path looks too narrow for PCM, else PCM.
    Auto,
}

impl std::str::FromStr for CodecChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pcm" => Ok(CodecChoice::Pcm),
            "opus" => Ok(CodecChoice::Opus),
            "auto" => Ok(CodecChoice::Auto),
            _ => Err(format!("unknown codec {s:?} (pcm, opus or auto)")),
        }
    }
}

/// What the client knows about its path when it decides `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathFacts {
    /// The server's address is a loopback address.
    pub loopback: bool,
    /// What the path was measured to carry, bits per second (the congestion window over
    /// the round-trip time); `None` when not measured.
    pub capacity_bps: Option<u64>,
}

/// PCM's bitrate for `format` (bits per second), `None` for an unknown sample format.
pub fn pcm_bitrate(format: &AudioFormat) -> Option<u64> {
    let bytes = u64::from(format.sample_bytes()?);
    Some(bytes * 8 * u64::from(format.channels) * u64::from(format.rate))
}

/// The codecs to offer, best first. `auto` takes PCM only on a loopback path that was
/// measured to carry at least twice PCM's bitrate (`pcm_bps`, when known); anywhere else
/// Opus comes first, so a LAN user who wants lossless says `--codec pcm`.
pub fn offer(choice: CodecChoice, path: PathFacts, pcm_bps: Option<u64>) -> Vec<AudioCodec> {
    let opus = vec![AudioCodec::Opus, AudioCodec::Pcm];
    match choice {
        CodecChoice::Pcm => Vec::new(),
        CodecChoice::Opus => opus,
        CodecChoice::Auto => {
            let wide = match (path.capacity_bps, pcm_bps) {
                (Some(cap), Some(pcm)) => cap >= pcm.saturating_mul(2),
                // Unmeasured: loopback is wide by nature.
                _ => true,
            };
            if path.loopback && wide {
                Vec::new()
            } else {
                opus
            }
        }
    }
}

/// The server's choice: the first offered codec it can produce. `opus` is what the server
/// would encode for this device, `None` when it cannot (Opus off, or a device whose format
/// Opus cannot carry).
pub fn choose(offered: &[AudioCodec], opus: Option<OpusParams>) -> AudioEncoding {
    for c in offered {
        match (c, opus) {
            (AudioCodec::Opus, Some(p)) => return AudioEncoding::Opus(p),
            (AudioCodec::Pcm, _) => return AudioEncoding::Pcm,
            (AudioCodec::Opus, None) => {}
        }
    }
    AudioEncoding::Pcm
}

/// The client's check of the server's answer: PCM always, anything else only if offered.
pub fn check_answer(offered: &[AudioCodec], got: AudioEncoding) -> Result<AudioEncoding, Refusal> {
    if got == AudioEncoding::Pcm || offered.contains(&got.codec()) {
        Ok(got)
    } else {
        Err(Refusal::violation(format!(
            "the server chose {}, which this client did not offer",
            got.codec().name()
        )))
    }
}
