//! The ringcast wire codec: frames as values, bytes in and out, no I/O and no clock.
//!
//! # Framing
//!
//! Every frame is `type: u8`, `length: u32` (big-endian, of the payload), `payload`. The
//! length is checked against [`MAX_FRAME_PAYLOAD`] *before* anything is allocated, so a
//! hostile peer cannot make the decoder reserve more than one maximum-sized frame.
//!
//! Payload fields are fixed-width big-endian integers, `u8` booleans (0 or 1), and
//! length-prefixed byte strings (`u16` length for names, `u32` for data, each with its own
//! limit). A payload may carry bytes after the fields this version knows: they are ignored,
//! so later versions can append fields. An unknown frame *type* is an error
//! ([`DecodeError::UnknownFrameType`]): its meaning cannot be guessed.
//!
//! # Streams
//!
//! - The control stream (the first bidirectional stream the client opens): client
//!   [`Frame::Hello`] → server [`Frame::Welcome`] (or [`Frame::Error`] and close), then
//!   requests [`Frame::ListDevices`] / [`Frame::GetStats`] answered by [`Frame::Devices`] /
//!   [`Frame::Stats`] with the same request id.
//! - Each attachment is its own bidirectional stream the client opens with
//!   [`Frame::Attach`]; the server answers [`Frame::Attached`] or [`Frame::Error`], then
//!   sends [`Frame::Data`] / [`Frame::Gap`] (console) or [`Frame::Audio`] (audio). The
//!   client sends [`Frame::Input`] (write mode only) and [`Frame::Consumed`] (how far it
//!   has read, which bounds what the server keeps in flight) on the same stream, and
//!   [`Frame::Detach`] or finishes the stream to leave.
//! - Audio in datagram mode: each QUIC datagram is `attach stream id: u64` followed by
//!   one encoded [`Frame::Audio`].

use bytes::{BufMut, Bytes};

/// Largest payload a frame may have (console chunks and audio periods stay far below).
pub const MAX_FRAME_PAYLOAD: u32 = 1 << 20;
/// Frame header: type (1) + payload length (4).
pub const HEADER_LEN: usize = 5;
/// Longest VM or device name.
pub const MAX_NAME: usize = 255;
/// Longest human-readable text (error messages, software names).
pub const MAX_TEXT: usize = 1024;
/// Most devices in one list or stats reply.
pub const MAX_DEVICES: usize = 4096;
/// Largest console input frame.
pub const MAX_INPUT: usize = 64 << 10;

/// Why bytes are not a valid frame. Small and `Copy`: decoding never allocates an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended in the middle of a field.
    #[error("frame truncated")]
    UnexpectedEnd,
    /// The declared payload length is above the limit.
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME_PAYLOAD}")]
    FrameTooLarge(u32),
    /// A frame type this version does not know.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A field holds a value outside its range.
    #[error("invalid value in field {0}")]
    InvalidValue(&'static str),
    /// A length field is above that field's limit.
    #[error("field {0} is longer than allowed")]
    FieldTooLong(&'static str),
    /// Text that is not UTF-8.
    #[error("field {0} is not UTF-8")]
    BadUtf8(&'static str),
}

impl DecodeError {
    /// The error-table code a peer is closed with for this error.
    pub fn code(self) -> crate::ErrorCode {
        match self {
            DecodeError::FrameTooLarge(_) => crate::ErrorCode::FrameTooLarge,
            DecodeError::UnknownFrameType(_) => crate::ErrorCode::UnknownFrame,
            _ => crate::ErrorCode::MalformedFrame,
        }
    }
}

/// How an attachment may use a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Read the output (capture, logs).
    Read,
    /// Read the output and send input; one writer per console at a time.
    Write,
    /// Watch someone else's session: read-only, never takes the write lock.
    Spy,
}

impl Mode {
    /// Lower-case name, as in the authorization file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Write => "write",
            Mode::Spy => "spy",
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Mode::Read => 0,
            Mode::Write => 1,
            Mode::Spy => 2,
        }
    }
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Mode::Read,
            1 => Mode::Write,
            2 => Mode::Spy,
            _ => return Err(DecodeError::InvalidValue("mode")),
        })
    }
}

