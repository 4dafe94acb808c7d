//! Properties of the wire codec: round trips, truncation and corruption never panic, limits
//! hold before allocation, and the fuzz body over its seed corpus and random inputs.

use bytes::Bytes;
use proptest::prelude::*;
use protocol::codec::*;
use protocol::ErrorCode;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9./_-]{1,40}"
}

fn audio_format() -> impl Strategy<Value = Option<AudioFormat>> {
    proptest::option::of(
        (any::<u32>(), any::<u16>(), 0u16..7, any::<bool>()).prop_map(
            |(rate, channels, sample_format, big_endian)| AudioFormat {
                rate,
                channels,
                sample_format,
                big_endian,
            },
        ),
    )
}

fn codecs() -> impl Strategy<Value = Vec<AudioCodec>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![AudioCodec::Opus]),
        Just(vec![AudioCodec::Opus, AudioCodec::Pcm]),
        Just(vec![AudioCodec::Pcm, AudioCodec::Opus]),
    ]
}

fn encoding() -> impl Strategy<Value = AudioEncoding> {
    prop_oneof![
        Just(AudioEncoding::Pcm),
        (
            1u16..3,
            prop::sample::select(vec![120u32, 240, 480, 960, 1920, 2880]),
            any::<u32>()
        )
            .prop_map(|(channels, frame_samples, bitrate)| {
                AudioEncoding::Opus(OpusParams {
                    channels,
                    frame_samples,
                    bitrate,
                })
            }),
    ]
}

fn entry() -> impl Strategy<Value = DeviceEntry> {
    (
        name(),
        name(),
        any::<bool>(),
        0u8..3,
        audio_format(),
        any::<[u64; 4]>(),
        any::<u32>(),
    )
        .prop_map(|(vm, device, audio, st, fmt, n, subscribers)| DeviceEntry {
            vm,
            device,
            kind: if audio {
                DeviceKind::Audio
            } else {
                DeviceKind::Console
            },
            state: [
                DeviceState::Attached,
                DeviceState::Gone,
                DeviceState::Poisoned,
            ][st as usize],
            audio: fmt,
            bytes: n[0],
            periods: n[1],
            journal_start: n[2],
            journal_end: n[3],
            subscribers,
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), ".{0,30}").prop_map(|(a, b, s)| Frame::Hello {
            min_version: a,
            max_version: b,
            software: s
        }),
        (any::<u16>(), ".{0,30}").prop_map(|(v, s)| Frame::Welcome {
            version: v,
            software: s
        }),
        any::<u32>().prop_map(|request| Frame::ListDevices { request }),
        any::<u32>().prop_map(|request| Frame::GetStats { request }),
        (any::<u32>(), proptest::collection::vec(entry(), 0..5))
            .prop_map(|(request, devices)| Frame::Devices { request, devices }),
        (
            any::<u32>(),
            proptest::collection::vec(
                (entry(), any::<[u64; 10]>(), proptest::option::of(".{0,20}")),
                0..4
            )
        )
            .prop_map(|(request, v)| Frame::Stats {
                request,
                devices: v
                    .into_iter()
                    .map(|(device, n, poisoned)| StatsEntry {
                        device,
                        dropped_flight_recorder: n[0],
                        dropped_audio_overflow: n[1],
                        subscriber_gap_bytes: n[2],
                        subscriber_dropped_periods: n[3],
                        ring_fill: n[4],
                        ring_capacity: n[5],
                        input_bytes: n[6],
                        registrations: n[7],
                        spool_errors: n[8],
                        dropped_no_spool: n[9],
                        poisoned,
                    })
                    .collect()
            }),
        (
            name(),
            name(),
            0u8..3,
            0u8..3,
            any::<u64>(),
            any::<bool>(),
            codecs()
        )
            .prop_map(|(vm, device, m, s, n, datagrams, codecs)| Frame::Attach {
                vm,
                device,
                mode: [Mode::Read, Mode::Write, Mode::Spy][m as usize],
                start: match s {
                    0 => StartAt::Offset(n),
                    1 => StartAt::TailBytes(n),
                    _ => StartAt::Now,
                },
                datagrams,
                codecs
            }),
        (any::<bool>(), any::<u64>(), audio_format(), encoding()).prop_map(
            |(a, offset, audio, encoding)| {
                Frame::Attached {
                    kind: if a {
                        DeviceKind::Audio
                    } else {
                        DeviceKind::Console
                    },
                    offset,
                    audio,
                    encoding,
                }
            }
        ),
        (any::<u64>(), bytes(3000)).prop_map(|(offset, bytes)| Frame::Data { offset, bytes }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(offset, len, r)| Frame::Gap {
            offset,
            len,
            reason: if r {
                GapReason::Lost
            } else {
                GapReason::Retention
            }
        }),
        (any::<[u64; 3]>(), any::<u32>(), bytes(2000)).prop_map(|(n, frames, pcm)| {
            Frame::Audio(AudioData {
                seq: n[0],
                timestamp_ns: n[1],
                frames,
                skipped_before: n[2],
                pcm,
            })
        }),
        bytes(500).prop_map(|bytes| Frame::Input { bytes }),
        any::<u64>().prop_map(|offset| Frame::Consumed { offset }),
        Just(Frame::Detach),
        (any::<u32>(), any::<u16>(), ".{0,50}").prop_map(|(request, code, message)| {
            Frame::Error {
                request,
                code,
                message,
            }
        }),
    ]
}

