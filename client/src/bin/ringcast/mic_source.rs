//! Where `ringcast mic` takes its sound: a generated tone, a WAV file, raw PCM or the
//! client's sound input, as f32
//! frames at the guest's rate and channel count.

use std::f64::consts::TAU;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

use crate::mic_capture::Capture;

/// A source of interleaved f32 samples (-1.0..1.0) at the guest's rate and channels.
pub enum Source {
    /// A sine wave at `hz`, at half of full scale, on every channel.
    Tone {
        hz: f64,
        rate: u32,
        channels: u16,
        n: u64,
    },
    /// The client's sound input (ALSA), recording at the guest's rate and `channels`.
    Capture(Box<Capture>),
    /// Decoded samples, already at the guest's rate and `channels`.
    Samples {
        samples: Vec<f32>,
        channels: u16,
        at: usize,
    },
}

impl Source {
    /// A tone of `hz` for a guest recording at `rate` with `channels`.
    pub fn tone(hz: f64, rate: u32, channels: u16) -> anyhow::Result<Source> {
        if !(hz > 0.0 && hz < f64::from(rate) / 2.0) {
            bail!(
                "--tone {hz}: the guest records at {rate} Hz, so a tone must be above 0 and \
                 below {} Hz",
                rate / 2
            );
        }
        Ok(Source::Tone {
            hz,
            rate,
            channels,
            n: 0,
        })
    }

    /// A WAV file (integer or float samples) mapped to `channels`; its rate must be the
    /// guest's.
    pub fn wav(path: &Path, rate: u32, channels: u16) -> anyhow::Result<Source> {
        let mut r = hound::WavReader::open(path)
            .with_context(|| format!("cannot read the WAV file {}", path.display()))?;
        let spec = r.spec();
        if spec.sample_rate != rate {
            bail!(
                "{} is at {} Hz and the guest records at {rate} Hz: convert it first (sox {} \
                 -r {rate} out.wav)",
                path.display(),
                spec.sample_rate,
                path.display()
            );
        }
        let samples: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
            hound::SampleFormat::Int => {
                let scale = 2f32.powi(i32::from(spec.bits_per_sample) - 1);
                r.samples::<i32>()
                    .map(|s| s.map(|v| v as f32 / scale))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Source::Samples {
            samples: remap(&samples, spec.channels, channels),
            channels,
            at: 0,
        })
    }

    /// Raw interleaved s16 little-endian at the guest's rate and channels, from `path`
    /// (`-`: stdin).
    pub fn raw(path: &Path, channels: u16) -> anyhow::Result<Source> {
        let mut bytes = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut bytes)?;
        } else {
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        // Whole frames only: the guest's ring takes nothing else.
        let frame = 2 * usize::from(channels.max(1));
        let rest = bytes.len() % frame;
        if rest != 0 {
            eprintln!(
                "ringcast mic: the last {rest} bytes of {} are not a whole frame ({frame} bytes: s16 in {channels} channels) and are not sent",
                path.display()
            );
            bytes.truncate(bytes.len() - rest);
        }
        let samples = bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect();
        Ok(Source::Samples {
            samples,
            channels,
            at: 0,
        })
    }

    /// The next `frames` frames into `out` (cleared first); fewer at the end of a file,
    /// none when it is over.
    pub fn next(&mut self, frames: usize, out: &mut Vec<f32>) {
        out.clear();
        match self {
            Source::Tone {
                hz,
                rate,
                channels,
                n,
            } => {
                for _ in 0..frames {
                    let v = (0.5 * (TAU * *hz * *n as f64 / f64::from(*rate)).sin()) as f32;
                    out.extend(std::iter::repeat_n(v, usize::from(*channels)));
                    *n += 1;
                }
            }
            Source::Capture(c) => c.next(frames, out),
            Source::Samples {
                samples,
                channels,
                at,
            } => {
                let end = (*at + frames * usize::from(*channels)).min(samples.len());
                out.extend_from_slice(&samples[*at..end]);
                *at = end;
            }
        }
    }
}

/// Interleaved samples of `from` channels as `to` channels: mono is copied to every
/// channel, more channels are averaged down to mono first.
pub fn remap(samples: &[f32], from: u16, to: u16) -> Vec<f32> {
    if from == to {
        return samples.to_vec();
    }
    let from = usize::from(from.max(1));
    let to = usize::from(to);
    let mut out = Vec::with_capacity(samples.len() / from * to);
    for frame in samples.chunks_exact(from) {
        let mono = frame.iter().sum::<f32>() / from as f32;
        out.extend(std::iter::repeat_n(mono, to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_has_its_frequency_on_every_channel() {
        let mut t = Source::tone(1000.0, 48_000, 2).unwrap();
        let mut out = Vec::new();
        t.next(48_000, &mut out);
        assert_eq!(out.len(), 96_000);
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        assert_eq!(
            left,
            out.iter().skip(1).step_by(2).copied().collect::<Vec<_>>()
        );
        let rises = left
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!((999..=1001).contains(&rises), "{rises}");
        assert!(Source::tone(30_000.0, 48_000, 2).is_err());
    }

    #[test]
    fn raw_input_is_sent_in_whole_frames_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.raw");
        // Two stereo frames and half of a third.
        std::fs::write(&path, [1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6]).unwrap();
        let mut s = Source::raw(&path, 2).unwrap();
        let mut out = Vec::new();
        s.next(10, &mut out);
        assert_eq!(out.len(), 4, "{out:?}");
        s.next(10, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn channels_are_copied_up_and_averaged_down() {
        assert_eq!(remap(&[0.1, 0.2], 1, 2), [0.1, 0.1, 0.2, 0.2]);
        assert_eq!(remap(&[0.2, 0.4, -0.2, 0.0], 2, 1), [0.3_f32, -0.1]);
    }
}