/// Where a console attachment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At this absolute journal offset (resume).
    Offset(u64),
    /// This many bytes before the end.
    TailBytes(u64),
    /// Only new bytes.
    Now,
}

/// What a device carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device.
    Console,
    /// An audio output.
    Audio,
}

impl DeviceKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Console => "console",
            DeviceKind::Audio => "audio",
        }
    }
}

/// Whether a device's QEMU is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Connected and flowing.
    Attached,
    /// Not connected; the journal remains.
    Gone,
    /// Its QEMU broke the ring protocol.
    Poisoned,
}

impl DeviceState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Attached => "attached",
            DeviceState::Gone => "gone",
            DeviceState::Poisoned => "poisoned",
        }
    }
}

/// Why console bytes are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// QEMU dropped them while no ringcastd was attached.
    Lost,
    /// Older than the journal's retention.
    Retention,
}

impl GapReason {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::Lost => "lost before ringcastd attached",
            GapReason::Retention => "older than the retention",
        }
    }
}

/// PCM format of an audio device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// QEMU sample format, as [`SampleFormat`](crate::audio::SampleFormat) numbers them
    /// (0 u8, 1 s8, 2 u16, 3 s16, 4 u32, 5 s32, 6 f32). Kept as the number: a newer
    /// QEMU's format still lists, and only the audio itself is refused.
    pub sample_format: u16,
    /// Big-endian samples.
    pub big_endian: bool,
}

impl AudioFormat {
    /// Bytes per sample of one channel, or None for an unknown format.
    pub fn sample_bytes(&self) -> Option<u32> {
        let format = crate::audio::SampleFormat::from_wire(self.sample_format)?;
        Some(format.bytes_per_sample() as u32)
    }
}

/// A device with its basic counters, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// VM name.
    pub vm: String,
    /// Device id.
    pub device: String,
    /// Console or audio.
    pub kind: DeviceKind,
    /// Whether its QEMU is connected.
    pub state: DeviceState,
    /// Audio format (audio devices).
    pub audio: Option<AudioFormat>,
    /// Console bytes received.
    pub bytes: u64,
    /// Audio periods received.
    pub periods: u64,
    /// First retained journal offset.
    pub journal_start: u64,
    /// Journal end offset.
    pub journal_end: u64,
    /// Current subscribers.
    pub subscribers: u32,
}

/// Every counter of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsEntry {
    /// Name, kind, state and basic counters.
    pub device: DeviceEntry,
    /// Bytes QEMU dropped while no ringcastd was attached.
    pub dropped_flight_recorder: u64,
    /// Audio periods QEMU dropped (ring full).
    pub dropped_audio_overflow: u64,
    /// Bytes subscribers skipped because they were behind the retention.
    pub subscriber_gap_bytes: u64,
    /// Audio periods dropped from slow subscribers' queues.
    pub subscriber_dropped_periods: u64,
    /// Bytes waiting in the ring.
    pub ring_fill: u64,
    /// Ring capacity.
    pub ring_capacity: u64,
    /// Console input bytes delivered to the ring.
    pub input_bytes: u64,
    /// Times QEMU registered the device.
    pub registrations: u64,
    /// Spool write failures.
    pub spool_errors: u64,
    /// Console bytes that left the server's RAM window while its spool could not be
    /// written: lost for good. Carried after the last entry (see [`Frame::Stats`]), so a
    /// server older than this field reports 0.
    pub dropped_no_spool: u64,
    /// Why the ring was poisoned, if it was.
    pub poisoned: Option<String>,
}

/// Counters of [`StatsEntry`] that travel after the last entry of a [`Frame::Stats`], in
/// this order (fields added after the first version; an older decoder ignores them as
/// trailing bytes, a newer one reads the ones it knows and skips the rest).
const STATS_EXTRA_COUNTERS: u8 = 1;

