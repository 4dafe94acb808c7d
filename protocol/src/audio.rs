//! Audio sample formats and the one PCM decoder: the numbers an
//! [`AudioFormat`](crate::codec::AudioFormat) carries in `sample_format`, what they mean,
//! and interleaved PCM bytes turned into samples.
//!
//! ```
//! use protocol::audio::{decode_pcm, Sample, SampleFormat};
//! let format = SampleFormat::from_wire(3).unwrap();
//! assert_eq!(format, SampleFormat::S16);
//! let samples: Vec<Sample> = decode_pcm(format, false, &[0x00, 0x80, 0xff, 0x7f]).collect();
//! assert_eq!(samples, [Sample::I16(i16::MIN), Sample::I16(i16::MAX)]);
//! ```

/// A PCM sample format, numbered as QEMU's audio numbers them: `QbpSampleFormat` in
/// qemu-patches/include/qemu/backend-plugin.h, which the QEMU patch pins to QEMU's own
/// `AudioFormat` at build time. These numbers are on the wire and in the shared-memory
/// handover; they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// Unsigned 8-bit, silence at 128.
    U8 = 0,
    /// Signed 8-bit.
    S8 = 1,
    /// Unsigned 16-bit, silence at 32768.
    U16 = 2,
    /// Signed 16-bit.
    S16 = 3,
    /// Unsigned 32-bit, silence at 2^31.
    U32 = 4,
    /// Signed 32-bit.
    S32 = 5,
    /// IEEE 754 single precision, -1.0 to 1.0.
    F32 = 6,
}

/// A `sample_format` number that is not a [`SampleFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown audio sample format {0} (known: 0 u8, 1 s8, 2 u16, 3 s16, 4 u32, 5 s32, 6 f32); \
     the device's QEMU may be newer than this ringcast"
)]
pub struct UnknownSampleFormat(pub u16);

impl SampleFormat {
    /// Every format, in the order of their numbers.
    pub const ALL: [SampleFormat; 7] = [
        SampleFormat::U8,
        SampleFormat::S8,
        SampleFormat::U16,
        SampleFormat::S16,
        SampleFormat::U32,
        SampleFormat::S32,
        SampleFormat::F32,
    ];

    /// The format a `sample_format` number names, or `None` for a number QEMU does not use.
    pub fn from_wire(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.to_wire() == n)
    }

    /// The number that names this format on the wire.
    pub const fn to_wire(self) -> u16 {
        self as u16
    }

    /// Bytes of one sample of one channel.
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            SampleFormat::U8 | SampleFormat::S8 => 1,
            SampleFormat::U16 | SampleFormat::S16 => 2,
            SampleFormat::U32 | SampleFormat::S32 | SampleFormat::F32 => 4,
        }
    }

    /// Whether samples are floating point (else integers).
    pub const fn is_float(self) -> bool {
        matches!(self, SampleFormat::F32)
    }

    /// Whether the byte order matters (more than one byte per sample).
    pub const fn has_byte_order(self) -> bool {
        self.bytes_per_sample() > 1
    }

    /// The short name scripts and tables show: `u8`, `s8`, `u16`, `s16`, `u32`, `s32`, `f32`.
    pub const fn name(self) -> &'static str {
        match self {
            SampleFormat::U8 => "u8",
            SampleFormat::S8 => "s8",
            SampleFormat::U16 => "u16",
            SampleFormat::S16 => "s16",
            SampleFormat::U32 => "u32",
            SampleFormat::S32 => "s32",
            SampleFormat::F32 => "f32",
        }
    }
}

impl TryFrom<u16> for SampleFormat {
    type Error = UnknownSampleFormat;

    fn try_from(n: u16) -> Result<Self, UnknownSampleFormat> {
        Self::from_wire(n).ok_or(UnknownSampleFormat(n))
    }
}

