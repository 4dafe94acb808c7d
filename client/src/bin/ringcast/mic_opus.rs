//! `ringcast mic --codec opus`: the source's samples (at the guest's rate) resampled to
//! 48 kHz with rubato's FFT resampler and encoded by libopus in the frames the server
//! announced (10 ms), with in-band FEC and DTX, numbered consecutively.

use anyhow::Context;
use protocol::codec::{OpusParams, OPUS_RATE};
use rubato::{FftFixedIn, Resampler};

/// The loss the FEC is planned for, percent (as ringcastd's own encoder by default).
const LOSS_PERCENT: i32 = 5;

/// Largest packet sent (libopus's own recommendation).
const MAX_PACKET: usize = 4000;

/// Interleaved f32 at the guest's rate in, Opus packets out.
pub struct MicEncoder {
    encoder: opus::Encoder,
    resampler: Option<FftFixedIn<f32>>,
    channels: usize,
    frame: usize,
    /// Input waiting for the resampler, per channel.
    input: Vec<Vec<f32>>,
    /// 48 kHz samples waiting to fill a frame, interleaved.
    pending: Vec<f32>,
}

impl MicEncoder {
    /// An encoder of `params` packets from samples at `rate` Hz (`params.channels` of them).
    pub fn new(params: OpusParams, rate: u32) -> anyhow::Result<Self> {
        let channels = match params.channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => anyhow::bail!("the server asked for Opus in {n} channels"),
        };
        let mut encoder = opus::Encoder::new(OPUS_RATE, channels, opus::Application::Audio)
            .context("libopus: cannot create an encoder")?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(params.bitrate as i32))
            .context("libopus: bitrate")?;
        encoder.set_inband_fec(true).context("libopus: FEC")?;
        encoder
            .set_packet_loss_perc(LOSS_PERCENT)
            .context("libopus: packet loss")?;
        encoder.set_dtx(true).context("libopus: DTX")?;
        let ch = usize::from(params.channels);
        let resampler = if rate == OPUS_RATE {
            None
        } else {
            let chunk = (rate as usize / 100).max(1);
            Some(
                FftFixedIn::<f32>::new(rate as usize, OPUS_RATE as usize, chunk, 1, ch)
                    .with_context(|| format!("cannot resample {rate} Hz to 48 kHz"))?,
            )
        };
        Ok(MicEncoder {
            encoder,
            resampler,
            channels: ch,
            frame: params.frame_samples as usize * ch,
            input: vec![Vec::new(); ch],
            pending: Vec::new(),
        })
    }

    /// Takes interleaved samples; `packets` gets the packets they completed, in order.
    pub fn push(&mut self, samples: &[f32], packets: &mut Vec<Vec<u8>>) -> anyhow::Result<()> {
        packets.clear();
        match self.resampler.as_mut() {
            None => self.pending.extend_from_slice(samples),
            Some(r) => {
                for (i, s) in samples.iter().enumerate() {
                    self.input[i % self.channels].push(*s);
                }
                while self.input[0].len() >= r.input_frames_next() {
                    let need = r.input_frames_next();
                    let chunk: Vec<Vec<f32>> = self
                        .input
                        .iter_mut()
                        .map(|c| c.drain(..need).collect())
                        .collect();
                    let out = r.process(&chunk, None).context("resampler")?;
                    for i in 0..out[0].len() {
                        self.pending.extend(out.iter().map(|c| c[i]));
                    }
                }
            }
        }
        while self.pending.len() >= self.frame {
            let frame: Vec<f32> = self.pending.drain(..self.frame).collect();
            let packet = self
                .encoder
                .encode_vec_float(&frame, MAX_PACKET)
                .context("libopus: cannot encode")?;
            packets.push(packet);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tone at 44.1 kHz becomes one 10 ms packet per 10 ms of input, which libopus
    /// decodes back to the same tone.
    #[test]
    fn a_tone_becomes_packets_libopus_decodes_at_its_frequency() {
        let params = OpusParams {
            channels: 2,
            frame_samples: 480,
            bitrate: 64_000,
        };
        let mut e = MicEncoder::new(params, 44_100).unwrap();
        let mut d = opus::Decoder::new(OPUS_RATE, opus::Channels::Stereo).unwrap();
        let (mut packets, mut out) = (Vec::new(), Vec::new());
        let mut count = 0;
        for tick in 0..100u32 {
            let samples: Vec<f32> = (0..441u32)
                .flat_map(|i| {
                    let n = f64::from(tick * 441 + i);
                    let v = (0.5 * (std::f64::consts::TAU * 1000.0 * n / 44_100.0).sin()) as f32;
                    [v, v]
                })
                .collect();
            e.push(&samples, &mut packets).unwrap();
            for p in &packets {
                let mut pcm = vec![0f32; 5760 * 2];
                let n = d.decode_float(p, &mut pcm, false).unwrap();
                out.extend_from_slice(&pcm[..n * 2]);
                count += 1;
            }
        }
        assert!((99..=100).contains(&count), "{count} packets");
        // Past the codec's start: rising zero crossings of the left channel.
        let left: Vec<f32> = out.iter().step_by(2).skip(4800).copied().collect();
        let rises = left
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count() as f64;
        let hz = rises * 48_000.0 / left.len() as f64;
        assert!((hz - 1000.0).abs() < 10.0, "{hz} Hz");
        assert!(MicEncoder::new(
            OpusParams {
                channels: 3,
                ..params
            },
            44_100
        )
        .is_err());
    }
}
