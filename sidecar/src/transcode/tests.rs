//! The encoder on its own: a tone at the device's rate comes out of libopus's decoder at
//! 48 kHz at the same frequency and length; silence is left out after the first frame of a
//! run and counted; a lost frame is rebuilt from the next packet's FEC.

use bytes::Bytes;
use shm_ring::handover::AudioFormat;
use testbed::tone::analyze_s16le;

use super::encoder::{OpusConfig, OpusEncoder};
use crate::device::AudioPeriod;

const S16: u16 = 3;

fn stereo(rate: u32) -> AudioFormat {
    AudioFormat {
        frequency: rate,
        channels: 2,
        sample_format: S16,
        big_endian: false,
    }
}

/// Periods of `frames` frames of a stereo s16 tone of `hz` (0: silence), stamped as a
/// guest at `rate` would stamp them.
fn periods(rate: u32, hz: f64, seconds: f64, frames: usize) -> Vec<AudioPeriod> {
    let total = (f64::from(rate) * seconds) as usize;
    let samples: Vec<i16> = (0..total)
        .map(|i| {
            (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin())
                as i16
        })
        .collect();
    samples
        .chunks(frames)
        .enumerate()
        .map(|(n, chunk)| AudioPeriod {
            seq: n as u64,
            timestamp_ns: 1_000_000_000 + (n * frames) as u64 * 1_000_000_000 / u64::from(rate),
            frames: chunk.len() as u32,
            pcm: Bytes::from(
                chunk
                    .iter()
                    .flat_map(|s| [s.to_le_bytes(), s.to_le_bytes()].concat())
                    .collect::<Vec<u8>>(),
            ),
            skipped_before: 0,
        })
        .collect()
}

fn encode(format: AudioFormat, input: &[AudioPeriod]) -> Vec<AudioPeriod> {
    let mut e = OpusEncoder::new(format, &OpusConfig::default()).unwrap();
    let mut out = Vec::new();
    for p in input {
        out.extend(e.push(p).unwrap());
    }
    out
}

/// Decodes frames in order (missing ones concealed), as s16le bytes.
fn decode(frames: &[AudioPeriod]) -> Vec<u8> {
    let mut d = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 5760 * 2];
    let mut next = frames.first().map_or(0, |f| f.seq);
    for f in frames {
        while next < f.seq {
            let n = d.decode(&[], &mut buf[..480 * 2], false).unwrap();
            pcm.extend(buf[..n * 2].iter().flat_map(|s| s.to_le_bytes()));
            next += 1;
        }
        let n = d.decode(&f.pcm, &mut buf, false).unwrap();
        pcm.extend(buf[..n * 2].iter().flat_map(|s| s.to_le_bytes()));
        next = f.seq + 1;
    }
    pcm
}

#[test]
fn a_tone_at_44100_hz_comes_out_at_48_khz_with_its_frequency_and_length() {
    let out = encode(stereo(44_100), &periods(44_100, 440.0, 2.0, 441));
    // 10 ms frames of 480 samples, numbered without holes, stamps from the guest's.
    assert!(out.iter().all(|f| f.frames == 480));
    assert!(out.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(out
        .windows(2)
        .all(|w| w[1].timestamp_ns > w[0].timestamp_ns));
    let step = out[101].timestamp_ns - out[100].timestamp_ns;
    assert!((9_900_000..=10_100_000).contains(&step), "{step}");
    // The resampler holds some input back: at most a few frames short of 2 s.
    assert!((195..=200).contains(&out.len()), "{} frames", out.len());
    let pcm = decode(&out);
    let tone = analyze_s16le(&pcm, 2, 48_000);
    assert!((tone.frequency_hz - 440.0).abs() < 2.0, "{tone:?}");
    assert!(tone.active_frames > 48_000 * 19 / 10, "{tone:?}");
    assert_eq!(tone.holes, 0, "{tone:?}");
    // The bitrate is the configured one, not PCM's 1.4 Mbit/s.
    let bits: usize = out.iter().map(|f| f.pcm.len() * 8).sum();
    assert!(bits < 2 * 100_000, "{bits} bits in 2 s");
}

#[test]
fn silence_is_sent_once_then_counted_in_the_next_frame() {
    let mut input = periods(48_000, 440.0, 0.5, 480);
    let silence = periods(48_000, 0.0, 1.0, 480);
    let tail = periods(48_000, 440.0, 0.5, 480);
    let n = input.len();
    input.extend(
        silence
            .into_iter()
            .chain(tail)
            .enumerate()
            .map(|(i, mut p)| {
                p.seq = (n + i) as u64;
                p.timestamp_ns = 1_000_000_000 + (n + i) as u64 * 10_000_000;
                p
            }),
    );
    let out = encode(stereo(48_000), &input);
    let left_out: u64 = out.iter().map(|f| f.skipped_before).sum();
    assert!(
        left_out > 50,
        "only {left_out} silent frames left out of 100"
    );
    // Every frame is either sent or counted: the numbers add up.
    let last = out.last().unwrap();
    assert_eq!(out.len() as u64 + left_out, last.seq + 1);
    for w in out.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1 + w[1].skipped_before);
    }
    // The tone after the silence is whole.
    let pcm = decode(&out[out.len() - 40..]);
    let tone = analyze_s16le(&pcm, 2, 48_000);
    assert!((tone.frequency_hz - 440.0).abs() < 2.0, "{tone:?}");
}

