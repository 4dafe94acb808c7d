//! `ringcast play --wav`: PCM samples into a WAV file of the device's own sample format.

use std::path::Path;

use anyhow::Context;
use protocol::audio::{decode_pcm, Sample, SampleFormat};

use crate::play::PcmSink;

/// A sink that writes PCM of `format` (with `sample`, its sample format) to a new WAV file
/// at `path`. The writer completes the WAV header when the sink is dropped.
pub fn wav_sink(
    path: &Path,
    format: &client::AudioFormat,
    sample: SampleFormat,
) -> anyhow::Result<PcmSink> {
    let spec = hound::WavSpec {
        channels: format.channels,
        sample_rate: format.rate,
        bits_per_sample: (sample.bytes_per_sample() * 8) as u16,
        sample_format: if sample.is_float() {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let big_endian = format.big_endian;
    Ok(Box::new(move |pcm: &[u8]| {
        decode_pcm(sample, big_endian, pcm)
            .try_for_each(|s| match s {
                Sample::I8(v) => w.write_sample(v),
                Sample::I16(v) => w.write_sample(v),
                Sample::I32(v) => w.write_sample(v),
                Sample::F32(v) => w.write_sample(v),
            })
            .context("cannot write the WAV file")
    }))
}
