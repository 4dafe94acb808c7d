//! The connection and stream rules driven directly: frames and time in, actions out.

use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::codec::{
    AudioCodec, AudioData, AudioEncoding, AudioFormat, DeviceKind, Frame, GapReason, Mode, StartAt,
    MAX_INPUT,
};
use protocol::proto::{Limits, RequestBudget, MAX_VERSION, MIN_VERSION};
use protocol::rules::client::{self, ConsoleItem, ConsoleReader, REPORT_EVERY};
use protocol::rules::server::{
    self, in_flight_bound, AttachRequest, AttachmentStream, ConsoleAction, ConsoleRules,
    ControlRequest, Handshake, PathEstimate, Welcome, MAX_IN_FLIGHT, MAX_IN_FLIGHT_WITH_AUDIO,
};
use protocol::rules::{End, Refusal, WriteLocks};
use protocol::ErrorCode;

fn hello(min_version: u16, max_version: u16) -> Frame {
    Frame::Hello {
        min_version,
        max_version,
        software: "test".into(),
    }
}

fn closes_with(end: &End, code: ErrorCode, words: &str) {
    match end {
        End::Close { code: c, reason } => {
            assert_eq!(*c, code, "{end:?}");
            assert!(reason.contains(words), "{end:?} should say {words:?}");
        }
        other => panic!("expected a close with {code:?}, got {other:?}"),
    }
}

fn refuses_with(end: &End, code: ErrorCode, words: &str) {
    match end {
        End::Refuse { code: c, message } => {
            assert_eq!(*c, code, "{end:?}");
            assert!(message.contains(words), "{end:?} should say {words:?}");
        }
        other => panic!("expected a refusal with {code:?}, got {other:?}"),
    }
}

fn data(offset: u64, n: usize) -> Frame {
    Frame::Data {
        offset,
        bytes: Bytes::from(vec![b'x'; n]),
    }
}

#[test]
fn the_control_stream_welcomes_a_hello_then_answers_requests() {
    let t0 = Instant::now();
    let h = Handshake::new(t0, &Limits::default());
    assert_eq!(
        h.on_frame(Some(hello(MIN_VERSION, MAX_VERSION + 5))),
        Ok(Welcome {
            version: MAX_VERSION,
            client_software: "test".into()
        })
    );
    assert_eq!(
        server::control_request(Some(Frame::ListDevices { request: 7 })),
        Ok(ControlRequest::ListDevices { request: 7 })
    );
    assert_eq!(
        server::control_request(Some(Frame::GetStats { request: 8 })),
        Ok(ControlRequest::GetStats { request: 8 })
    );
    assert_eq!(server::control_request(None), Err(End::Finish));
    assert_eq!(h.on_frame(None), Err(End::Finish));
}

#[test]
fn the_control_stream_refuses_what_is_not_a_hello_first_or_not_a_request_after() {
    let h = Handshake::new(Instant::now(), &Limits::default());
    for first in [
        Frame::ListDevices { request: 1 },
        Frame::Detach,
        Frame::Welcome {
            version: 1,
            software: "x".into(),
        },
    ] {
        let name = first.name();
        let end = h.on_frame(Some(first)).unwrap_err();
        closes_with(
            &end,
            ErrorCode::ProtocolViolation,
            &format!("expected Hello, got {name}"),
        );
    }
    for later in [hello(1, 1), Frame::Detach, data(0, 1)] {
        let name = later.name();
        let end = server::control_request(Some(later)).unwrap_err();
        closes_with(
            &end,
            ErrorCode::ProtocolViolation,
            &format!("{name} is not a control request"),
        );
    }
}

