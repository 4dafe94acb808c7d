//! Codec negotiation of audio attachments: the fields on the wire (absent in the first
//! version's frames), the server's choice, the client's check and its `auto` policy.

use protocol::codec::{
    AudioCodec, AudioEncoding, AudioFormat, DecodeError, DeviceKind, Frame, OpusParams,
};
use protocol::rules::audio::{self, CodecChoice, PathFacts};
use protocol::rules::server::AttachmentStream;
use protocol::rules::Refusal;

const OPUS: OpusParams = OpusParams {
    channels: 2,
    frame_samples: 480,
    bitrate: 96_000,
};

/// An `Attach` as the first version wrote it, byte by byte: no codecs field.
fn first_version_attach() -> Vec<u8> {
    let mut p = Vec::new();
    for name in ["vm1", "sound0"] {
        p.extend((name.len() as u16).to_be_bytes());
        p.extend(name.as_bytes());
    }
    p.push(0); // mode read
    p.push(2); // start now
    p.extend(0u64.to_be_bytes());
    p.push(1); // datagrams
    let mut f = vec![0x04];
    f.extend((p.len() as u32).to_be_bytes());
    f.extend(p);
    f
}

#[test]
fn an_old_clients_attach_offers_nothing_and_gets_pcm() {
    let bytes = first_version_attach();
    let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let req = AttachmentStream::new(std::time::Instant::now(), &Default::default())
        .on_first_frame(Some(frame.clone()))
        .unwrap();
    assert!(req.codecs.is_empty());
    // Even a server that can encode Opus for the device answers PCM.
    assert_eq!(audio::choose(&req.codecs, Some(OPUS)), AudioEncoding::Pcm);
    // And a PCM-only Attach from this version is the first version's bytes exactly.
    assert_eq!(frame.to_bytes().unwrap(), bytes);
}

#[test]
fn an_attached_without_the_encoding_field_means_pcm_and_pcm_adds_no_bytes() {
    let format = AudioFormat {
        rate: 44_100,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    let pcm = Frame::Attached {
        kind: DeviceKind::Audio,
        offset: 0,
        audio: Some(format),
        encoding: AudioEncoding::Pcm,
    };
    let opus = Frame::Attached {
        kind: DeviceKind::Audio,
        offset: 0,
        audio: Some(format),
        encoding: AudioEncoding::Opus(OPUS),
    };
    let pcm_bytes = pcm.to_bytes().unwrap();
    let opus_bytes = opus.to_bytes().unwrap();
    // kind, offset, format tag + rate + channels + sample format + byte order
    assert_eq!(pcm_bytes.len(), 5 + 1 + 8 + 1 + 4 + 2 + 2 + 1);
    assert_eq!(opus_bytes.len(), pcm_bytes.len() + 1 + 2 + 4 + 4);
    assert_eq!(Frame::decode(&opus_bytes).unwrap().unwrap().0, opus);
    assert_eq!(Frame::decode(&pcm_bytes).unwrap().unwrap().0, pcm);
}

#[test]
fn unknown_codecs_offered_are_skipped_and_a_bad_encoding_is_refused() {
    let mut bytes = first_version_attach();
    // Offer: 7 (unknown), Opus, Opus again, PCM.
    bytes.extend([4, 7, 1, 1, 0]);
    let len = (bytes.len() - 5) as u32;
    bytes[1..5].copy_from_slice(&len.to_be_bytes());
    let Frame::Attach { codecs, .. } = Frame::decode(&bytes).unwrap().unwrap().0 else {
        panic!("not an Attach");
    };
    assert_eq!(codecs, [AudioCodec::Opus, AudioCodec::Pcm]);

    // An offer longer than the limit, and a count the payload does not hold.
    let mut too_many = first_version_attach();
    too_many.extend([17]);
    too_many.extend([1; 17]);
    let len = (too_many.len() - 5) as u32;
    too_many[1..5].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Frame::decode(&too_many),
        Err(DecodeError::FieldTooLong("codecs"))
    );

    let attached = |tail: &[u8]| {
        let mut p = vec![1];
        p.extend(0u64.to_be_bytes());
        p.push(0); // no format
        p.extend(tail);
        Frame::decode_payload(0x44, &p)
    };
    assert_eq!(attached(&[9]), Err(DecodeError::InvalidValue("encoding")));
    // Opus with 3 channels, and with empty frames.
    let mut three = vec![1, 0, 3];
    three.extend(480u32.to_be_bytes());
    three.extend(64_000u32.to_be_bytes());
    assert_eq!(
        attached(&three),
        Err(DecodeError::InvalidValue("opus parameters"))
    );
    let mut empty = vec![1, 0, 2];
    empty.extend(0u32.to_be_bytes());
    empty.extend(64_000u32.to_be_bytes());
    assert_eq!(
        attached(&empty),
        Err(DecodeError::InvalidValue("opus parameters"))
    );
    assert_eq!(
        attached(&[0]).map(|f| matches!(
            f,
            Frame::Attached {
                encoding: AudioEncoding::Pcm,
                ..
            }
        )),
        Ok(true)
    );
}

