//! Microphone audio a client sent as Opus (`ringcast mic --codec opus`), back to PCM in
//! the format the guest records in: libopus decodes each numbered packet, rebuilds a
//! packet that never came from the next one's in-band FEC, conceals the ones before it
//! (libopus's loss concealment), and rubato's FFT resampler takes 48 kHz to the guest's
//! rate. No threads and no I/O: the microphone attachment (`net::mic`) drives it.

use protocol::audio::{encode_pcm, SampleFormat};
use protocol::codec::{OpusParams, OPUS_RATE};
use rubato::FftFixedIn;
use shm_ring::handover::AudioFormat;

/// The longest hole (in packets) filled with rebuilt or concealed sound. Beyond it the
/// sender was gone for a while: the guest's recording has moved on meanwhile (QEMU pads
/// what the ring did not hold with silence), so the rest of the hole is not played.
pub const MAX_FILL: u64 = 10;

/// Largest frame libopus decodes: 120 ms at 48 kHz, per channel.
const MAX_FRAME: usize = 5760;

/// What the decoder did with the packets it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MicDecodeStats {
    /// Packets decoded as they came.
    pub decoded: u64,
    /// Missing packets rebuilt from the next packet's FEC data.
    pub recovered: u64,
    /// Missing packets concealed.
    pub concealed: u64,
    /// Missing packets beyond [`MAX_FILL`], not played.
    pub unfilled: u64,
    /// Packets older than one already decoded (reordered or repeated), dropped.
    pub late: u64,
}

/// The Opus-to-PCM state of one microphone attachment.
pub struct MicDecoder {
    sample: SampleFormat,
    big_endian: bool,
    channels: usize,
    frame_samples: usize,
    decoder: opus::Decoder,
    resampler: Option<FftFixedIn<f32>>,
    /// 48 kHz samples waiting for the resampler, per channel.
    input: Vec<Vec<f32>>,
    /// Decoded audio, interleaved, at 48 kHz.
    decoded: Vec<f32>,
    /// Resampled audio, interleaved, at the guest's rate.
    resampled: Vec<f32>,
    next: Option<u64>,
    stats: MicDecodeStats,
}

impl std::fmt::Debug for MicDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicDecoder")
            .field("next", &self.next)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MicDecoder {
    /// A decoder of `params` packets into PCM of `format` (the guest's capture format).
    pub fn new(format: AudioFormat, params: OpusParams) -> Result<Self, String> {
        let sample = SampleFormat::from_wire(format.sample_format)
            .ok_or_else(|| format!("unknown sample format {}", format.sample_format))?;
        if usize::from(format.channels) != usize::from(params.channels)
            || !(1..=2).contains(&params.channels)
        {
            return Err(format!(
                "Opus in {} channels cannot feed a capture voice of {} channels",
                params.channels, format.channels
            ));
        }
        if params.frame_samples == 0 || params.frame_samples as usize > MAX_FRAME {
            return Err(format!(
                "Opus frames of {} samples are not possible",
                params.frame_samples
            ));
        }
        let opus_channels = if params.channels == 1 {
            opus::Channels::Mono
        } else {
            opus::Channels::Stereo
        };
        let decoder = opus::Decoder::new(OPUS_RATE, opus_channels)
            .map_err(|e| format!("libopus: cannot create a decoder: {e}"))?;
        let ch = usize::from(params.channels);
        let resampler = if format.frequency == OPUS_RATE {
            None
        } else if format.frequency == 0 {
            return Err("the guest records at 0 Hz".into());
        } else {
            let r = FftFixedIn::<f32>::new(
                OPUS_RATE as usize,
                format.frequency as usize,
                params.frame_samples as usize,
                1,
                ch,
            )
            .map_err(|e| format!("cannot resample 48 kHz to {} Hz: {e}", format.frequency))?;
            Some(r)
        };
        Ok(MicDecoder {
            sample,
            big_endian: format.big_endian,
            channels: ch,
            frame_samples: params.frame_samples as usize,
            decoder,
            resampler,
            input: vec![Vec::new(); ch],
            decoded: Vec::new(),
            resampled: Vec::new(),
            next: None,
            stats: MicDecodeStats::default(),
        })
    }

    /// What the decoder did so far.
    pub fn stats(&self) -> MicDecodeStats {
        self.stats
    }

    /// Takes packet `seq`; `out` gets the PCM (whole frames in the guest's format) it
    /// completed, with the packets missing before it rebuilt or concealed. A packet older
    /// than one already taken is dropped. A packet libopus refuses is an error (the client
    /// sends nothing but Opus packets).
    pub fn push(&mut self, seq: u64, packet: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        let missing = match self.next {
            Some(n) if seq < n => {
                self.stats.late += 1;
                return Ok(());
            }
            Some(n) => seq - n,
            None => 0,
        };
        if missing > 0 {
            let filled = missing.min(MAX_FILL);
            self.stats.unfilled += missing - filled;
            for _ in 1..filled {
                self.decode(&[], false)?;
                self.stats.concealed += 1;
            }
            self.decode(packet, true)?;
            self.stats.recovered += 1;
        }
        self.decode(packet, false)?;
        self.stats.decoded += 1;
        self.next = Some(seq.saturating_add(1));
        self.resample()?;
        encode_pcm(self.sample, self.big_endian, &self.resampled, out);
        self.resampled.clear();
        Ok(())
    }

    /// Decodes `packet` (empty: conceal one frame; `fec`: the frame before `packet`, from
    /// its FEC data) onto the samples waiting for the resampler.
    fn decode(&mut self, packet: &[u8], fec: bool) -> Result<(), String> {
        // Concealment and FEC decode exactly the buffer's duration: one frame.
        let frames = if packet.is_empty() || fec {
            self.frame_samples
        } else {
            MAX_FRAME
        };
        self.decoded.resize(frames * self.channels, 0.0);
        let n = self
            .decoder
            .decode_float(packet, &mut self.decoded, fec)
            .map_err(|e| format!("libopus: cannot decode a microphone packet: {e}"))?;
        for (i, s) in self.decoded[..n * self.channels].iter().enumerate() {
            self.input[i % self.channels].push(*s);
        }
        Ok(())
    }

    fn resample(&mut self) -> Result<(), String> {
        let resampled = &mut self.resampled;
        super::resample_planar(self.resampler.as_mut(), &mut self.input, |out, i| {
            resampled.extend(out.iter().map(|c| c[i]));
        })
    }
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