#[test]
fn a_hello_with_no_common_version_is_answered_then_the_connection_closes() {
    let h = Handshake::new(Instant::now(), &Limits::default());
    match h.on_frame(Some(hello(MAX_VERSION + 1, MAX_VERSION + 3))) {
        Err(End::RefuseAndClose { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion);
            assert!(
                message.contains(&format!(
                    "client speaks {}..={}",
                    MAX_VERSION + 1,
                    MAX_VERSION + 3
                )),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        h.on_frame(Some(hello(3, 1))),
        Err(End::RefuseAndClose { .. })
    ));
}

#[test]
fn a_late_hello_closes_the_connection_at_the_deadline_and_not_before() {
    let t0 = Instant::now();
    let limits = Limits::default();
    let h = Handshake::new(t0, &limits);
    assert_eq!(h.deadline(), t0 + limits.handshake_timeout);
    assert_eq!(
        h.on_time(t0 + limits.handshake_timeout - Duration::from_millis(1)),
        None
    );
    let end = h.on_time(t0 + limits.handshake_timeout).expect("late");
    closes_with(&end, ErrorCode::ProtocolViolation, "no Hello in time");
}

#[test]
fn requests_over_the_budget_close_the_connection() {
    let t0 = Instant::now();
    let mut b = RequestBudget::new(10, 2);
    assert_eq!(b.spend(t0), Ok(()));
    assert_eq!(b.spend(t0), Ok(()));
    closes_with(
        &b.spend(t0).unwrap_err(),
        ErrorCode::RateLimited,
        "too many requests",
    );
    assert_eq!(b.spend(t0 + Duration::from_millis(100)), Ok(()));
}

#[test]
fn an_attachment_stream_must_start_with_attach_in_time() {
    let t0 = Instant::now();
    let limits = Limits::default();
    let a = AttachmentStream::new(t0, &limits);
    let attach = Frame::Attach {
        vm: "vm".into(),
        device: "serial0".into(),
        mode: Mode::Write,
        start: StartAt::TailBytes(9),
        datagrams: true,
        codecs: vec![AudioCodec::Opus],
    };
    assert_eq!(
        a.on_first_frame(Some(attach)),
        Ok(AttachRequest {
            vm: "vm".into(),
            device: "serial0".into(),
            mode: Mode::Write,
            start: StartAt::TailBytes(9),
            datagrams: true,
            codecs: vec![AudioCodec::Opus],
        })
    );
    closes_with(
        &a.on_first_frame(Some(Frame::Input {
            bytes: Bytes::from_static(b"x"),
        }))
        .unwrap_err(),
        ErrorCode::ProtocolViolation,
        "must start with Attach, not Input",
    );
    assert_eq!(a.on_first_frame(None), Err(End::Finish));
    assert_eq!(a.on_time(a.deadline() - Duration::from_nanos(1)), None);
    closes_with(
        &a.on_time(a.deadline()).unwrap(),
        ErrorCode::ProtocolViolation,
        "no Attach",
    );
}

#[test]
fn console_input_is_taken_only_from_a_writer() {
    let input = || {
        Some(Frame::Input {
            bytes: Bytes::from_static(b"ls\n"),
        })
    };
    let mut w = ConsoleRules::new("vm/serial0", Mode::Write, 0);
    assert_eq!(
        w.on_frame(input()),
        ConsoleAction::Input(Bytes::from_static(b"ls\n"))
    );
    for mode in [Mode::Read, Mode::Spy] {
        let ConsoleAction::End(end) = ConsoleRules::new("vm/serial0", mode, 0).on_frame(input())
        else {
            panic!("{mode:?} may type");
        };
        refuses_with(
            &end,
            ErrorCode::ReadOnly,
            &format!("vm/serial0 is {}: input refused", mode.name()),
        );
    }
    assert!(w.reads_more(MAX_INPUT - 1));
    assert!(
        !w.reads_more(MAX_INPUT),
        "input is read no faster than the guest takes it"
    );
}

#[test]
fn with_audio_live_the_console_bound_follows_the_congestion_window() {
    let limits = Limits {
        console_in_flight: 4 << 20,
        console_in_flight_with_audio: 64 << 10,
        ..Limits::default()
    };
    let bound = |audio, window| {
        let path = PathEstimate {
            window,
            ..PathEstimate::default()
        };
        in_flight_bound(&limits, audio, path)
    };
    // A 20 ms path carrying 25 MB/s has a 500 kB bandwidth-delay product: a fixed 64 KiB
    // would cap the console at 3 MB/s there. Four windows: the credit must not be what
    // holds the console back.
    assert_eq!(bound(true, 500_000), 2_000_000);
    // Never below the floor (a window not known yet, or a slow path)...
    assert_eq!(bound(true, 0), 64 << 10);
    assert_eq!(bound(true, 10_000), 64 << 10);
    // ...nor above the ceiling (what a stopped client can make the server hold).
    assert_eq!(bound(true, 100 << 20), MAX_IN_FLIGHT_WITH_AUDIO);
    assert_eq!(bound(true, u64::MAX), MAX_IN_FLIGHT_WITH_AUDIO);
    // Without audio: the fixed bound, up to the ceiling.
    assert_eq!(bound(false, 0), 4 << 20);
    assert_eq!(bound(false, 1_000_000), 4 << 20);
    assert_eq!(bound(false, 1 << 20), 4 << 20);
    assert_eq!(bound(false, 3 << 19), MAX_IN_FLIGHT);
    assert_eq!(bound(false, 8 << 20), MAX_IN_FLIGHT);
    // The allowance under it: what is left of the bound after what is in flight.
    let mut c = ConsoleRules::new("vm/serial0", Mode::Read, 0);
    c.sent(1_900_000);
    assert_eq!(c.allowance(bound(true, 500_000)), 100_000);
    assert_eq!(c.allowance(bound(true, 0)), 0);
}

#[test]
fn console_credit_follows_consumed_reports_and_refuses_impossible_ones() {
    let limits = Limits {
        console_in_flight: 1000,
        console_in_flight_with_audio: 100,
        ..Limits::default()
    };
    let unknown = PathEstimate::default();
    let (alone, with_audio) = (
        in_flight_bound(&limits, false, unknown),
        in_flight_bound(&limits, true, unknown),
    );
    assert_eq!((alone, with_audio), (1000, 100));
    let mut c = ConsoleRules::new("vm/serial0", Mode::Read, 5000);
    assert_eq!(c.allowance(alone), 1000);
    assert_eq!(c.allowance(with_audio), 100);
    c.sent(5800);
    assert_eq!(c.allowance(alone), 200);
    assert_eq!(c.allowance(with_audio), 0, "audio live: the console waits");
    assert_eq!(
        c.on_frame(Some(Frame::Consumed { offset: 5750 })),
        ConsoleAction::Continue
    );
    assert_eq!(c.in_flight(), 50);
    assert_eq!(c.allowance(with_audio), 50);
    let ConsoleAction::End(end) = c.on_frame(Some(Frame::Consumed { offset: 5801 })) else {
        panic!("a report beyond what was sent was accepted");
    };
    closes_with(
        &end,
        ErrorCode::ProtocolViolation,
        "Consumed beyond what was sent",
    );
}

#[test]
fn a_console_stream_ends_on_detach_or_finish_and_closes_on_foreign_frames() {
    let mut c = ConsoleRules::new("vm/serial0", Mode::Read, 0);
    assert_eq!(
        c.on_frame(Some(Frame::Detach)),
        ConsoleAction::End(End::Finish)
    );
    assert_eq!(c.on_frame(None), ConsoleAction::End(End::Finish));
    for f in [hello(1, 1), data(0, 3), Frame::ListDevices { request: 1 }] {
        let name = f.name();
        let ConsoleAction::End(end) = c.on_frame(Some(f)) else {
            panic!("{name} accepted")
        };
        closes_with(
            &end,
            ErrorCode::ProtocolViolation,
            &format!("{name} is not allowed on a console stream"),
        );
    }
}

#[test]
fn an_audio_stream_takes_no_input_ignores_reports_and_closes_on_foreign_frames() {
    assert_eq!(
        server::audio_frame("vm/snd", Some(Frame::Consumed { offset: 9 })),
        None
    );
    assert_eq!(
        server::audio_frame("vm/snd", Some(Frame::Detach)),
        Some(End::Finish)
    );
    assert_eq!(server::audio_frame("vm/snd", None), Some(End::Finish));
    refuses_with(
        &server::audio_frame(
            "vm/snd",
            Some(Frame::Input {
                bytes: Bytes::from_static(b"a"),
            }),
        )
        .unwrap(),
        ErrorCode::ReadOnly,
        "this attachment listens to vm/snd: sending audio to the guest needs an attachment \
         for writing (`ringcast mic`)",
    );
    closes_with(
        &server::audio_frame("vm/snd", Some(Frame::GetStats { request: 1 })).unwrap(),
        ErrorCode::ProtocolViolation,
        "GetStats is not allowed on an audio stream",
    );
}

#[test]
fn a_microphone_stream_takes_whole_frames_of_pcm_only() {
    use protocol::rules::server::{MicAction, MicRules};
    let mic = MicRules::new("vm/snd", 4);
    let pcm = Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        mic.on_frame(Some(Frame::Input { bytes: pcm.clone() })),
        MicAction::Pcm(pcm)
    );
    assert_eq!(
        mic.on_frame(Some(Frame::Consumed { offset: 3 })),
        MicAction::Continue
    );
    assert_eq!(
        mic.on_frame(Some(Frame::Detach)),
        MicAction::End(End::Finish)
    );
    assert_eq!(mic.on_frame(None), MicAction::End(End::Finish));
    let MicAction::End(end) = mic.on_frame(Some(Frame::Input {
        bytes: Bytes::from_static(&[1, 2, 3, 4, 5, 6]),
    })) else {
        panic!("a partial frame was taken");
    };
    closes_with(
        &end,
        ErrorCode::ProtocolViolation,
        "6 bytes of audio for vm/snd are not whole frames of 4 bytes",
    );
    let MicAction::End(end) = mic.on_frame(Some(Frame::GetStats { request: 1 })) else {
        panic!("a control request was taken");
    };
    closes_with(
        &end,
        ErrorCode::ProtocolViolation,
        "GetStats is not allowed on a microphone stream",
    );
}

