//! One device's PCM periods turned into Opus frames: samples to f32, resampled from the
//! device's rate to 48 kHz (rubato's FFT resampler), cut into frames of a fixed duration
//! and encoded by libopus with in-band FEC and DTX. No threads and no I/O: the feed
//! (`super::feed`) drives it.

use std::collections::VecDeque;

use bytes::Bytes;
use protocol::audio::{decode_pcm, Sample, SampleFormat};
use protocol::codec::{OpusParams, OPUS_RATE};
use rubato::{FftFixedIn, Resampler};
use shm_ring::handover::AudioFormat;

use crate::device::AudioPeriod;

/// How ringcastd encodes Opus (one encoder per device, shared by its Opus subscribers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// Frame duration in microseconds: 2500, 5000, 10000, 20000, 40000 or 60000.
    pub frame_us: u32,
    /// Target bitrate, bits per second (6000..=510000).
    pub bitrate: u32,
    /// The packet loss the encoder plans its in-band FEC for, percent (0..=100).
    pub loss_percent: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            frame_us: 10_000,
            bitrate: 64_000,
            loss_percent: 5,
        }
    }
}

/// Frame durations Opus encodes, microseconds.
pub const FRAME_US: [u32; 6] = [2500, 5000, 10_000, 20_000, 40_000, 60_000];

impl OpusConfig {
    /// Checks the values, saying what to do about a wrong one.
    pub fn check(&self) -> Result<(), String> {
        if !FRAME_US.contains(&self.frame_us) {
            return Err(format!(
                "Opus frames of {} ms are not possible: use 2.5, 5, 10, 20, 40 or 60",
                f64::from(self.frame_us) / 1000.0
            ));
        }
        if !(6000..=510_000).contains(&self.bitrate) {
            return Err(format!(
                "an Opus bitrate of {} bit/s is outside 6000..=510000",
                self.bitrate
            ));
        }
        if self.loss_percent > 100 {
            return Err(format!(
                "a loss of {}% is not a percentage",
                self.loss_percent
            ));
        }
        Ok(())
    }

    /// The parameters an Opus stream of a device with `format` would have, or `None` when
    /// Opus cannot carry it (more than two channels, an unknown sample format).
    pub fn params_for(&self, format: &AudioFormat) -> Option<OpusParams> {
        SampleFormat::from_wire(format.sample_format)?;
        if !(1..=2).contains(&format.channels) || format.frequency == 0 {
            return None;
        }
        Some(OpusParams {
            channels: format.channels,
            frame_samples: (u64::from(OPUS_RATE) * u64::from(self.frame_us) / 1_000_000) as u32,
            bitrate: self.bitrate,
        })
    }
}

/// Largest Opus packet ringcastd produces (libopus's own recommendation).
const MAX_PACKET: usize = 4000;

/// A packet this short is the encoder's DTX answer for silence: only the first of a run
/// is sent.
const DTX_PACKET: usize = 2;

