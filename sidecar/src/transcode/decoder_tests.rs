//! The microphone's decoder on its own: a tone encoded by libopus at 48 kHz comes out at
//! the guest's rate at the same frequency and length; a lost packet is rebuilt from the
//! next one's FEC and the ones before it concealed, so the length holds; late packets and
//! long holes are counted, not played; a packet that is not Opus is a clear error.

use protocol::codec::{OpusParams, OPUS_RATE};
use shm_ring::handover::AudioFormat;
use testbed::tone::analyze_s16le;

use super::{MicDecoder, MAX_FILL};

const S16: u16 = 3;

fn format(rate: u32, channels: u16) -> AudioFormat {
    AudioFormat {
        frequency: rate,
        channels,
        sample_format: S16,
        big_endian: false,
    }
}

fn params(channels: u16) -> OpusParams {
    OpusParams {
        channels,
        frame_samples: 480,
        bitrate: 64_000,
    }
}

/// `seconds` of a tone of `hz` as 10 ms Opus packets (FEC on, planned for 10% loss), as
/// `ringcast mic` encodes them.
fn packets(hz: f64, seconds: f64, channels: u16) -> Vec<Vec<u8>> {
    let ch = if channels == 1 {
        opus::Channels::Mono
    } else {
        opus::Channels::Stereo
    };
    let mut e = opus::Encoder::new(OPUS_RATE, ch, opus::Application::Audio).unwrap();
    e.set_inband_fec(true).unwrap();
    e.set_packet_loss_perc(10).unwrap();
    let frames = (seconds * 100.0) as usize;
    (0..frames)
        .map(|f| {
            let pcm: Vec<f32> = (0..480)
                .flat_map(|i| {
                    let n = (f * 480 + i) as f64;
                    let v = (0.5 * (std::f64::consts::TAU * hz * n / 48_000.0).sin()) as f32;
                    std::iter::repeat_n(v, usize::from(channels))
                })
                .collect();
            e.encode_vec_float(&pcm, 4000).unwrap()
        })
        .collect()
}

/// Decodes the packets whose index `keep` accepts (numbered by their index), as s16le.
fn decode(
    rate: u32,
    channels: u16,
    packets: &[Vec<u8>],
    keep: impl Fn(usize) -> bool,
) -> (Vec<u8>, MicDecoder) {
    let mut d = MicDecoder::new(format(rate, channels), params(channels)).unwrap();
    let (mut all, mut out) = (Vec::new(), Vec::new());
    for (i, p) in packets.iter().enumerate().filter(|(i, _)| keep(*i)) {
        d.push(i as u64, p, &mut out).unwrap();
        all.extend_from_slice(&out);
    }
    (all, d)
}

#[test]
fn a_tone_comes_out_at_the_guests_rate_at_its_frequency_and_length() {
    for (rate, channels) in [(44_100, 2), (48_000, 2), (22_050, 1)] {
        let p = packets(1000.0, 2.0, channels);
        let (pcm, d) = decode(rate, channels, &p, |_| true);
        let frames = pcm.len() / (2 * usize::from(channels));
        let expected = 2 * rate as usize;
        // The resampler holds back less than one 10 ms chunk.
        assert!(
            frames <= expected && frames + rate as usize / 50 >= expected,
            "{rate} Hz: {frames} frames"
        );
        let r = analyze_s16le(&pcm, usize::from(channels), rate);
        assert!(
            (r.frequency_hz - 1000.0).abs() < 5.0,
            "{rate} Hz: {}",
            r.frequency_hz
        );
        assert_eq!(d.stats().decoded, 200);
        assert_eq!(d.stats().recovered + d.stats().concealed, 0);
    }
}

#[test]
fn lost_packets_are_rebuilt_from_fec_and_concealed_so_the_length_holds() {
    let p = packets(1000.0, 2.0, 2);
    let (whole, _) = decode(44_100, 2, &p, |_| true);
    // One lost packet (FEC), then a burst of four (three concealed, the last from FEC).
    let (pcm, d) = decode(44_100, 2, &p, |i| i != 50 && !(100..104).contains(&i));
    assert_eq!(pcm.len(), whole.len());
    let s = d.stats();
    assert_eq!((s.decoded, s.recovered, s.concealed), (195, 2, 3));
    let r = analyze_s16le(&pcm, 2, 44_100);
    assert!((r.frequency_hz - 1000.0).abs() < 10.0, "{}", r.frequency_hz);
}

#[test]
fn late_packets_are_dropped_and_a_long_hole_is_filled_only_up_to_its_bound() {
    let p = packets(440.0, 1.0, 1);
    let mut d = MicDecoder::new(format(48_000, 1), params(1)).unwrap();
    let mut out = Vec::new();
    d.push(0, &p[0], &mut out).unwrap();
    assert_eq!(out.len(), 480 * 2);
    d.push(1, &p[1], &mut out).unwrap();
    d.push(0, &p[0], &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(d.stats().late, 1);
    // A hostile jump: bounded sound, the rest counted.
    d.push(u64::MAX - 1, &p[2], &mut out).unwrap();
    assert_eq!(out.len(), (MAX_FILL as usize + 1) * 480 * 2);
    let s = d.stats();
    assert_eq!(s.unfilled, u64::MAX - 1 - 2 - MAX_FILL);
    assert_eq!((s.recovered, s.concealed), (1, MAX_FILL - 1));
}

#[test]
fn what_is_not_opus_or_does_not_fit_the_voice_is_a_clear_error() {
    let mut d = MicDecoder::new(format(48_000, 2), params(2)).unwrap();
    let mut out = Vec::new();
    // A TOC byte announcing a code-3 packet with no frame count.
    let e = d.push(0, &[0x03], &mut out).unwrap_err();
    assert!(e.contains("cannot decode"), "{e}");
    let e = MicDecoder::new(format(48_000, 2), params(1)).unwrap_err();
    assert!(e.contains("channels"), "{e}");
    let bad = AudioFormat {
        sample_format: 99,
        ..format(48_000, 2)
    };
    assert!(MicDecoder::new(bad, params(2)).is_err());
}