/// One audio period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioData {
    /// Sequence number from the backend (jumps show drops).
    pub seq: u64,
    /// CLOCK_MONOTONIC ns on the VM host when QEMU handed the period over.
    pub timestamp_ns: u64,
    /// Frames in the period.
    pub frames: u32,
    /// Periods the server dropped just before this one (this subscriber was slow).
    pub skipped_before: u64,
    /// Interleaved PCM.
    pub pcm: Bytes,
}

/// A protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server, first frame of the control stream: the versions the client speaks.
    Hello {
        /// Oldest version the client speaks.
        min_version: u16,
        /// Newest version the client speaks.
        max_version: u16,
        /// Client software, for logs.
        software: String,
    },
    /// Server → client: the version chosen.
    Welcome {
        /// The version both speak from now on.
        version: u16,
        /// Server software, for logs.
        software: String,
    },
    /// Client → server: list devices.
    ListDevices {
        /// Echoed in the reply.
        request: u32,
    },
    /// Server → client: the devices.
    Devices {
        /// The request answered.
        request: u32,
        /// The devices the client may see.
        devices: Vec<DeviceEntry>,
    },
    /// Client → server: every counter of every device.
    GetStats {
        /// Echoed in the reply.
        request: u32,
    },
    /// Server → client: the counters.
    ///
    /// Payload: `request`, the entry count, the entries with the first version's counters,
    /// then the extra counters: their number per entry `k: u8` and `k` × `u64` per entry,
    /// entry after entry (now `k` = 1: `dropped_no_spool`). A payload that ends after the
    /// entries (an older server) decodes with the extra counters 0.
    Stats {
        /// The request answered.
        request: u32,
        /// Per device.
        devices: Vec<StatsEntry>,
    },
    /// Client → server, first frame of an attachment stream.
    Attach {
        /// VM name.
        vm: String,
        /// Device id.
        device: String,
        /// How the console is used (ignored for audio, which is always read).
        mode: Mode,
        /// Where a console attachment starts.
        start: StartAt,
        /// Audio: send periods as QUIC datagrams instead of on the stream.
        datagrams: bool,
    },
    /// Server → client: the attachment is live.
    Attached {
        /// Console or audio.
        kind: DeviceKind,
        /// The offset the first console item will have.
        offset: u64,
        /// Audio format.
        audio: Option<AudioFormat>,
    },
    /// Console output bytes at an absolute journal offset.
    Data {
        /// Journal offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Console bytes that cannot be delivered.
    Gap {
        /// First missing offset.
        offset: u64,
        /// Bytes missing.
        len: u64,
        /// Why.
        reason: GapReason,
    },
    /// One audio period.
    Audio(AudioData),
    /// Client → server: console input (write mode).
    Input {
        /// Keystrokes.
        bytes: Bytes,
    },
    /// Client → server: everything before this console offset has been read.
    Consumed {
        /// Offset after the last byte read.
        offset: u64,
    },
    /// Client → server: end this attachment.
    Detach,
    /// Either way: a request or the stream failed.
    Error {
        /// The request concerned (0: the stream itself).
        request: u32,
        /// From the error table ([`crate::ErrorCode`]); unknown numbers are kept as is.
        code: u16,
        /// Details for a person (e.g. who holds the write lock).
        message: String,
    },
}

mod ty {
    pub const HELLO: u8 = 0x01;
    pub const LIST: u8 = 0x02;
    pub const GET_STATS: u8 = 0x03;
    pub const ATTACH: u8 = 0x04;
    pub const INPUT: u8 = 0x05;
    pub const CONSUMED: u8 = 0x06;
    pub const DETACH: u8 = 0x07;
    pub const WELCOME: u8 = 0x41;
    pub const DEVICES: u8 = 0x42;
    pub const STATS: u8 = 0x43;
    pub const ATTACHED: u8 = 0x44;
    pub const DATA: u8 = 0x45;
    pub const GAP: u8 = 0x46;
    pub const AUDIO: u8 = 0x47;
    pub const ERROR: u8 = 0x7f;
}