#[test]
fn one_writer_per_console_until_it_releases() {
    let mut locks = WriteLocks::default();
    assert_eq!(locks.acquire("vm/serial0", "alice"), Ok(()));
    assert_eq!(locks.acquire("vm/serial0", "bob"), Err("alice"));
    assert_eq!(locks.acquire("vm/serial1", "bob"), Ok(()));
    locks.release(&"vm/serial0");
    assert_eq!(locks.holder(&"vm/serial0"), None);
    assert_eq!(locks.acquire("vm/serial0", "bob"), Ok(()));
    assert_eq!(locks.holder(&"vm/serial0"), Some("bob"));
}

#[test]
fn the_client_accepts_only_a_welcome_with_a_version_it_speaks() {
    let Frame::Hello {
        min_version,
        max_version,
        ..
    } = client::hello("ringcast")
    else {
        unreachable!()
    };
    assert_eq!((min_version, max_version), (MIN_VERSION, MAX_VERSION));
    let welcome = |version| {
        Some(Frame::Welcome {
            version,
            software: "ringcastd 9".into(),
        })
    };
    assert_eq!(
        client::on_welcome(welcome(MAX_VERSION)),
        Ok((MAX_VERSION, "ringcastd 9".into()))
    );
    assert!(
        matches!(client::on_welcome(welcome(MAX_VERSION + 1)), Err(Refusal::Violation(m)) if m.contains("does not speak"))
    );
    assert_eq!(
        client::on_welcome(Some(Frame::error(0, ErrorCode::UnsupportedVersion, "no"))),
        Err(Refusal::Refused {
            code: ErrorCode::UnsupportedVersion.code(),
            message: "no".into()
        })
    );
    assert!(
        matches!(client::on_welcome(Some(Frame::Detach)), Err(Refusal::Violation(m)) if m == "expected Welcome, got Detach")
    );
    assert!(matches!(client::on_welcome(None), Err(Refusal::Violation(m)) if m.contains("closed")));
}