#[test]
fn the_server_takes_the_first_offered_codec_it_can_produce() {
    use AudioCodec::*;
    assert_eq!(
        audio::choose(&[Opus, Pcm], Some(OPUS)),
        AudioEncoding::Opus(OPUS)
    );
    assert_eq!(
        audio::choose(&[Opus], Some(OPUS)),
        AudioEncoding::Opus(OPUS)
    );
    assert_eq!(audio::choose(&[Pcm, Opus], Some(OPUS)), AudioEncoding::Pcm);
    // A device Opus cannot carry (or Opus switched off): PCM.
    assert_eq!(audio::choose(&[Opus, Pcm], None), AudioEncoding::Pcm);
    assert_eq!(audio::choose(&[Opus], None), AudioEncoding::Pcm);
    assert_eq!(audio::choose(&[], Some(OPUS)), AudioEncoding::Pcm);
}

#[test]
fn the_client_accepts_pcm_always_and_opus_only_when_offered() {
    use AudioCodec::*;
    assert_eq!(
        audio::check_answer(&[], AudioEncoding::Pcm),
        Ok(AudioEncoding::Pcm)
    );
    assert_eq!(
        audio::check_answer(&[Opus, Pcm], AudioEncoding::Opus(OPUS)),
        Ok(AudioEncoding::Opus(OPUS))
    );
    let Err(Refusal::Violation(m)) = audio::check_answer(&[], AudioEncoding::Opus(OPUS)) else {
        panic!("an Opus answer to a PCM-only offer was accepted");
    };
    assert!(m.contains("opus"), "{m}");
}

#[test]
fn auto_takes_pcm_only_on_a_wide_loopback_path() {
    let pcm = Some(1_411_200);
    let opus_first = vec![AudioCodec::Opus, AudioCodec::Pcm];
    let facts = |loopback, capacity_bps| PathFacts {
        loopback,
        capacity_bps,
    };
    assert_eq!(audio::offer(CodecChoice::Auto, facts(true, None), pcm), []);
    assert_eq!(
        audio::offer(CodecChoice::Auto, facts(true, Some(100_000_000)), pcm),
        []
    );
    // Loopback through something narrow (a shaped tunnel): Opus.
    assert_eq!(
        audio::offer(CodecChoice::Auto, facts(true, Some(2_000_000)), pcm),
        opus_first
    );
    // Beyond loopback, whatever was measured.
    assert_eq!(
        audio::offer(CodecChoice::Auto, facts(false, Some(u64::MAX)), pcm),
        opus_first
    );
    assert_eq!(audio::offer(CodecChoice::Pcm, facts(false, None), pcm), []);
    assert_eq!(
        audio::offer(CodecChoice::Opus, facts(true, None), pcm),
        opus_first
    );
    assert_eq!("OPUS".parse::<CodecChoice>(), Ok(CodecChoice::Opus));
    assert!("flac".parse::<CodecChoice>().unwrap_err().contains("flac"));
    let f = AudioFormat {
        rate: 44_100,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    assert_eq!(audio::pcm_bitrate(&f), pcm);
    assert_eq!(
        audio::pcm_bitrate(&AudioFormat {
            sample_format: 99,
            ..f
        }),
        None
    );
}

/// An Opus frame size libopus cannot decode (here 5000 samples) is refused when decoded, so
/// a client never sizes its buffers by it.
#[test]
fn an_opus_frame_size_that_is_not_opus_is_refused() {
    let format = AudioFormat {
        rate: 48_000,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    for frame_samples in [480, 5000] {
        let f = Frame::Attached {
            kind: DeviceKind::Audio,
            offset: 0,
            audio: Some(format),
            encoding: AudioEncoding::Opus(OpusParams {
                frame_samples,
                ..OPUS
            }),
        };
        let bytes = f.to_bytes().unwrap();
        let got = Frame::decode(&bytes);
        assert_eq!(
            got.is_ok(),
            frame_samples == 480,
            "{frame_samples}: {got:?}"
        );
    }
}