impl Frame {
    /// A short name of the frame type, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Welcome { .. } => "Welcome",
            Frame::ListDevices { .. } => "ListDevices",
            Frame::Devices { .. } => "Devices",
            Frame::GetStats { .. } => "GetStats",
            Frame::Stats { .. } => "Stats",
            Frame::Attach { .. } => "Attach",
            Frame::Attached { .. } => "Attached",
            Frame::Data { .. } => "Data",
            Frame::Gap { .. } => "Gap",
            Frame::Audio(_) => "Audio",
            Frame::Input { .. } => "Input",
            Frame::Consumed { .. } => "Consumed",
            Frame::Detach => "Detach",
            Frame::Error { .. } => "Error",
        }
    }

    /// An error frame for `code` with a message.
    pub fn error(request: u32, code: crate::ErrorCode, message: impl Into<String>) -> Frame {
        let mut message = message.into();
        truncate_text(&mut message, MAX_TEXT);
        Frame::Error {
            request,
            code: code.code(),
            message,
        }
    }

    /// Appends the encoded frame to `out`. Fails only when a field exceeds its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let t = self.encode_payload(out)?;
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_FRAME_PAYLOAD as usize {
            out.truncate(start);
            return Err(EncodeError("frame payload"));
        }
        out[start] = t;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    fn encode_payload(&self, o: &mut Vec<u8>) -> Result<u8, EncodeError> {
        Ok(match self {
            Frame::Hello {
                min_version,
                max_version,
                software,
            } => {
                o.put_u16(*min_version);
                o.put_u16(*max_version);
                put_str(o, software, MAX_TEXT, "software")?;
                ty::HELLO
            }
            Frame::Welcome { version, software } => {
                o.put_u16(*version);
                put_str(o, software, MAX_TEXT, "software")?;
                ty::WELCOME
            }
            Frame::ListDevices { request } => {
                o.put_u32(*request);
                ty::LIST
            }
            Frame::GetStats { request } => {
                o.put_u32(*request);
                ty::GET_STATS
            }
            Frame::Devices { request, devices } => {
                o.put_u32(*request);
                put_count(o, devices.len())?;
                for d in devices {
                    put_entry(o, d)?;
                }
                ty::DEVICES
            }
            Frame::Stats { request, devices } => {
                o.put_u32(*request);
                put_count(o, devices.len())?;
                for s in devices {
                    put_entry(o, &s.device)?;
                    for v in [
                        s.dropped_flight_recorder,
                        s.dropped_audio_overflow,
                        s.subscriber_gap_bytes,
                        s.subscriber_dropped_periods,
                        s.ring_fill,
                        s.ring_capacity,
                        s.input_bytes,
                        s.registrations,
                        s.spool_errors,
                    ] {
                        o.put_u64(v);
                    }
                    match &s.poisoned {
                        None => o.put_u8(0),
                        Some(p) => {
                            o.put_u8(1);
                            put_str(o, p, MAX_TEXT, "poisoned")?;
                        }
                    }
                }
                o.put_u8(STATS_EXTRA_COUNTERS);
                for s in devices {
                    o.put_u64(s.dropped_no_spool);
                }
                ty::STATS
            }
            Frame::Attach {
                vm,
                device,
                mode,
                start,
                datagrams,
            } => {
                put_str(o, vm, MAX_NAME, "vm")?;
                put_str(o, device, MAX_NAME, "device")?;
                o.put_u8(mode.to_u8());
                match start {
                    StartAt::Offset(n) => {
                        o.put_u8(0);
                        o.put_u64(*n);
                    }
                    StartAt::TailBytes(n) => {
                        o.put_u8(1);
                        o.put_u64(*n);
                    }
                    StartAt::Now => {
                        o.put_u8(2);
                        o.put_u64(0);
                    }
                }
                o.put_u8(u8::from(*datagrams));
                ty::ATTACH
            }
            Frame::Attached {
                kind,
                offset,
                audio,
            } => {
                o.put_u8(match kind {
                    DeviceKind::Console => 0,
                    DeviceKind::Audio => 1,
                });
                o.put_u64(*offset);
                put_audio_format(o, audio);
                ty::ATTACHED
            }
            Frame::Data { offset, bytes } => {
                o.put_u64(*offset);
                put_bytes(o, bytes, MAX_FRAME_PAYLOAD as usize - 12, "data")?;
                ty::DATA
            }
            Frame::Gap {
                offset,
                len,
                reason,
            } => {
                o.put_u64(*offset);
                o.put_u64(*len);
                o.put_u8(match reason {
                    GapReason::Lost => 0,
                    GapReason::Retention => 1,
                });
                ty::GAP
            }
            Frame::Audio(a) => {
                o.put_u64(a.seq);
                o.put_u64(a.timestamp_ns);
                o.put_u32(a.frames);
                o.put_u64(a.skipped_before);
                put_bytes(o, &a.pcm, MAX_FRAME_PAYLOAD as usize - 32, "pcm")?;
                ty::AUDIO
            }
            Frame::Input { bytes } => {
                put_bytes(o, bytes, MAX_INPUT, "input")?;
                ty::INPUT
            }
            Frame::Consumed { offset } => {
                o.put_u64(*offset);
                ty::CONSUMED
            }
            Frame::Detach => ty::DETACH,
            Frame::Error {
                request,
                code,
                message,
            } => {
                o.put_u32(*request);
                o.put_u16(*code);
                put_str(o, message, MAX_TEXT, "message")?;
                ty::ERROR
            }
        })
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// else the frame and how many bytes it used. Rejects an oversized length as soon as
    /// the header is complete.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let t = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if len > MAX_FRAME_PAYLOAD {
            return Err(DecodeError::FrameTooLarge(len));
        }
        if !known_type(t) {
            return Err(DecodeError::UnknownFrameType(t));
        }
        let total = HEADER_LEN + len as usize;
        let Some(payload) = buf.get(HEADER_LEN..total) else {
            return Ok(None);
        };
        let frame = Frame::decode_payload(t, payload)?;
        Ok(Some((frame, total)))
    }

    /// Decodes a frame of type `t` from exactly its payload. Bytes after the known fields
    /// are ignored (fields a later version appended).
    pub fn decode_payload(t: u8, payload: &[u8]) -> Result<Frame, DecodeError> {
        let r = &mut Reader(payload);
        Ok(match t {
            ty::HELLO => Frame::Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                software: r.str(MAX_TEXT, "software")?,
            },
            ty::WELCOME => Frame::Welcome {
                version: r.u16()?,
                software: r.str(MAX_TEXT, "software")?,
            },
            ty::LIST => Frame::ListDevices { request: r.u32()? },
            ty::GET_STATS => Frame::GetStats { request: r.u32()? },
            ty::DEVICES => {
                let request = r.u32()?;
                let n = r.count()?;
                let mut devices = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    devices.push(r.entry()?);
                }
                Frame::Devices { request, devices }
            }
            ty::STATS => {
                let request = r.u32()?;
                let n = r.count()?;
                let mut devices = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let device = r.entry()?;
                    devices.push(StatsEntry {
                        device,
                        dropped_flight_recorder: r.u64()?,
                        dropped_audio_overflow: r.u64()?,
                        subscriber_gap_bytes: r.u64()?,
                        subscriber_dropped_periods: r.u64()?,
                        ring_fill: r.u64()?,
                        ring_capacity: r.u64()?,
                        input_bytes: r.u64()?,
                        registrations: r.u64()?,
                        spool_errors: r.u64()?,
                        dropped_no_spool: 0,
                        poisoned: match r.u8()? {
                            0 => None,
                            1 => Some(r.str(MAX_TEXT, "poisoned")?),
                            _ => return Err(DecodeError::InvalidValue("poisoned")),
                        },
                    });
                }
                if !r.0.is_empty() {
                    let k = r.u8()?;
                    for d in devices.iter_mut() {
                        for i in 0..k {
                            let v = r.u64()?;
                            if i == 0 {
                                d.dropped_no_spool = v;
                            }
                        }
                    }
                }
                Frame::Stats { request, devices }
            }
            ty::ATTACH => Frame::Attach {
                vm: r.name("vm")?,
                device: r.name("device")?,
                mode: Mode::from_u8(r.u8()?)?,
                start: {
                    let tag = r.u8()?;
                    let n = r.u64()?;
                    match tag {
                        0 => StartAt::Offset(n),
                        1 => StartAt::TailBytes(n),
                        2 => StartAt::Now,
                        _ => return Err(DecodeError::InvalidValue("start")),
                    }
                },
                datagrams: r.bool("datagrams")?,
            },
            ty::ATTACHED => Frame::Attached {
                kind: match r.u8()? {
                    0 => DeviceKind::Console,
                    1 => DeviceKind::Audio,
                    _ => return Err(DecodeError::InvalidValue("kind")),
                },
                offset: r.u64()?,
                audio: r.audio_format()?,
            },
            ty::DATA => Frame::Data {
                offset: r.u64()?,
                bytes: r.bytes(MAX_FRAME_PAYLOAD as usize, "data")?,
            },
            ty::GAP => Frame::Gap {
                offset: r.u64()?,
                len: r.u64()?,
                reason: match r.u8()? {
                    0 => GapReason::Lost,
                    1 => GapReason::Retention,
                    _ => return Err(DecodeError::InvalidValue("reason")),
                },
            },
            ty::AUDIO => Frame::Audio(AudioData {
                seq: r.u64()?,
                timestamp_ns: r.u64()?,
                frames: r.u32()?,
                skipped_before: r.u64()?,
                pcm: r.bytes(MAX_FRAME_PAYLOAD as usize, "pcm")?,
            }),
            ty::INPUT => Frame::Input {
                bytes: r.bytes(MAX_INPUT, "input")?,
            },
            ty::CONSUMED => Frame::Consumed { offset: r.u64()? },
            ty::DETACH => Frame::Detach,
            ty::ERROR => Frame::Error {
                request: r.u32()?,
                code: r.u16()?,
                message: r.str(MAX_TEXT, "message")?,
            },
            other => return Err(DecodeError::UnknownFrameType(other)),
        })
    }
}

