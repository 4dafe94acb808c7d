//! The frame buffer fed `Bytes`: whole frames sliced without a copy, `Data` frames handed out
//! in pieces, and the same errors as the whole-frame decoder.

use proptest::prelude::*;

use super::*;

fn data(offset: u64, bytes: &[u8]) -> Frame {
    Frame::Data {
        offset,
        bytes: Bytes::copy_from_slice(bytes),
    }
}

/// A `Data` frame as a later version might send it: `extra` bytes after the data.
fn data_with_trailer(offset: u64, bytes: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut v = vec![ty::DATA];
    v.extend_from_slice(&((12 + bytes.len() + extra.len()) as u32).to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    v.extend_from_slice(bytes);
    v.extend_from_slice(extra);
    v
}

fn drain(fb: &mut FrameBuffer) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = fb.next_frame().unwrap() {
        out.push(f);
    }
    out
}

/// Checks that `got` (pieces) is `want` (whole frames): each `Data` frame's bytes in
/// non-empty pieces at contiguous offsets, every other frame as it was.
fn assert_pieces_of(got: &[Frame], want: &[Frame]) {
    let mut it = got.iter();
    for w in want {
        match w {
            Frame::Data { offset, bytes } if !bytes.is_empty() => {
                let mut have = Vec::new();
                while have.len() < bytes.len() {
                    match it.next() {
                        Some(Frame::Data {
                            offset: o,
                            bytes: b,
                        }) => {
                            assert!(!b.is_empty(), "an empty piece");
                            assert_eq!(*o, offset + have.len() as u64, "a piece out of place");
                            have.extend_from_slice(b);
                        }
                        other => panic!("expected a piece of {w:?}, got {other:?}"),
                    }
                }
                assert_eq!(&have[..], &bytes[..]);
            }
            _ => assert_eq!(it.next(), Some(w)),
        }
    }
    assert_eq!(it.next(), None);
}

fn frames() -> impl Strategy<Value = Vec<Frame>> {
    let one = prop_oneof![
        4 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..3000))
            .prop_map(|(o, b)| data(u64::from(o), &b)),
        1 => any::<u64>().prop_map(|offset| Frame::Consumed { offset }),
        1 => (any::<u32>(), 1u64..1000).prop_map(|(o, len)| Frame::Gap {
            offset: u64::from(o),
            len,
            reason: GapReason::Lost,
        }),
        1 => Just(Frame::Detach),
    ];
    proptest::collection::vec(one, 1..8)
}

proptest! {
    #[test]
    fn data_frames_come_out_in_pieces_wherever_the_bytes_are_cut(
        fs in frames(),
        cuts in proptest::collection::vec(1usize..5000, 1..40),
    ) {
        let mut wire = Vec::new();
        for f in &fs {
            f.encode(&mut wire).unwrap();
        }
        let wire = Bytes::from(wire);
        let (mut split, mut whole) = (FrameBuffer::new(), FrameBuffer::new());
        split.split_data();
        let (mut got, mut got_whole) = (Vec::new(), Vec::new());
        let mut at = 0;
        for c in cuts.iter().cycle() {
            if at == wire.len() {
                break;
            }
            let end = (at + c).min(wire.len());
            split.push_bytes(wire.slice(at..end));
            whole.push_bytes(wire.slice(at..end));
            got.extend(drain(&mut split));
            got_whole.extend(drain(&mut whole));
            at = end;
        }
        assert_pieces_of(&got, &fs);
        prop_assert_eq!(got_whole, fs);
        prop_assert!(split.at_boundary() && whole.at_boundary());
    }
}

#[test]
fn pieces_and_whole_frames_are_slices_of_what_was_received() {
    let mut wire = Vec::new();
    data(7, &[5u8; 4000]).encode(&mut wire).unwrap();
    data(4007, &[6u8; 100]).encode(&mut wire).unwrap();
    let wire = Bytes::from(wire);
    let range = wire.as_ptr_range();
    let inside = |b: &Bytes| range.contains(&b.as_ptr());
    for split in [true, false] {
        let mut fb = FrameBuffer::new();
        if split {
            fb.split_data();
        }
        fb.push_bytes(wire.clone());
        let out = drain(&mut fb);
        assert_eq!(out.len(), 2);
        for f in &out {
            let Frame::Data { bytes, .. } = f else {
                panic!("{f:?}")
            };
            assert!(inside(bytes), "copied (split: {split})");
        }
    }
}

#[test]
fn a_data_frame_is_handed_out_before_all_of_it_has_arrived() {
    let mut wire = Vec::new();
    data(100, &[1u8; 1000]).encode(&mut wire).unwrap();
    let mut fb = FrameBuffer::new();
    fb.split_data();
    fb.push(&wire[..DATA_HEADER_LEN + 300]);
    assert_eq!(drain(&mut fb), vec![data(100, &[1u8; 300])]);
    assert!(!fb.at_boundary(), "in the middle of a frame");
    fb.push(&wire[DATA_HEADER_LEN + 300..]);
    assert_eq!(drain(&mut fb), vec![data(400, &[1u8; 700])]);
    assert!(fb.at_boundary());
}

#[test]
fn fields_after_the_data_are_skipped_as_the_whole_decoder_ignores_them() {
    let mut wire = data_with_trailer(9, b"hello", b"later");
    data(14, b"!").encode(&mut wire).unwrap();
    for split in [true, false] {
        let mut fb = FrameBuffer::new();
        if split {
            fb.split_data();
        }
        let mut out = Vec::new();
        for b in wire.chunks(3) {
            fb.push(b);
            out.extend(drain(&mut fb));
        }
        assert_pieces_of(&out, &[data(9, b"hello"), data(14, b"!")]);
        assert!(fb.at_boundary());
    }
    // An empty Data frame with a trailer.
    let mut fb = FrameBuffer::new();
    fb.split_data();
    fb.push(&data_with_trailer(3, b"", b"xy"));
    assert_eq!(drain(&mut fb), vec![data(3, b"")]);
    assert!(fb.at_boundary());
}

#[test]
fn split_data_refuses_what_the_whole_decoder_refuses() {
    let mut fb = FrameBuffer::new();
    fb.split_data();
    // A data count larger than the frame.
    let mut bad = data_with_trailer(0, b"abc", b"");
    bad[16] = 4;
    fb.push(&bad);
    assert_eq!(fb.next_frame(), Err(DecodeError::UnexpectedEnd));
    assert_eq!(Frame::decode(&bad), Err(DecodeError::UnexpectedEnd));
    // Bytes past offset 2^64.
    let mut fb = FrameBuffer::new();
    fb.split_data();
    fb.push(&data_with_trailer(u64::MAX - 1, b"abc", b""));
    assert_eq!(
        fb.next_frame(),
        Err(DecodeError::InvalidValue("data offset"))
    );
    // Too large, before the payload arrives.
    let mut fb = FrameBuffer::with_max_payload(1000);
    fb.split_data();
    fb.push(&data_with_trailer(0, &[0; 2000], b"")[..DATA_HEADER_LEN]);
    assert_eq!(fb.next_frame(), Err(DecodeError::FrameTooLarge(2012)));
    // An unknown type, before its payload arrives.
    let mut fb = FrameBuffer::new();
    fb.push(&[0xff, 0, 0, 0, 9]);
    assert_eq!(fb.next_frame(), Err(DecodeError::UnknownFrameType(0xff)));
}
