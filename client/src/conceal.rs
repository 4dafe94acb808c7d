//! Loss concealment for PCM: a period that is missing at its tick (lost on the network,
//! late, or an underrun) is replaced by the last period played, read backwards and
//! forwards in turn so that every junction joins two equal samples (no click), fading to
//! silence over [`FADE_NS`] of concealment. The next period received plays as it is.
//!
//! A sound held for a period's length is what listeners expect from a short drop-out; a
//! longer one fades out instead of buzzing.

use protocol::audio::{decode_pcm, Sample, SampleFormat};

/// Concealment fades from full level to silence over this long.
pub const FADE_NS: u64 = 50_000_000;

/// The PCM concealment state of one attachment.
#[derive(Debug, Clone)]
pub struct PcmConcealer {
    sample: SampleFormat,
    big_endian: bool,
    channels: usize,
    rate: u32,
    /// The last period played, as received.
    last: Vec<u8>,
    /// Frames concealed since it played.
    concealed_frames: u64,
    /// Periods concealed since it played.
    run: u64,
}

impl PcmConcealer {
    /// Concealment for a device of `rate` Hz with `channels` channels of `sample`.
    pub fn new(sample: SampleFormat, big_endian: bool, channels: u16, rate: u32) -> Self {
        PcmConcealer {
            sample,
            big_endian,
            channels: usize::from(channels.max(1)),
            rate,
            last: Vec::new(),
            concealed_frames: 0,
            run: 0,
        }
    }

    /// A period played as received: the source of the next concealment.
    pub fn played(&mut self, pcm: &[u8]) {
        self.last.clear();
        self.last.extend_from_slice(pcm);
        self.concealed_frames = 0;
        self.run = 0;
    }

    /// Silence played (a period the server left out): a later concealment is silence too.
    pub fn silenced(&mut self) {
        self.last.clear();
    }

    /// A period to play in place of a missing one; `None` when there is nothing to repeat
    /// (the caller plays silence).
    pub fn conceal(&mut self) -> Option<Vec<u8>> {
        let frame_bytes = self.sample.bytes_per_sample() * self.channels;
        let frames = self.last.len() / frame_bytes;
        if frames == 0 {
            return None;
        }
        let fade_frames = (u64::from(self.rate) * FADE_NS / 1_000_000_000).max(1);
        // Backwards first: the period played last ended on the sample this one starts on.
        let backwards = self.run % 2 == 0;
        let mut out = Vec::with_capacity(frames * frame_bytes);
        for i in 0..frames {
            let src = if backwards { frames - 1 - i } else { i };
            let done = self.concealed_frames + i as u64;
            let gain = 1.0 - (done as f64 / fade_frames as f64).min(1.0);
            let bytes = &self.last[src * frame_bytes..(src + 1) * frame_bytes];
            for s in decode_pcm(self.sample, self.big_endian, bytes) {
                out.extend(encode(self.sample, self.big_endian, scale(s, gain)));
            }
        }
        self.concealed_frames += frames as u64;
        self.run += 1;
        Some(out)
    }
}

fn scale(s: Sample, gain: f64) -> Sample {
    if gain >= 1.0 {
        return s;
    }
    match s {
        Sample::I8(v) => Sample::I8((f64::from(v) * gain).round() as i8),
        Sample::I16(v) => Sample::I16((f64::from(v) * gain).round() as i16),
        Sample::I32(v) => Sample::I32((f64::from(v) * gain).round() as i32),
        Sample::F32(v) => Sample::F32((f64::from(v) * gain) as f32),
    }
}

/// One sample back to `format`'s bytes (the inverse of [`decode_pcm`]).
fn encode(format: SampleFormat, big_endian: bool, s: Sample) -> Vec<u8> {
    let b16 = |v: u16| {
        if big_endian {
            v.to_be_bytes().to_vec()
        } else {
            v.to_le_bytes().to_vec()
        }
    };
    let b32 = |v: u32| {
        if big_endian {
            v.to_be_bytes().to_vec()
        } else {
            v.to_le_bytes().to_vec()
        }
    };
    match (format, s) {
        (SampleFormat::U8, Sample::I8(v)) => vec![(v as u8) ^ 0x80],
        (SampleFormat::S8, Sample::I8(v)) => vec![v as u8],
        (SampleFormat::U16, Sample::I16(v)) => b16((v as u16) ^ 0x8000),
        (SampleFormat::S16, Sample::I16(v)) => b16(v as u16),
        (SampleFormat::U32, Sample::I32(v)) => b32((v as u32) ^ 0x8000_0000),
        (SampleFormat::S32, Sample::I32(v)) => b32(v as u32),
        (SampleFormat::F32, Sample::F32(v)) => b32(v.to_bits()),
        // decode_pcm gives each format its own variant; anything else is silence.
        (f, _) => vec![0; f.bytes_per_sample()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_round_trips_through_decode_and_encode() {
        for f in SampleFormat::ALL {
            for be in [false, true] {
                let n = f.bytes_per_sample();
                let bytes: Vec<u8> = (0..n as u8 * 4)
                    .map(|b| b.wrapping_mul(37) ^ 0x5a)
                    .collect();
                let back: Vec<u8> = decode_pcm(f, be, &bytes)
                    .flat_map(|s| encode(f, be, scale(s, 1.0)))
                    .collect();
                assert_eq!(back, bytes, "{f:?} big_endian={be}");
            }
        }
    }
}