/// One decoded sample at its format's own width, signed: unsigned formats are moved to be
/// centred on zero (their top bit flipped), so silence is 0 in every variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// From [`SampleFormat::U8`] or [`SampleFormat::S8`].
    I8(i8),
    /// From [`SampleFormat::U16`] or [`SampleFormat::S16`].
    I16(i16),
    /// From [`SampleFormat::U32`] or [`SampleFormat::S32`].
    I32(i32),
    /// From [`SampleFormat::F32`].
    F32(f32),
}

impl Sample {
    /// The sample scaled to -1.0..1.0 (the integer's minimum is exactly -1.0); a float as it
    /// is.
    pub fn to_f32(self) -> f32 {
        match self {
            Sample::I8(v) => f32::from(v) / 128.0,
            Sample::I16(v) => f32::from(v) / 32768.0,
            Sample::I32(v) => v as f32 / 2_147_483_648.0,
            Sample::F32(v) => v,
        }
    }
}

/// Decodes interleaved PCM of `format` (big-endian when `big_endian`; one-byte formats
/// have no byte order) into samples, in order. Bytes after the last whole sample are
/// ignored: a period always holds whole frames, and a short tail is not worth a panic.
pub fn decode_pcm(
    format: SampleFormat,
    big_endian: bool,
    pcm: &[u8],
) -> impl Iterator<Item = Sample> + '_ {
    pcm.chunks_exact(format.bytes_per_sample())
        .map(move |bytes| decode_sample(format, big_endian, bytes))
}