/// The PCM-to-Opus state of one device.
pub struct OpusEncoder {
    format: AudioFormat,
    sample: SampleFormat,
    params: OpusParams,
    encoder: opus::Encoder,
    resampler: Option<FftFixedIn<f32>>,
    /// Input waiting for the resampler, per channel.
    input: Vec<Vec<f32>>,
    /// 48 kHz samples waiting to fill a frame, interleaved.
    pending: Vec<f32>,
    /// Input periods' first sample index and stamp, for the stamps of frames.
    stamps: VecDeque<(u64, u64)>,
    /// Input samples (per channel) taken so far.
    input_index: u64,
    /// 48 kHz samples (per channel) produced so far, the resampler's delay removed.
    output_index: i64,
    seq: u64,
    in_dtx: bool,
    skipped: u64,
    /// The sequence number of the last input period taken.
    last_input_seq: Option<u64>,
    /// Frames whose input never arrived (the ring or the encoder's queue dropped it).
    lost_input_frames: u64,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("params", &self.params)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder for a device of `format` under `config`.
    pub fn new(format: AudioFormat, config: &OpusConfig) -> Result<Self, String> {
        config.check()?;
        let params = config.params_for(&format).ok_or_else(|| {
            format!(
                "Opus cannot carry {} channels of sample format {}",
                format.channels, format.sample_format
            )
        })?;
        let sample = SampleFormat::from_wire(format.sample_format)
            .ok_or_else(|| format!("unknown sample format {}", format.sample_format))?;
        let channels = if params.channels == 1 {
            opus::Channels::Mono
        } else {
            opus::Channels::Stereo
        };
        let e = |what: &str, err: opus::Error| format!("libopus: {what}: {err}");
        let mut encoder = opus::Encoder::new(OPUS_RATE, channels, opus::Application::Audio)
            .map_err(|err| e("cannot create an encoder", err))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(params.bitrate as i32))
            .map_err(|err| e("bitrate", err))?;
        encoder
            .set_inband_fec(true)
            .map_err(|err| e("in-band FEC", err))?;
        encoder
            .set_packet_loss_perc(i32::from(config.loss_percent))
            .map_err(|err| e("packet loss", err))?;
        encoder.set_dtx(true).map_err(|err| e("DTX", err))?;
        let ch = usize::from(params.channels);
        let (resampler, delay) = if format.frequency == OPUS_RATE {
            (None, 0)
        } else {
            // Chunks of 10 ms of input.
            let chunk = (format.frequency as usize / 100).max(1);
            let r =
                FftFixedIn::<f32>::new(format.frequency as usize, OPUS_RATE as usize, chunk, 1, ch)
                    .map_err(|err| {
                        format!("cannot resample {} Hz to 48 kHz: {err}", format.frequency)
                    })?;
            let delay = r.output_delay() as i64;
            (Some(r), delay)
        };
        Ok(OpusEncoder {
            format,
            sample,
            params,
            encoder,
            resampler,
            input: vec![Vec::new(); ch],
            pending: Vec::new(),
            stamps: VecDeque::new(),
            input_index: 0,
            output_index: -delay,
            seq: 0,
            in_dtx: false,
            skipped: 0,
            last_input_seq: None,
            lost_input_frames: 0,
        })
    }

    /// The stream's parameters.
    pub fn params(&self) -> OpusParams {
        self.params
    }

    /// Frames left out so far because their input was lost before the encoder.
    pub fn lost_input_frames(&self) -> u64 {
        self.lost_input_frames
    }

    /// Takes one PCM period; returns the frames it completed, in order. A frame of
    /// silence after the first of a run is not returned: the next frame's
    /// `skipped_before` counts it. Periods lost before this one (a jump in `seq`: the
    /// ring's producer dropped them; or `skipped_before`: the encoder's own queue did)
    /// become frames left out the same way, so the client hears a hole of the right
    /// length instead of the audio on either side joined together.
    pub fn push(&mut self, period: &AudioPeriod) -> Result<Vec<AudioPeriod>, String> {
        let ch = usize::from(self.params.channels);
        let jumped = match self.last_input_seq {
            Some(last) => period.seq.saturating_sub(last.saturating_add(1)),
            None => 0,
        };
        self.last_input_seq = Some(period.seq);
        let lost = jumped.max(period.skipped_before);
        if lost > 0 {
            self.skip_input(lost, period.frames);
        }
        self.stamps
            .push_back((self.input_index, period.timestamp_ns));
        while self.stamps.len() > 64 {
            self.stamps.pop_front();
        }
        let mut n = 0u64;
        for (i, s) in decode_pcm(self.sample, self.format.big_endian, &period.pcm).enumerate() {
            self.input[i % ch].push(Sample::to_f32(s));
            n += u64::from(i % ch == 0);
        }
        self.input_index += n;
        self.resample()?;
        let mut out = Vec::new();
        let frame = self.params.frame_samples as usize * ch;
        while self.pending.len() >= frame {
            let samples: Vec<f32> = self.pending.drain(..frame).collect();
            if let Some(p) = self.encode(&samples)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// `periods` periods of about `frames` frames each never arrived: the frames they would
    /// have made are numbered and left out (counted in the next frame's `skipped_before`),
    /// and the sample counts move on as if they had been encoded, so the stamps of later
    /// frames stay those of their own input. The audio held for the frame in progress
    /// (less than one frame) joins the audio after the hole.
    fn skip_input(&mut self, periods: u64, frames: u32) {
        let rate = u64::from(self.format.frequency);
        let frame = u64::from(self.params.frame_samples);
        // Bounded so that a wild count cannot overflow: an hour of frames at most.
        let input = periods.saturating_mul(u64::from(frames)).min(3600 * rate);
        let output = input * u64::from(OPUS_RATE) / rate;
        let left_out = ((output + frame / 2) / frame).max(1);
        self.seq += left_out;
        self.skipped += left_out;
        self.lost_input_frames += left_out;
        self.output_index += (left_out * frame) as i64;
        self.input_index += left_out * frame * rate / u64::from(OPUS_RATE);
    }

    fn resample(&mut self) -> Result<(), String> {
        let (pending, output_index) = (&mut self.pending, &mut self.output_index);
        super::resample_planar(self.resampler.as_mut(), &mut self.input, |out, i| {
            // The resampler's own delay: its first output samples are not audio yet.
            if *output_index >= 0 {
                pending.extend(out.iter().map(|c| c[i]));
            }
            *output_index += 1;
        })
    }

    /// The guest's stamp of the 48 kHz sample at `index` (per channel).
    fn stamp_of(&self, index: u64) -> u64 {
        let input = index * u64::from(self.format.frequency) / u64::from(OPUS_RATE);
        let (start, ts) = self
            .stamps
            .iter()
            .rev()
            .find(|(start, _)| *start <= input)
            .or(self.stamps.front())
            .copied()
            .unwrap_or((0, 0));
        let offset = input.saturating_sub(start) * 1_000_000_000 / u64::from(self.format.frequency);
        ts + offset
    }

    fn encode(&mut self, samples: &[f32]) -> Result<Option<AudioPeriod>, String> {
        let mut packet = vec![0u8; MAX_PACKET];
        let len = self
            .encoder
            .encode_float(samples, &mut packet)
            .map_err(|e| format!("libopus: cannot encode: {e}"))?;
        packet.truncate(len);
        let seq = self.seq;
        self.seq += 1;
        let first_index = (self.output_index.max(0) as u64)
            .saturating_sub((self.pending.len() / usize::from(self.params.channels)) as u64)
            .saturating_sub(u64::from(self.params.frame_samples));
        let silent = len <= DTX_PACKET;
        if silent && self.in_dtx {
            self.skipped += 1;
            return Ok(None);
        }
        self.in_dtx = silent;
        Ok(Some(AudioPeriod {
            seq,
            timestamp_ns: self.stamp_of(first_index),
            frames: self.params.frame_samples,
            pcm: Bytes::from(packet),
            skipped_before: std::mem::take(&mut self.skipped),
        }))
    }
}