fn known_type(t: u8) -> bool {
    matches!(
        t,
        ty::HELLO
            | ty::LIST
            | ty::GET_STATS
            | ty::ATTACH
            | ty::INPUT
            | ty::CONSUMED
            | ty::DETACH
            | ty::WELCOME
            | ty::DEVICES
            | ty::STATS
            | ty::ATTACHED
            | ty::DATA
            | ty::GAP
            | ty::AUDIO
            | ty::ERROR
    )
}

/// A field was too long to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is too long to encode")]
pub struct EncodeError(pub &'static str);

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_text(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn put_str(o: &mut Vec<u8>, s: &str, max: usize, what: &'static str) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError(what));
    }
    o.put_u16(s.len() as u16);
    o.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_bytes(o: &mut Vec<u8>, b: &[u8], max: usize, what: &'static str) -> Result<(), EncodeError> {
    if b.len() > max {
        return Err(EncodeError(what));
    }
    o.put_u32(b.len() as u32);
    o.extend_from_slice(b);
    Ok(())
}

fn put_count(o: &mut Vec<u8>, n: usize) -> Result<(), EncodeError> {
    if n > MAX_DEVICES {
        return Err(EncodeError("device list"));
    }
    o.put_u32(n as u32);
    Ok(())
}

fn put_audio_format(o: &mut Vec<u8>, f: &Option<AudioFormat>) {
    match f {
        None => o.put_u8(0),
        Some(f) => {
            o.put_u8(1);
            o.put_u32(f.rate);
            o.put_u16(f.channels);
            o.put_u16(f.sample_format);
            o.put_u8(u8::from(f.big_endian));
        }
    }
}

fn put_entry(o: &mut Vec<u8>, d: &DeviceEntry) -> Result<(), EncodeError> {
    put_str(o, &d.vm, MAX_NAME, "vm")?;
    put_str(o, &d.device, MAX_NAME, "device")?;
    o.put_u8(match d.kind {
        DeviceKind::Console => 0,
        DeviceKind::Audio => 1,
    });
    o.put_u8(match d.state {
        DeviceState::Attached => 0,
        DeviceState::Gone => 1,
        DeviceState::Poisoned => 2,
    });
    put_audio_format(o, &d.audio);
    o.put_u64(d.bytes);
    o.put_u64(d.periods);
    o.put_u64(d.journal_start);
    o.put_u64(d.journal_end);
    o.put_u32(d.subscribers);
    Ok(())
}

/// Reads fields from a payload; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue(what)),
        }
    }
    fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(DecodeError::FieldTooLong(what));
        }
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8(what))
    }
    fn name(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let s = self.str(MAX_NAME, what)?;
        if s.is_empty() {
            return Err(DecodeError::InvalidValue(what));
        }
        Ok(s)
    }
    fn bytes(&mut self, max: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::FieldTooLong(what));
        }
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        // Each entry takes far more than one byte: a count beyond the remaining payload
        // cannot be honest, and must not size an allocation.
        if n > MAX_DEVICES || n > self.0.len() {
            return Err(DecodeError::FieldTooLong("device list"));
        }
        Ok(n)
    }
    fn audio_format(&mut self) -> Result<Option<AudioFormat>, DecodeError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(AudioFormat {
                rate: self.u32()?,
                channels: self.u16()?,
                sample_format: self.u16()?,
                big_endian: self.bool("big_endian")?,
            }),
            _ => return Err(DecodeError::InvalidValue("audio format")),
        })
    }
    fn entry(&mut self) -> Result<DeviceEntry, DecodeError> {
        Ok(DeviceEntry {
            vm: self.name("vm")?,
            device: self.name("device")?,
            kind: match self.u8()? {
                0 => DeviceKind::Console,
                1 => DeviceKind::Audio,
                _ => return Err(DecodeError::InvalidValue("kind")),
            },
            state: match self.u8()? {
                0 => DeviceState::Attached,
                1 => DeviceState::Gone,
                2 => DeviceState::Poisoned,
                _ => return Err(DecodeError::InvalidValue("state")),
            },
            audio: self.audio_format()?,
            bytes: self.u64()?,
            periods: self.u64()?,
            journal_start: self.u64()?,
            journal_end: self.u64()?,
            subscribers: self.u32()?,
        })
    }
}