#[test]
fn a_lost_frame_is_rebuilt_from_the_next_packets_fec() {
    let out = encode(stereo(48_000), &periods(48_000, 440.0, 1.0, 480));
    let lost = 50;
    let reference = decode(&out);
    // The decoder as a client runs it: frames 0..lost, then frame `lost` from the FEC of
    // `lost + 1`, or concealed without it.
    let rebuilt = |fec: bool| {
        let mut d = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
        let mut buf = vec![0i16; 480 * 2];
        for f in &out[..lost] {
            d.decode(&f.pcm, &mut buf, false).unwrap();
        }
        let data: &[u8] = if fec { &out[lost + 1].pcm } else { &[] };
        let n = d.decode(data, &mut buf, fec).unwrap();
        assert_eq!(n, 480);
        buf
    };
    let original: Vec<i16> = reference[lost * 480 * 4..(lost + 1) * 480 * 4]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let error = |got: &[i16]| -> f64 {
        got.iter()
            .zip(&original)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum()
    };
    let signal: f64 = original.iter().map(|s| f64::from(*s).powi(2)).sum();
    let fec_snr = 10.0 * (signal / error(&rebuilt(true)).max(1.0)).log10();
    assert!(
        fec_snr > 10.0,
        "FEC recovered the frame at {fec_snr:.1} dB SNR"
    );
}

#[test]
fn what_opus_cannot_carry_is_refused_with_the_reason() {
    let cfg = OpusConfig::default();
    let six = AudioFormat {
        channels: 6,
        ..stereo(48_000)
    };
    assert_eq!(cfg.params_for(&six), None);
    assert!(OpusEncoder::new(six, &cfg)
        .unwrap_err()
        .contains("6 channels"));
    let odd = OpusConfig {
        frame_us: 7000,
        ..cfg
    };
    assert!(odd.check().unwrap_err().contains("7 ms"));
    let p = OpusConfig {
        frame_us: 2500,
        ..cfg
    }
    .params_for(&stereo(44_100))
    .unwrap();
    assert_eq!((p.channels, p.frame_samples, p.bitrate), (2, 120, 64_000));
}

/// `input` with periods `from..from + count` taken out, as the ring's producer (a jump in
/// `seq`) or the encoder's queue (also `skipped_before`) drops them.
fn drop_periods(
    input: &[AudioPeriod],
    from: usize,
    count: usize,
    counted: bool,
) -> Vec<AudioPeriod> {
    let mut out: Vec<AudioPeriod> = input[..from].to_vec();
    let mut next = input[from + count].clone();
    if counted {
        next.skipped_before = count as u64;
    }
    out.push(next);
    out.extend_from_slice(&input[from + count + 1..]);
    out
}

#[test]
fn lost_input_is_left_out_and_counted_not_joined() {
    // 2 s of 10 ms periods at 44.1 kHz; 100 ms of them lost, once by the ring (a jump in
    // `seq`), once by the encoder's queue (a jump and `skipped_before`).
    let whole = periods(44_100, 440.0, 2.0, 441);
    for counted in [false, true] {
        let input = drop_periods(&whole, 100, 10, counted);
        let mut e = OpusEncoder::new(stereo(44_100), &OpusConfig::default()).unwrap();
        let mut out = Vec::new();
        for p in &input {
            out.extend(e.push(p).unwrap());
        }
        // Ten 10 ms frames are left out, counted by the frame after the hole; the
        // numbers add up as if the input had been whole.
        let holes: Vec<&AudioPeriod> = out.iter().filter(|f| f.skipped_before > 0).collect();
        assert_eq!(holes.len(), 1, "counted={counted}");
        assert_eq!(holes[0].skipped_before, 10, "counted={counted}");
        assert_eq!(e.lost_input_frames(), 10);
        for w in out.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1 + w[1].skipped_before);
        }
        let whole_out = encode(stereo(44_100), &whole);
        assert_eq!(
            out.last().unwrap().seq,
            whole_out.last().unwrap().seq,
            "counted={counted}"
        );
        // After the hole, frames carry the stamps of their own input: frame n of the whole
        // stream and frame n here were stamped within a frame of each other.
        let after = holes[0].seq as usize + 5;
        let here = out.iter().find(|f| f.seq as usize == after).unwrap();
        let there = &whole_out[after];
        let diff = here.timestamp_ns.abs_diff(there.timestamp_ns);
        assert!(diff <= 10_000_000, "stamps {diff} ns apart");
    }
}
