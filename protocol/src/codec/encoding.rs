//! How audio travels on an attachment: the codecs a client offers in its `Attach`, the
//! encoding the server chose in its `Attached`, and their bytes.
//!
//! Both are fields appended after the first version's: an `Attach` without them (an
//! older client) offers only PCM, and an `Attached` without them (an older server, or
//! PCM) means PCM. PCM is encoded as nothing at all, so a PCM-only exchange is byte for
//! byte the first version's.

use super::*;

/// Sample rate of every Opus stream ringcast sends (Opus's own full-band rate; the server
/// resamples the device's rate to it).
pub const OPUS_RATE: u32 = 48_000;

/// Most codecs one `Attach` may offer.
pub const MAX_CODECS: usize = 16;

/// A way to carry audio, numbered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Interleaved PCM in the device's own format and rate: lossless, about 1.4 Mbit/s
    /// for 44.1 kHz stereo s16.
    Pcm = 0,
    /// Opus at 48 kHz with in-band FEC and DTX, one packet per frame.
    Opus = 1,
}

impl AudioCodec {
    /// Every codec, in the order of their numbers.
    pub const ALL: [AudioCodec; 2] = [AudioCodec::Pcm, AudioCodec::Opus];

    /// The codec a number names, or `None` for one this version does not know.
    pub fn from_wire(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u8 == n)
    }

    /// Lower-case name, as on command lines.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcm => "pcm",
            AudioCodec::Opus => "opus",
        }
    }
}

/// The parameters of an Opus stream, as the server announces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusParams {
    /// Channels (1 or 2).
    pub channels: u16,
    /// Samples per channel in one frame, at [`OPUS_RATE`] (480: 10 ms).
    pub frame_samples: u32,
    /// Target bitrate, bits per second.
    pub bitrate: u32,
}

impl OpusParams {
    /// The duration of one frame in nanoseconds.
    pub fn frame_ns(&self) -> u64 {
        u64::from(self.frame_samples) * 1_000_000_000 / u64::from(OPUS_RATE)
    }
}

/// What the `Audio` frames of an attachment carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioEncoding {
    /// PCM periods in the device's format ([`AudioData::pcm`] holds the samples).
    #[default]
    Pcm,
    /// One Opus packet per frame ([`AudioData::pcm`] holds the packet, `frames` its
    /// samples per channel at [`OPUS_RATE`], `seq` the frame's number). Frames the encoder
    /// found silent (DTX) after the first of a silence are not sent: the next packet's
    /// `skipped_before` counts them.
    Opus(OpusParams),
}

impl AudioEncoding {
    /// The codec of this encoding.
    pub fn codec(&self) -> AudioCodec {
        match self {
            AudioEncoding::Pcm => AudioCodec::Pcm,
            AudioEncoding::Opus(_) => AudioCodec::Opus,
        }
    }
}

/// Appends the offered codecs: nothing when only PCM is offered (the first version's
/// `Attach`), else a count and one number per codec, in the client's order of preference.
pub(super) fn put_codecs(o: &mut Vec<u8>, codecs: &[AudioCodec]) -> Result<(), EncodeError> {
    if codecs.iter().all(|c| *c == AudioCodec::Pcm) {
        return Ok(());
    }
    if codecs.len() > MAX_CODECS {
        return Err(EncodeError("codecs"));
    }
    o.put_u8(codecs.len() as u8);
    o.extend(codecs.iter().map(|c| *c as u8));
    Ok(())
}

/// Appends the chosen encoding: nothing for PCM.
pub(super) fn put_encoding(o: &mut Vec<u8>, e: &AudioEncoding) {
    if let AudioEncoding::Opus(p) = e {
        o.put_u8(AudioCodec::Opus as u8);
        o.put_u16(p.channels);
        o.put_u32(p.frame_samples);
        o.put_u32(p.bitrate);
    }
}

impl Reader<'_> {
    /// The offered codecs, if the payload goes on. Numbers this version does not know are
    /// skipped (a newer client may offer more), so the list holds what both could use.
    pub(super) fn codecs(&mut self) -> Result<Vec<AudioCodec>, DecodeError> {
        if self.0.is_empty() {
            return Ok(Vec::new());
        }
        let n = usize::from(self.u8()?);
        if n > MAX_CODECS {
            return Err(DecodeError::FieldTooLong("codecs"));
        }
        let numbers = self.take(n)?;
        let mut codecs: Vec<AudioCodec> = Vec::with_capacity(n);
        for c in numbers.iter().filter_map(|n| AudioCodec::from_wire(*n)) {
            if !codecs.contains(&c) {
                codecs.push(c);
            }
        }
        if codecs.iter().all(|c| *c == AudioCodec::Pcm) {
            codecs.clear();
        }
        Ok(codecs)
    }

    /// The chosen encoding: PCM when the payload ends here.
    pub(super) fn encoding(&mut self) -> Result<AudioEncoding, DecodeError> {
        if self.0.is_empty() {
            return Ok(AudioEncoding::Pcm);
        }
        match AudioCodec::from_wire(self.u8()?) {
            Some(AudioCodec::Opus) => {
                let p = OpusParams {
                    channels: self.u16()?,
                    frame_samples: self.u32()?,
                    bitrate: self.u32()?,
                };
                // Opus frames at 48 kHz: 2.5, 5, 10, 20, 40 or 60 ms.
                const FRAMES: [u32; 6] = [120, 240, 480, 960, 1920, 2880];
                if !(1..=2).contains(&p.channels) || !FRAMES.contains(&p.frame_samples) {
                    return Err(DecodeError::InvalidValue("opus parameters"));
                }
                Ok(AudioEncoding::Opus(p))
            }
            Some(AudioCodec::Pcm) => Ok(AudioEncoding::Pcm),
            // The server chooses among what the client offered: an unknown one is wrong.
            None => Err(DecodeError::InvalidValue("encoding")),
        }
    }
}
