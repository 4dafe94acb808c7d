//! The values frames carry: modes, start points, device kinds and states, gap reasons,
//! audio formats, device and stats entries, audio periods, and the decode error.

use super::*;

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
    pub(super) fn to_u8(self) -> u8 {
        match self {
            Mode::Read => 0,
            Mode::Write => 1,
            Mode::Spy => 2,
        }
    }
    pub(super) fn from_u8(v: u8) -> Result<Self, DecodeError> {
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
pub(super) const STATS_EXTRA_COUNTERS: u8 = 1;

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
