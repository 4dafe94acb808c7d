//! From received audio to samples to play: the jitter buffer ([`crate::jitter`]) and the
//! decoder of the attachment's encoding (PCM as it is, Opus through libopus with its loss
//! concealment and in-band FEC). No I/O and no clock: the caller pushes what arrives and
//! asks, at each tick of its clock, for the samples to play.

use protocol::audio::SampleFormat;

use crate::conceal::PcmConcealer;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Slot};
use crate::{AudioData, AudioEncoding, AudioFormat, OpusParams, OPUS_RATE};

/// Longest Opus frame (60 ms at 48 kHz), per channel.
const MAX_OPUS_FRAME: usize = 2880;
/// The longest PCM period believed for concealment: one second at 192 kHz.
const MAX_PCM_FRAMES: u32 = 192_000;

/// Opus packets this short are the encoder's DTX frames: silence.
const DTX_PACKET: usize = 2;

/// What one tick plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Interleaved samples in [`Player::output_format`].
    pub pcm: Vec<u8>,
    /// The guest's stamp of the unit played (ns, CLOCK_MONOTONIC of ringcastd's host);
    /// `None` for concealment and silence.
    pub stamp_ns: Option<u64>,
}

/// Decoding errors beside the buffer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlayerStats {
    /// The jitter buffer's counters.
    pub jitter: JitterStats,
    /// Opus packets libopus refused (played as concealment).
    pub decode_errors: u64,
}

enum Decoder {
    Pcm {
        format: AudioFormat,
        sample: SampleFormat,
        /// Frames of the first period (the tick).
        frames: u32,
        /// Stands in for missing periods.
        conceal: PcmConcealer,
    },
    Opus {
        decoder: opus::Decoder,
        params: OpusParams,
    },
}

/// The receiving end of one audio attachment.
pub struct Player {
    buffer: Option<JitterBuffer<AudioData>>,
    decoder: Decoder,
    floor_ns: u64,
    fixed: bool,
    decode_errors: u64,
}

impl std::fmt::Debug for Player {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Player")
            .field("output", &self.output_format())
            .field("floor_ns", &self.floor_ns)
            .field("fixed", &self.fixed)
            .finish_non_exhaustive()
    }
}

impl Player {
    /// A player for an attachment of `encoding` to a device of `format`, whose jitter
    /// buffer keeps at least `floor_ns` (exactly that with `fixed`).
    pub fn new(
        encoding: AudioEncoding,
        format: AudioFormat,
        floor_ns: u64,
        fixed: bool,
    ) -> Result<Self, String> {
        let decoder = match encoding {
            AudioEncoding::Pcm => {
                let sample =
                    SampleFormat::try_from(format.sample_format).map_err(|e| e.to_string())?;
                Decoder::Pcm {
                    format,
                    sample,
                    frames: 0,
                    conceal: PcmConcealer::new(
                        sample,
                        format.big_endian,
                        format.channels,
                        format.rate,
                    ),
                }
            }
            AudioEncoding::Opus(params) => {
                let channels = match params.channels {
                    1 => opus::Channels::Mono,
                    2 => opus::Channels::Stereo,
                    n => return Err(format!("Opus with {n} channels")),
                };
                let decoder = opus::Decoder::new(OPUS_RATE, channels)
                    .map_err(|e| format!("libopus: cannot create a decoder: {e}"))?;
                Decoder::Opus { decoder, params }
            }
        };
        let mut p = Player {
            buffer: None,
            decoder,
            floor_ns,
            fixed,
            decode_errors: 0,
        };
        if let Decoder::Opus { params, .. } = &p.decoder {
            p.buffer = Some(p.new_buffer(params.frame_ns(), true));
        }
        Ok(p)
    }

    fn new_buffer(&self, unit_ns: u64, fec: bool) -> JitterBuffer<AudioData> {
        let cfg = JitterConfig {
            fixed: self.fixed,
            ..JitterConfig::adaptive(unit_ns, self.floor_ns, fec)
        };
        JitterBuffer::new(cfg)
    }

    /// The format of what [`Player::tick`] returns: the device's for PCM, s16 little-endian
    /// at 48 kHz for Opus.
    pub fn output_format(&self) -> AudioFormat {
        match &self.decoder {
            Decoder::Pcm { format, .. } => *format,
            Decoder::Opus { params, .. } => AudioFormat {
                rate: OPUS_RATE,
                channels: params.channels,
                sample_format: SampleFormat::S16.to_wire(),
                big_endian: false,
            },
        }
    }