#[test]
fn the_client_keeps_unknown_error_codes_of_a_newer_server() {
    let e = Frame::Error {
        request: 3,
        code: 0x7777,
        message: "new".into(),
    };
    assert_eq!(
        client::on_reply(Some(e)),
        Err(Refusal::Refused {
            code: 0x7777,
            message: "new".into()
        })
    );
    assert_eq!(
        client::on_reply(Some(Frame::Devices {
            request: 1,
            devices: vec![]
        })),
        Ok(Frame::Devices {
            request: 1,
            devices: vec![]
        })
    );
    assert!(client::on_reply(None).is_err());
}

#[test]
fn the_client_refuses_an_attachment_of_the_wrong_kind() {
    let fmt = AudioFormat {
        rate: 48_000,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    let attached = |kind| {
        Some(Frame::Attached {
            kind,
            offset: 42,
            audio: Some(fmt),
            encoding: AudioEncoding::Pcm,
        })
    };
    assert_eq!(
        client::on_attached("vm/snd", DeviceKind::Audio, attached(DeviceKind::Audio)),
        Ok(client::Attached {
            offset: 42,
            audio: Some(fmt),
            encoding: AudioEncoding::Pcm,
        })
    );
    assert_eq!(
        client::on_attached("vm/snd", DeviceKind::Console, attached(DeviceKind::Audio)),
        Err(Refusal::Refused {
            code: ErrorCode::WrongKind.code(),
            message: "vm/snd is not a console".into()
        })
    );
    assert!(matches!(
        client::on_attached("vm/s0", DeviceKind::Audio, attached(DeviceKind::Console)),
        Err(Refusal::Refused { message, .. }) if message == "vm/s0 is not an audio device"
    ));
    assert!(
        matches!(client::on_attached("x", DeviceKind::Console, Some(data(0, 1))), Err(Refusal::Violation(m)) if m == "expected Attached, got Data")
    );
    assert!(matches!(
        client::on_attached("x", DeviceKind::Console, None),
        Err(Refusal::Violation(_))
    ));
}

#[test]
fn console_items_must_follow_each_other_and_progress_is_reported() {
    let mut r = ConsoleReader::new(100);
    let (item, report) = r.on_frame(Some(data(100, 10))).unwrap().unwrap();
    assert_eq!(
        item,
        ConsoleItem::Chunk {
            offset: 100,
            bytes: Bytes::from(vec![b'x'; 10])
        }
    );
    assert_eq!(report, None);
    let gap = Frame::Gap {
        offset: 110,
        len: REPORT_EVERY,
        reason: GapReason::Lost,
    };
    let (item, report) = r.on_frame(Some(gap)).unwrap().unwrap();
    assert_eq!(item.end(), 110 + REPORT_EVERY);
    assert_eq!(
        report,
        Some(Frame::Consumed {
            offset: 110 + REPORT_EVERY
        })
    );
    assert_eq!(r.offset(), 110 + REPORT_EVERY);
    // A hole, an overlap, an item past 2^64, a foreign frame, an error.
    assert!(
        matches!(r.clone().on_frame(Some(data(r.offset() + 1, 1))), Err(Refusal::Violation(m)) if m.contains("expected offset"))
    );
    assert!(matches!(
        r.clone().on_frame(Some(data(r.offset() - 1, 1))),
        Err(Refusal::Violation(_))
    ));
    let mut near_end = ConsoleReader::new(u64::MAX - 1);
    assert!(
        matches!(near_end.on_frame(Some(Frame::Gap { offset: u64::MAX - 1, len: 2, reason: GapReason::Lost })), Err(Refusal::Violation(m)) if m.contains("2^64"))
    );
    assert!(
        matches!(r.clone().on_frame(Some(Frame::Detach)), Err(Refusal::Violation(m)) if m == "Detach on a console stream")
    );
    assert!(
        matches!(r.clone().on_frame(Some(Frame::error(0, ErrorCode::ShuttingDown, "bye"))), Err(Refusal::Refused { message, .. }) if message == "bye")
    );
    assert_eq!(r.on_frame(None), Ok(None));
}

#[test]
fn audio_streams_carry_periods_only() {
    let a = AudioData {
        seq: 1,
        timestamp_ns: 2,
        frames: 1,
        skipped_before: 0,
        pcm: Bytes::from_static(&[0, 0, 0, 0]),
    };
    assert_eq!(
        client::audio_frame(Some(Frame::Audio(a.clone()))),
        Ok(Some(a))
    );
    assert_eq!(client::audio_frame(None), Ok(None));
    assert!(
        matches!(client::audio_frame(Some(data(0, 1))), Err(Refusal::Violation(m)) if m == "Data on an audio stream")
    );
}

#[test]
fn a_data_header_followed_by_the_bytes_is_the_encoded_data_frame() {
    use protocol::codec::{data_frame_header, MAX_DATA};
    for (offset, len) in [
        (0u64, 1usize),
        (7, 100),
        (u64::MAX - 70_000, 65_536),
        (1, 0),
    ] {
        let bytes = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        let mut wire = data_frame_header(offset, len).unwrap().to_vec();
        wire.extend_from_slice(&bytes);
        let frame = Frame::Data { offset, bytes };
        assert_eq!(wire, frame.to_bytes().unwrap());
        assert_eq!(Frame::decode(&wire).unwrap(), Some((frame, wire.len())));
    }
    assert!(data_frame_header(0, MAX_DATA).is_ok());
    assert!(data_frame_header(0, MAX_DATA + 1).is_err());
}

mod rights {
    use super::*;
    use protocol::rules::{authorize_attach, DeviceFacts, Rights};

    const CONSOLE: DeviceFacts = DeviceFacts {
        kind: DeviceKind::Console,
        monitor: false,
    };
    const MONITOR: DeviceFacts = DeviceFacts {
        kind: DeviceKind::Console,
        monitor: true,
    };
    const AUDIO: DeviceFacts = DeviceFacts {
        kind: DeviceKind::Audio,
        monitor: false,
    };
    const FROM_ZERO: StartAt = StartAt::Offset(0);

    fn only(list: &str) -> Rights {
        Rights::parse(list).unwrap()
    }

    fn refused(r: Result<StartAt, End>, code: ErrorCode, words: &str) {
        match r {
            Err(End::Refuse { code: c, message }) => {
                assert_eq!(c, code, "{message}");
                assert!(message.contains(words), "{message:?} should say {words:?}");
            }
            other => panic!("expected a {code:?} refusal, got {other:?}"),
        }
    }

    /// Sending sound into the guest is writing: a listener, a reader or a spy (whatever
    /// other rights it has) is refused, and only audio together with write opens the
    /// microphone. Listening still needs nothing but the audio right.
    #[test]
    fn only_a_writer_with_the_audio_right_may_send_audio_to_the_guest() {
        for rights in ["audio", "audio,read,spy,monitor", "write", "write,read,spy"] {
            let r = authorize_attach("vm/snd", Some(AUDIO), only(rights), Mode::Write, FROM_ZERO);
            match rights {
                "write" | "write,read,spy" => refused(
                    r,
                    ErrorCode::NotAuthorized,
                    "needs the audio and write rights",
                ),
                _ => refused(
                    r,
                    ErrorCode::NotAuthorized,
                    "sending audio to vm/snd (microphone) needs the audio and write rights",
                ),
            }
        }
        assert_eq!(
            authorize_attach(
                "vm/snd",
                Some(AUDIO),
                only("audio,write"),
                Mode::Write,
                FROM_ZERO
            ),
            Ok(StartAt::Now)
        );
        for mode in [Mode::Read, Mode::Spy] {
            assert_eq!(
                authorize_attach("vm/snd", Some(AUDIO), only("audio"), mode, FROM_ZERO),
                Ok(StartAt::Now)
            );
        }
    }

    #[test]
    fn a_name_without_rights_looks_exactly_like_a_missing_one() {
        let none = Rights::default();
        let missing = authorize_attach("vm/x", None, Rights::ALL, Mode::Read, FROM_ZERO);
        let hidden = authorize_attach("vm/x", Some(CONSOLE), none, Mode::Read, FROM_ZERO);
        assert_eq!(missing, hidden);
        refused(
            missing,
            ErrorCode::NoSuchDevice,
            "no device vm/x that this client may use",
        );
    }

    #[test]
    fn each_console_mode_needs_its_own_right() {
        assert_eq!(
            authorize_attach("c", Some(CONSOLE), only("read"), Mode::Read, FROM_ZERO),
            Ok(FROM_ZERO)
        );
        refused(
            authorize_attach("c", Some(CONSOLE), only("spy"), Mode::Read, FROM_ZERO),
            ErrorCode::NotAuthorized,
            "needs the read right",
        );
        refused(
            authorize_attach(
                "c",
                Some(CONSOLE),
                only("read,spy,audio,monitor"),
                Mode::Write,
                FROM_ZERO,
            ),
            ErrorCode::NotAuthorized,
            "needs the write right",
        );
        refused(
            authorize_attach("c", Some(CONSOLE), only("audio"), Mode::Spy, FROM_ZERO),
            ErrorCode::NotAuthorized,
            "rights on c: audio",
        );
        assert_eq!(
            authorize_attach("c", Some(CONSOLE), only("read"), Mode::Spy, FROM_ZERO),
            Ok(FROM_ZERO)
        );
    }

    #[test]
    fn a_spy_and_a_writer_without_read_see_only_what_comes_from_now() {
        for start in [
            StartAt::Offset(0),
            StartAt::TailBytes(1 << 20),
            StartAt::Now,
        ] {
            assert_eq!(
                authorize_attach("c", Some(CONSOLE), only("spy"), Mode::Spy, start),
                Ok(StartAt::Now)
            );
            assert_eq!(
                authorize_attach("c", Some(CONSOLE), only("write"), Mode::Write, start),
                Ok(StartAt::Now)
            );
            assert_eq!(
                authorize_attach("c", Some(CONSOLE), only("read,write"), Mode::Write, start),
                Ok(start)
            );
        }
    }

    #[test]
    fn a_monitor_needs_the_monitor_right_which_write_never_implies() {
        for mode in [Mode::Read, Mode::Spy, Mode::Write] {
            refused(
                authorize_attach(
                    "vm/qmp0",
                    Some(MONITOR),
                    only("read,spy,write,audio"),
                    mode,
                    FROM_ZERO,
                ),
                ErrorCode::NotAuthorized,
                "vm/qmp0 is a QEMU monitor: using it needs the monitor right",
            );
            assert_eq!(
                authorize_attach("vm/qmp0", Some(MONITOR), only("monitor"), mode, FROM_ZERO),
                Ok(FROM_ZERO)
            );
        }
    }

    #[test]
    fn audio_needs_the_audio_right_and_console_rights_do_not_suffice() {
        refused(
            authorize_attach(
                "vm/snd",
                Some(AUDIO),
                only("read,spy,write,monitor"),
                Mode::Read,
                FROM_ZERO,
            ),
            ErrorCode::NotAuthorized,
            "needs the audio right",
        );
        assert_eq!(
            authorize_attach("vm/snd", Some(AUDIO), only("audio"), Mode::Read, FROM_ZERO),
            Ok(StartAt::Now)
        );
    }

    #[test]
    fn rights_parse_and_print_in_the_file_spelling() {
        assert_eq!(Rights::parse("all"), Ok(Rights::ALL));
        assert_eq!(Rights::ALL.to_string(), "read,spy,write,monitor,audio");
        assert_eq!(Rights::default().to_string(), "none");
        assert_eq!(
            only("spy,audio").union(only("read")),
            only("read,spy,audio")
        );
        assert!(Rights::parse("read,fly").unwrap_err().contains("\"fly\""));
        assert!(!Rights::default().any());
    }
}

#[test]
fn connections_are_capped_in_total_and_per_identity_and_freed_when_they_end() {
    let limits = Limits {
        max_connections: 3,
        max_connections_per_client: 2,
        ..Limits::default()
    };
    let mut c = server::Connections::new(&limits);
    assert_eq!(c.open(&"alice"), Ok(()));
    assert_eq!(c.open(&"alice"), Ok(()));
    closes_with(
        &c.open(&"alice").unwrap_err(),
        ErrorCode::TooManyConnections,
        "per client identity",
    );
    assert_eq!(c.open(&"bob"), Ok(()));
    closes_with(
        &c.open(&"carol").unwrap_err(),
        ErrorCode::TooManyConnections,
        "at most 3 connections",
    );
    assert_eq!(c.total(), 3, "refused connections are not counted");
    c.close(&"alice");
    assert_eq!(c.open(&"carol"), Ok(()));
    c.close(&"nobody");
    assert_eq!(
        c.total(),
        3,
        "closing what was never opened changes nothing"
    );
}