/// `f` as a server older than the extra stats counters reports it: those counters 0.
fn without_extra_counters(f: &Frame) -> Frame {
    let mut f = f.clone();
    if let Frame::Stats { devices, .. } = &mut f {
        for d in devices {
            d.dropped_no_spool = 0;
        }
    }
    f
}

proptest! {
    #[test]
    fn every_frame_decodes_to_itself_after_encoding(f in frame()) {
        let b = f.to_bytes().unwrap();
        let (g, used) = Frame::decode(&b).unwrap().unwrap();
        prop_assert_eq!(used, b.len());
        prop_assert_eq!(g, f);
    }

    #[test]
    fn every_truncation_asks_for_more_bytes_and_every_short_payload_is_an_error(f in frame()) {
        let b = f.to_bytes().unwrap();
        for cut in 0..b.len() {
            // The stream view: a partial frame is "need more", never a panic or a frame.
            prop_assert_eq!(Frame::decode(&b[..cut]), Ok(None));
        }
        // The payload view: removing bytes from the end of a payload is an error, since
        // every known field is required; except a payload cut right before the fields a
        // later version appended: a Stats payload after its entries (a server older than
        // the extra counters), an Attach before its codecs (a client older than codecs:
        // PCM only), an Attached before its encoding (PCM).
        let payload = &b[HEADER_LEN..];
        let older = match &f {
            Frame::Stats { devices, .. } => {
                Some((payload.len() - 1 - 8 * devices.len(), without_extra_counters(&f)))
            }
            Frame::Attach { codecs, .. } if !codecs.is_empty() => {
                let mut g = f.clone();
                if let Frame::Attach { codecs, .. } = &mut g {
                    codecs.clear();
                }
                Some((payload.len() - 1 - codecs.len(), g))
            }
            Frame::Attached { encoding: AudioEncoding::Opus(_), .. } => {
                let mut g = f.clone();
                if let Frame::Attached { encoding, .. } = &mut g {
                    *encoding = AudioEncoding::Pcm;
                }
                Some((payload.len() - 11, g))
            }
            _ => None,
        };
        for cut in 0..payload.len() {
            let r = Frame::decode_payload(b[0], &payload[..cut]);
            if let Some((_, g)) = older.as_ref().filter(|(at, _)| *at == cut) {
                prop_assert_eq!(r, Ok(g.clone()));
            } else {
                prop_assert!(r.is_err());
            }
        }
    }

    #[test]
    fn corrupted_frames_never_panic(f in frame(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut b = f.to_bytes().unwrap();
        for (i, x) in flips {
            let n = b.len();
            b[i % n] ^= x | 1;
        }
        decodes_and_round_trips(&b);
    }

    #[test]
    fn frames_split_anywhere_come_out_of_the_frame_buffer_whole(
        fs in proptest::collection::vec(frame(), 1..6),
        split in 1usize..200,
    ) {
        let mut wire = Vec::new();
        for f in &fs {
            f.encode(&mut wire).unwrap();
        }
        let mut fb = FrameBuffer::new();
        let mut out = Vec::new();
        for piece in wire.chunks(split) {
            fb.push(piece);
            while let Some(f) = fb.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, fs);
        prop_assert_eq!(fb.pending(), 0);
    }

    #[test]
    fn audio_datagrams_round_trip(id in any::<u64>(), seq in any::<u64>(), pcm in bytes(1200)) {
        let a = AudioData { seq, timestamp_ns: 7, frames: 3, skipped_before: 0, pcm };
        let d = encode_datagram(id, &a).unwrap();
        prop_assert_eq!(decode_datagram(&d), Ok((id, a)));
        for cut in 0..d.len() {
            prop_assert!(decode_datagram(&d[..cut]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        decodes_and_round_trips(&data);
    }
}

#[test]
fn an_oversized_length_is_refused_from_the_header_alone() {
    let mut b = vec![0x45];
    b.extend_from_slice(&(MAX_FRAME_PAYLOAD + 1).to_be_bytes());
    assert_eq!(
        Frame::decode(&b),
        Err(DecodeError::FrameTooLarge(MAX_FRAME_PAYLOAD + 1))
    );
    assert_eq!(
        DecodeError::FrameTooLarge(0).code(),
        ErrorCode::FrameTooLarge
    );
}

#[test]
fn an_unknown_frame_type_is_refused_with_a_clear_error() {
    let e = Frame::decode(&[0x99, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(e, DecodeError::UnknownFrameType(0x99));
    assert_eq!(e.to_string(), "unknown frame type 0x99");
    assert_eq!(e.code(), ErrorCode::UnknownFrame);
}

#[test]
fn fields_appended_by_a_later_version_are_ignored() {
    let f = Frame::Hello {
        min_version: 1,
        max_version: 3,
        software: "future".into(),
    };
    let mut b = f.to_bytes().unwrap();
    b.extend_from_slice(b"new field");
    let len = (b.len() - HEADER_LEN) as u32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Frame::decode(&b).unwrap().unwrap().0, f);
}

fn stats_frame(dropped_no_spool: [u64; 2]) -> Frame {
    let entry = |device: &str, dropped_no_spool| StatsEntry {
        device: DeviceEntry {
            vm: "vm".into(),
            device: device.into(),
            kind: DeviceKind::Console,
            state: DeviceState::Attached,
            audio: None,
            bytes: 1,
            periods: 0,
            journal_start: 0,
            journal_end: 1,
            subscribers: 0,
        },
        dropped_flight_recorder: 2,
        dropped_audio_overflow: 0,
        subscriber_gap_bytes: 3,
        subscriber_dropped_periods: 0,
        ring_fill: 4,
        ring_capacity: 8,
        input_bytes: 5,
        registrations: 1,
        spool_errors: 6,
        dropped_no_spool,
        poisoned: None,
    };
    Frame::Stats {
        request: 9,
        devices: vec![
            entry("a", dropped_no_spool[0]),
            entry("b", dropped_no_spool[1]),
        ],
    }
}

fn with_payload(t: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![t];
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

#[test]
fn stats_from_an_older_server_decode_with_the_extra_counters_zero() {
    let f = stats_frame([77, 88]);
    let b = f.to_bytes().unwrap();
    // The older encoding: the same entries, nothing after them.
    let old = &b[HEADER_LEN..b.len() - 1 - 2 * 8];
    let (g, _) = Frame::decode(&with_payload(b[0], old)).unwrap().unwrap();
    assert_eq!(g, stats_frame([0, 0]));
    // What an older client decodes from the new encoding: the entries it knows, the
    // extra counters ignored as appended fields (the new payload starts with the old).
    assert!(b[HEADER_LEN..].starts_with(old));
}

#[test]
fn stats_extra_counters_a_later_version_adds_are_skipped() {
    let f = stats_frame([77, 88]);
    let b = f.to_bytes().unwrap();
    let mut payload = b[HEADER_LEN..b.len() - 1 - 2 * 8].to_vec();
    // Three extra counters per entry: this version knows the first.
    payload.push(3);
    for v in [77u64, 1, 2, 88, 3, 4] {
        payload.extend_from_slice(&v.to_be_bytes());
    }
    let (g, _) = Frame::decode(&with_payload(b[0], &payload))
        .unwrap()
        .unwrap();
    assert_eq!(g, f);
    // Promised counters that are missing are an error, not zeros.
    payload.truncate(payload.len() - 8);
    assert_eq!(
        Frame::decode(&with_payload(b[0], &payload)),
        Err(DecodeError::UnexpectedEnd)
    );
}

#[test]
fn a_device_count_larger_than_the_payload_is_refused_before_allocating() {
    let mut b = vec![0x42];
    let payload = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(&payload);
    assert_eq!(
        Frame::decode(&b),
        Err(DecodeError::FieldTooLong("device list"))
    );
}

/// Decoding arbitrary bytes never panics, and whatever decodes encodes back to the same
/// frame (the fuzz target `wire_decode` checks more, over its corpus).
fn decodes_and_round_trips(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest) {
        let bytes = frame.to_bytes().expect("a decoded frame re-encodes");
        assert_eq!(Frame::decode(&bytes), Ok(Some((frame, bytes.len()))));
        rest = &rest[used..];
    }
}
