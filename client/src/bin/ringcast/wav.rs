//! PCM samples into a WAV file.

use std::io::{Seek, Write};

use anyhow::Context;

/// Writes `pcm` of format `f` to `w` as the WAV's samples.
pub fn write_wav_samples<W: Write + Seek>(
    w: &mut hound::WavWriter<W>,
    f: &client::AudioFormat,
    pcm: &[u8],
) -> anyhow::Result<()> {
    let be = f.big_endian;
    match f.sample_format {
        0 => pcm
            .iter()
            .try_for_each(|&b| w.write_sample((b as i16 - 128) as i8)),
        1 => pcm.iter().try_for_each(|&b| w.write_sample(b as i8)),
        2 | 3 => pcm.chunks_exact(2).try_for_each(|c| {
            let v = if be {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            };
            let v = if f.sample_format == 2 {
                (v ^ 0x8000) as i16
            } else {
                v as i16
            };
            w.write_sample(v)
        }),
        4 | 5 => pcm.chunks_exact(4).try_for_each(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            let v = if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            };
            let v = if f.sample_format == 4 {
                (v ^ 0x8000_0000) as i32
            } else {
                v as i32
            };
            w.write_sample(v)
        }),
        _ => pcm.chunks_exact(4).try_for_each(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            w.write_sample(if be {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            })
        }),
    }
    .context("cannot write the WAV file")
}
