//! The frame table: every frame of the protocol and its type number.

use super::*;

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
        /// Audio: the codecs the client can decode, in its order of preference (see
        /// [`encoding`]); empty: PCM only, as every client before codecs existed.
        codecs: Vec<AudioCodec>,
    },
    /// Server → client: the attachment is live.
    Attached {
        /// Console or audio.
        kind: DeviceKind,
        /// The offset the first console item will have.
        offset: u64,
        /// Audio format of the device.
        audio: Option<AudioFormat>,
        /// Audio: what the `Audio` frames carry, chosen among the offered codecs.
        encoding: AudioEncoding,
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

pub(super) mod ty {
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
}