/// Accumulates received bytes and yields whole frames. Holds at most one maximum-sized
/// frame plus one read's worth of bytes.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 << 10 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        match Frame::decode(&self.buf[self.start..])? {
            Some((f, used)) => {
                self.start += used;
                Ok(Some(f))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Encodes an audio datagram: attachment stream id, then the encoded audio frame.
pub fn encode_datagram(stream_id: u64, audio: &AudioData) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::with_capacity(8 + HEADER_LEN + 32 + audio.pcm.len());
    v.put_u64(stream_id);
    Frame::Audio(audio.clone()).encode(&mut v)?;
    Ok(v)
}

/// Decodes an audio datagram into its stream id and period.
pub fn decode_datagram(d: &[u8]) -> Result<(u64, AudioData), DecodeError> {
    let r = &mut Reader(d);
    let id = r.u64()?;
    match Frame::decode(r.0)? {
        Some((Frame::Audio(a), _)) => Ok((id, a)),
        Some(_) => Err(DecodeError::InvalidValue("datagram frame")),
        None => Err(DecodeError::UnexpectedEnd),
    }
}

/// The body of the codec fuzz target (`fuzz/fuzz_targets/wire_decode.rs`), also run by a plain
/// test over the seed corpus: decoding arbitrary bytes never panics, and whatever decodes
/// encodes back to a frame that decodes to the same value.
pub fn fuzz_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest) {
        assert!(used >= HEADER_LEN && used <= rest.len());
        let bytes = frame.to_bytes().expect("a decoded frame re-encodes");
        let (again, n) = Frame::decode(&bytes)
            .expect("re-encoded frame decodes")
            .expect("re-encoded frame is complete");
        assert_eq!(n, bytes.len());
        assert_eq!(again, frame);
        rest = &rest[used..];
    }
    let mut fb = FrameBuffer::new();
    for piece in data.chunks(7) {
        fb.push(piece);
        while let Ok(Some(_)) = fb.next_frame() {}
    }
    let _ = decode_datagram(data);
}