    /// The time between ticks, ns (known once the first PCM period came).
    pub fn tick_ns(&self) -> Option<u64> {
        match &self.decoder {
            Decoder::Opus { params, .. } => Some(params.frame_ns()),
            Decoder::Pcm { format, frames, .. } => (*frames > 0 && format.rate > 0)
                .then(|| u64::from(*frames) * 1_000_000_000 / u64::from(format.rate)),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> PlayerStats {
        PlayerStats {
            jitter: self
                .buffer
                .as_ref()
                .map(|b| b.stats().clone())
                .unwrap_or_default(),
            decode_errors: self.decode_errors,
        }
    }

    /// Units waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.as_ref().map_or(0, JitterBuffer::len)
    }

    /// A unit arrived at `now_ns`.
    pub fn push(&mut self, now_ns: u64, unit: AudioData) {
        let silent = match &mut self.decoder {
            Decoder::Opus { .. } => unit.pcm.len() <= DTX_PACKET,
            Decoder::Pcm {
                format,
                sample,
                frames,
                ..
            } => {
                // A period's length comes from the server: one beyond a second of audio
                // (at any rate QEMU offers) is not believed for concealment.
                if *frames == 0 && unit.frames > 0 && unit.frames <= MAX_PCM_FRAMES {
                    *frames = unit.frames;
                }
                is_silent(*sample, format.big_endian, &unit.pcm)
            }
        };
        if self.buffer.is_none() {
            let Some(unit_ns) = self.tick_ns() else {
                return;
            };
            self.buffer = Some(self.new_buffer(unit_ns, false));
        }
        if let Some(b) = self.buffer.as_mut() {
            b.push(now_ns, unit.seq, unit.skipped_before, silent, unit);
        }
    }

    /// What to play at the tick at `now_ns`; `None` while the first units are buffered.
    pub fn tick(&mut self, now_ns: u64) -> Option<Tick> {
        let slot = self.buffer.as_mut()?.pop(now_ns);
        match slot {
            Slot::Wait => None,
            Slot::Play { packet, .. } => {
                let stamp_ns = Some(packet.timestamp_ns);
                let pcm = match &mut self.decoder {
                    Decoder::Pcm { conceal, .. } => {
                        conceal.played(&packet.pcm);
                        packet.pcm.to_vec()
                    }
                    Decoder::Opus { .. } => self.decode_opus(&packet.pcm, false),
                };
                Some(Tick { pcm, stamp_ns })
            }
            Slot::Recover { from, .. } => Some(Tick {
                pcm: match &self.decoder {
                    // PCM carries no FEC: a buffer set up without it never asks.
                    Decoder::Pcm { .. } => self.conceal_pcm(),
                    Decoder::Opus { .. } => self.decode_opus(&from.pcm, true),
                },
                stamp_ns: None,
            }),
            Slot::Conceal { .. } | Slot::Stretch => Some(Tick {
                pcm: match &self.decoder {
                    Decoder::Pcm { .. } => self.conceal_pcm(),
                    // libopus's concealment.
                    Decoder::Opus { .. } => self.decode_opus(&[], false),
                },
                stamp_ns: None,
            }),
            Slot::Silence { .. } => Some(Tick {
                pcm: match &mut self.decoder {
                    Decoder::Pcm { conceal, .. } => {
                        conceal.silenced();
                        self.silence()
                    }
                    // Under DTX libopus's concealment is its comfort noise.
                    Decoder::Opus { .. } => self.decode_opus(&[], false),
                },
                stamp_ns: None,
            }),
        }
    }

    /// One frame from libopus as s16le: `packet` decoded (its FEC data with `fec`), or
    /// concealment for an empty one. A packet libopus refuses is concealed and counted.
    fn decode_opus(&mut self, packet: &[u8], fec: bool) -> Vec<u8> {
        let Decoder::Opus { decoder, params } = &mut self.decoder else {
            return Vec::new();
        };
        let ch = usize::from(params.channels);
        let frame = params.frame_samples as usize;
        let mut out = vec![0i16; MAX_OPUS_FRAME * ch];
        // FEC and concealment produce exactly one frame's duration.
        let room = if packet.is_empty() || fec {
            frame
        } else {
            MAX_OPUS_FRAME
        };
        let n = match decoder.decode(packet, &mut out[..room * ch], fec) {
            Ok(n) => n,
            Err(_) => {
                self.decode_errors += 1;
                decoder
                    .decode(&[], &mut out[..frame * ch], false)
                    .unwrap_or(0)
            }
        };
        out.truncate(n * ch);
        out.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// A period in place of a missing one: the last one played, repeated and fading
    /// ([`PcmConcealer`]), or silence before any played.
    fn conceal_pcm(&mut self) -> Vec<u8> {
        let Decoder::Pcm { conceal, .. } = &mut self.decoder else {
            return Vec::new();
        };
        conceal.conceal().unwrap_or_else(|| self.silence())
    }

    /// One period of silence in the device's format.
    fn silence(&self) -> Vec<u8> {
        let Decoder::Pcm {
            format,
            sample,
            frames,
            ..
        } = &self.decoder
        else {
            return Vec::new();
        };
        let one: Vec<u8> = match sample {
            SampleFormat::U8 => vec![0x80],
            SampleFormat::U16 if format.big_endian => vec![0x80, 0],
            SampleFormat::U16 => vec![0, 0x80],
            SampleFormat::U32 if format.big_endian => vec![0x80, 0, 0, 0],
            SampleFormat::U32 => vec![0, 0, 0, 0x80],
            s => vec![0; s.bytes_per_sample()],
        };
        let n = *frames as usize * usize::from(format.channels);
        one.repeat(n)
    }
}

/// Whether a PCM period is silence (every sample below -80 dBFS).
fn is_silent(sample: SampleFormat, big_endian: bool, pcm: &[u8]) -> bool {
    protocol::audio::decode_pcm(sample, big_endian, pcm).all(|s| s.to_f32().abs() < 1e-4)
}

#[cfg(test)]
mod tests;
