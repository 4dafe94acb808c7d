//! Writes the fuzz seed corpus: one valid encoding of every frame type and a few hostile
//! headers. From the workspace root: `cargo run -p protocol --example write_corpus -- fuzz/seeds/wire_decode`

use bytes::Bytes;
use protocol::codec::*;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds/wire_decode".into());
    std::fs::create_dir_all(&dir).unwrap();
    let entry = DeviceEntry {
        vm: "vm1".into(),
        device: "sound0".into(),
        kind: DeviceKind::Audio,
        state: DeviceState::Attached,
        audio: Some(AudioFormat {
            rate: 48_000,
            channels: 2,
            sample_format: 3,
            big_endian: false,
        }),
        bytes: 0,
        periods: 12,
        journal_start: 0,
        journal_end: 0,
        subscribers: 1,
    };
    let frames = vec![
        Frame::Hello {
            min_version: 1,
            max_version: 1,
            software: "ringcast 0.1".into(),
        },
        Frame::Welcome {
            version: 1,
            software: "ringcastd 0.1".into(),
        },
        Frame::ListDevices { request: 1 },
        Frame::GetStats { request: 2 },
        Frame::Devices {
            request: 1,
            devices: vec![entry.clone()],
        },
        Frame::Stats {
            request: 2,
            devices: vec![StatsEntry {
                device: entry,
                dropped_flight_recorder: 1,
                dropped_audio_overflow: 2,
                subscriber_gap_bytes: 3,
                subscriber_dropped_periods: 4,
                ring_fill: 5,
                ring_capacity: 65536,
                input_bytes: 6,
                registrations: 1,
                spool_errors: 0,
                dropped_no_spool: 7,
                poisoned: Some("position moved backwards".into()),
            }],
        },
        Frame::Attach {
            vm: "vm1".into(),
            device: "serial0".into(),
            mode: Mode::Write,
            start: StartAt::Offset(4096),
            datagrams: false,
            codecs: vec![],
        },
        Frame::Attach {
            vm: "vm1".into(),
            device: "sound0".into(),
            mode: Mode::Read,
            start: StartAt::Now,
            datagrams: true,
            codecs: vec![AudioCodec::Opus, AudioCodec::Pcm],
        },
        Frame::Attached {
            kind: DeviceKind::Audio,
            offset: 0,
            audio: Some(AudioFormat {
                rate: 44_100,
                channels: 2,
                sample_format: 3,
                big_endian: false,
            }),
            encoding: AudioEncoding::Opus(OpusParams {
                channels: 2,
                frame_samples: 480,
                bitrate: 96_000,
            }),
        },
        Frame::Attached {
            kind: DeviceKind::Console,
            offset: 4096,
            audio: None,
            encoding: AudioEncoding::Pcm,
        },
        Frame::Data {
            offset: 4096,
            bytes: Bytes::from_static(b"login: "),
        },
        Frame::Gap {
            offset: 0,
            len: 4096,
            reason: GapReason::Retention,
        },
        Frame::Audio(AudioData {
            seq: 7,
            timestamp_ns: 123_456_789,
            frames: 4,
            skipped_before: 1,
            pcm: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
        }),
        Frame::Input {
            bytes: Bytes::from_static(b"root\r"),
        },
        Frame::Consumed { offset: 4103 },
        Frame::Detach,
        Frame::error(
            0,
            protocol::ErrorCode::WriterBusy,
            "held by SHA256:ab at 10.0.0.2:5000",
        ),
    ];
    let mut all = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let b = f.to_bytes().unwrap();
        all.extend_from_slice(&b);
        std::fs::write(format!("{dir}/{i:02}-{}", f.name()), b).unwrap();
    }
    std::fs::write(format!("{dir}/all-frames"), all).unwrap();
    // Stats as a server older than the extra counters sends them: nothing after the
    // entries.
    if let Some(stats @ Frame::Stats { devices, .. }) =
        frames.iter().find(|f| matches!(f, Frame::Stats { .. }))
    {
        let b = stats.to_bytes().unwrap();
        let mut old = b[..b.len() - 1 - 8 * devices.len()].to_vec();
        let len = (old.len() - HEADER_LEN) as u32;
        old[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        std::fs::write(format!("{dir}/stats-without-extra-counters"), old).unwrap();
    }
    std::fs::write(
        format!("{dir}/oversized-length"),
        [0x45, 0xff, 0xff, 0xff, 0xff],
    )
    .unwrap();
    std::fs::write(format!("{dir}/unknown-type"), [0x99, 0, 0, 0, 1, 0]).unwrap();
    std::fs::write(
        format!("{dir}/huge-device-count"),
        [0x42, 0, 0, 0, 8, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
    )
    .unwrap();
    let dg = encode_datagram(
        4,
        &AudioData {
            seq: 1,
            timestamp_ns: 2,
            frames: 1,
            skipped_before: 0,
            pcm: Bytes::from_static(&[0; 4]),
        },
    )
    .unwrap();
    std::fs::write(format!("{dir}/datagram"), dg).unwrap();
}