/// One sample from exactly `format.bytes_per_sample()` bytes.
fn decode_sample(format: SampleFormat, big_endian: bool, bytes: &[u8]) -> Sample {
    let u16_of = |b: &[u8]| {
        let b = [b[0], b[1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_of = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    match format {
        SampleFormat::U8 => Sample::I8((bytes[0] ^ 0x80) as i8),
        SampleFormat::S8 => Sample::I8(bytes[0] as i8),
        SampleFormat::U16 => Sample::I16((u16_of(bytes) ^ 0x8000) as i16),
        SampleFormat::S16 => Sample::I16(u16_of(bytes) as i16),
        SampleFormat::U32 => Sample::I32((u32_of(bytes) ^ 0x8000_0000) as i32),
        SampleFormat::S32 => Sample::I32(u32_of(bytes) as i32),
        SampleFormat::F32 => Sample::F32(f32::from_bits(u32_of(bytes))),
    }
}

/// Encodes samples (-1.0..1.0, clamped) into interleaved PCM of `format` (big-endian when
/// `big_endian`), appended to `out`: the inverse of [`decode_pcm`].
pub fn encode_pcm(format: SampleFormat, big_endian: bool, samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * format.bytes_per_sample());
    for &s in samples {
        let s = f64::from(s.clamp(-1.0, 1.0));
        let int = |bits: i32| {
            let max = 2f64.powi(bits - 1);
            (s * max).round().clamp(-max, max - 1.0) as i64
        };
        let mut put = |le: &[u8]| {
            if big_endian {
                out.extend(le.iter().rev());
            } else {
                out.extend_from_slice(le);
            }
        };
        match format {
            SampleFormat::U8 => put(&[(int(8) + 128) as u8]),
            SampleFormat::S8 => put(&[int(8) as i8 as u8]),
            SampleFormat::U16 => put(&((int(16) + 32768) as u16).to_le_bytes()),
            SampleFormat::S16 => put(&(int(16) as i16).to_le_bytes()),
            SampleFormat::U32 => put(&((int(32) + (1 << 31)) as u32).to_le_bytes()),
            SampleFormat::S32 => put(&(int(32) as i32).to_le_bytes()),
            SampleFormat::F32 => put(&(s as f32).to_le_bytes()),
        }
    }
}

/// Bytes before the packet in a microphone `Input` frame under Opus: the packet's number.
pub const MIC_PACKET_HEADER: usize = 8;

/// Under Opus, one microphone `Input` frame carries one packet: its number (`u64`, little
/// endian; consecutive, so the receiver sees a packet that never came) and the packet.
pub fn mic_packet(seq: u64, packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(packet);
}

/// The number and the packet of a microphone `Input` frame under Opus, or why it is not
/// one.
pub fn split_mic_packet(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    if bytes.len() <= MIC_PACKET_HEADER {
        return Err(format!(
            "an Opus microphone frame of {} bytes: it needs an 8-byte number and a packet",
            bytes.len()
        ));
    }
    let (seq, packet) = bytes.split_at(MIC_PACKET_HEADER);
    let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
    Ok((seq, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_through_the_decoder_in_every_format() {
        let samples = [0.0f32, 0.5, -0.5, 0.999, -1.0, 1.5];
        for format in SampleFormat::ALL {
            for big_endian in [false, true] {
                let mut pcm = Vec::new();
                encode_pcm(format, big_endian, &samples, &mut pcm);
                assert_eq!(pcm.len(), samples.len() * format.bytes_per_sample());
                let back: Vec<f32> = decode_pcm(format, big_endian, &pcm)
                    .map(Sample::to_f32)
                    .collect();
                for (a, b) in samples.iter().zip(&back) {
                    let a = a.clamp(-1.0, 1.0);
                    assert!((a - b).abs() < 0.01, "{format:?} {big_endian}: {a} -> {b}");
                }
            }
        }
    }

    #[test]
    fn mic_packets_carry_their_number_and_short_frames_are_refused() {
        let mut out = Vec::new();
        mic_packet(7, &[1, 2, 3], &mut out);
        assert_eq!(split_mic_packet(&out), Ok((7, &[1u8, 2, 3][..])));
        assert!(split_mic_packet(&out[..8]).is_err());
        assert!(split_mic_packet(&[]).is_err());
    }

    fn decode(format: SampleFormat, big_endian: bool, pcm: &[u8]) -> Vec<Sample> {
        decode_pcm(format, big_endian, pcm).collect()
    }

    #[test]
    fn wire_numbers_are_qemus_and_every_other_number_is_refused() {
        let numbered: Vec<(u16, &str, usize)> = SampleFormat::ALL
            .iter()
            .map(|f| (f.to_wire(), f.name(), f.bytes_per_sample()))
            .collect();
        assert_eq!(
            numbered,
            [
                (0, "u8", 1),
                (1, "s8", 1),
                (2, "u16", 2),
                (3, "s16", 2),
                (4, "u32", 4),
                (5, "s32", 4),
                (6, "f32", 4),
            ]
        );
        for f in SampleFormat::ALL {
            assert_eq!(SampleFormat::from_wire(f.to_wire()), Some(f));
            assert_eq!(SampleFormat::try_from(f.to_wire()), Ok(f));
        }
        for n in [7, 8, 255, 0x8003, u16::MAX] {
            assert_eq!(SampleFormat::from_wire(n), None);
            let err = SampleFormat::try_from(n).unwrap_err();
            assert_eq!(err, UnknownSampleFormat(n));
            assert!(err.to_string().contains(&format!("format {n} ")), "{err}");
        }
        assert!(SampleFormat::F32.is_float());
        assert!(!SampleFormat::ALL[..6].iter().any(|f| f.is_float()));
    }

    #[test]
    fn eight_bit_formats_decode_centred_on_zero_and_ignore_byte_order() {
        let pcm = [0x00, 0x80, 0xff, 0x7f];
        for big_endian in [false, true] {
            assert_eq!(
                decode(SampleFormat::U8, big_endian, &pcm),
                [
                    Sample::I8(-128),
                    Sample::I8(0),
                    Sample::I8(127),
                    Sample::I8(-1)
                ]
            );
            assert_eq!(
                decode(SampleFormat::S8, big_endian, &pcm),
                [
                    Sample::I8(0),
                    Sample::I8(-128),
                    Sample::I8(-1),
                    Sample::I8(127)
                ]
            );
        }
        assert!(!SampleFormat::U8.has_byte_order() && !SampleFormat::S8.has_byte_order());
    }

    #[test]
    fn sixteen_bit_formats_decode_in_either_byte_order() {
        let le = [0x00, 0x00, 0x00, 0x80, 0x34, 0x12, 0xff, 0xff];
        let be = [0x00, 0x00, 0x80, 0x00, 0x12, 0x34, 0xff, 0xff];
        let u16_samples = [
            Sample::I16(i16::MIN),
            Sample::I16(0),
            Sample::I16(-0x6dcc), // 0x1234 - 0x8000
            Sample::I16(i16::MAX),
        ];
        let s16_samples = [
            Sample::I16(0),
            Sample::I16(i16::MIN),
            Sample::I16(0x1234),
            Sample::I16(-1),
        ];
        assert_eq!(decode(SampleFormat::U16, false, &le), u16_samples);
        assert_eq!(decode(SampleFormat::U16, true, &be), u16_samples);
        assert_eq!(decode(SampleFormat::S16, false, &le), s16_samples);
        assert_eq!(decode(SampleFormat::S16, true, &be), s16_samples);
    }

    #[test]
    fn thirty_two_bit_integer_formats_decode_in_either_byte_order() {
        let le = [0, 0, 0, 0x80, 0x78, 0x56, 0x34, 0x12];
        let be = [0x80, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        // 0x1234_5678 - 2^31 = -0x6dcb_a988
        let u32_samples = [Sample::I32(0), Sample::I32(-0x6dcb_a988)];
        let s32_samples = [Sample::I32(i32::MIN), Sample::I32(0x1234_5678)];
        assert_eq!(decode(SampleFormat::U32, false, &le), u32_samples);
        assert_eq!(decode(SampleFormat::U32, true, &be), u32_samples);
        assert_eq!(decode(SampleFormat::S32, false, &le), s32_samples);
        assert_eq!(decode(SampleFormat::S32, true, &be), s32_samples);
    }

    #[test]
    fn float_format_decodes_in_either_byte_order() {
        let values = [0.5f32, -1.0, 0.0];
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let samples: Vec<Sample> = values.iter().map(|&v| Sample::F32(v)).collect();
        assert_eq!(decode(SampleFormat::F32, false, &le), samples);
        assert_eq!(decode(SampleFormat::F32, true, &be), samples);
    }

    #[test]
    fn a_partial_trailing_sample_is_ignored_not_a_panic() {
        for f in SampleFormat::ALL {
            let pcm = vec![0u8; f.bytes_per_sample() * 2 + f.bytes_per_sample() - 1];
            assert_eq!(decode_pcm(f, false, &pcm).count(), 2, "{f:?}");
            assert_eq!(decode_pcm(f, true, &pcm[..0]).count(), 0, "{f:?}");
        }
    }

    #[test]
    fn samples_scale_to_minus_one_to_one() {
        assert_eq!(Sample::I8(i8::MIN).to_f32(), -1.0);
        assert_eq!(Sample::I8(64).to_f32(), 0.5);
        assert_eq!(Sample::I16(i16::MIN).to_f32(), -1.0);
        assert_eq!(Sample::I16(16384).to_f32(), 0.5);
        assert_eq!(Sample::I32(i32::MIN).to_f32(), -1.0);
        assert_eq!(Sample::I32(1 << 30).to_f32(), 0.5);
        assert_eq!(Sample::F32(0.25).to_f32(), 0.25);
        for f in SampleFormat::ALL {
            let silence: Vec<u8> = match f {
                SampleFormat::U8 => vec![0x80],
                SampleFormat::U16 => vec![0x00, 0x80],
                SampleFormat::U32 => vec![0, 0, 0, 0x80],
                _ => vec![0; f.bytes_per_sample()],
            };
            let s: Vec<f32> = decode_pcm(f, false, &silence).map(Sample::to_f32).collect();
            assert_eq!(s, [0.0], "{f:?}");
        }
    }
}
