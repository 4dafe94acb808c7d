//! The client's side of the rules: what it sends first and what it accepts back.

use bytes::Bytes;

use super::Refusal;
use crate::codec::{AudioData, AudioEncoding, AudioFormat, DeviceKind, Frame, GapReason};
use crate::proto;
use crate::ErrorCode;

/// The control stream's first frame.
pub fn hello(software: impl Into<String>) -> Frame {
    Frame::Hello {
        min_version: proto::MIN_VERSION,
        max_version: proto::MAX_VERSION,
        software: software.into(),
    }
}

/// The server's answer to the Hello: the version and its software, or why not.
pub fn on_welcome(frame: Option<Frame>) -> Result<(u16, String), Refusal> {
    match frame {
        Some(Frame::Welcome { version, software })
            if (proto::MIN_VERSION..=proto::MAX_VERSION).contains(&version) =>
        {
            Ok((version, software))
        }
        Some(Frame::Welcome { version, .. }) => Err(Refusal::violation(format!(
            "the server chose version {version}, which this client does not speak ({}..={})",
            proto::MIN_VERSION,
            proto::MAX_VERSION
        ))),
        Some(f) => Err(Refusal::from_error_frame(&f)
            .unwrap_or_else(|| Refusal::violation(format!("expected Welcome, got {}", f.name())))),
        None => Err(Refusal::violation("the server closed the control stream")),
    }
}

/// A reply on the control stream: anything but an `Error` (which becomes the refusal).
pub fn on_reply(frame: Option<Frame>) -> Result<Frame, Refusal> {
    match frame {
        Some(f) => match Refusal::from_error_frame(&f) {
            Some(r) => Err(r),
            None => Ok(f),
        },
        None => Err(Refusal::violation("the server closed the control stream")),
    }
}

/// What `Attached` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The offset of the first console item (0 for audio).
    pub offset: u64,
    /// The audio format, if the device has one.
    pub audio: Option<AudioFormat>,
    /// What the audio frames carry (PCM for a console).
    pub encoding: AudioEncoding,
}

/// The answer to an `Attach` for a device expected to be of `kind` (`what` names it).
pub fn on_attached(
    what: &str,
    kind: DeviceKind,
    frame: Option<Frame>,
) -> Result<Attached, Refusal> {
    match frame {
        Some(Frame::Attached {
            kind: k,
            offset,
            audio,
            encoding,
        }) => {
            if k != kind {
                let is = match kind {
                    DeviceKind::Console => "a console",
                    DeviceKind::Audio => "an audio device",
                };
                return Err(Refusal::refused(
                    ErrorCode::WrongKind,
                    format!("{what} is not {is}"),
                ));
            }
            Ok(Attached {
                offset,
                audio,
                encoding,
            })
        }
        Some(f) => Err(Refusal::from_error_frame(&f)
            .unwrap_or_else(|| Refusal::violation(format!("expected Attached, got {}", f.name())))),
        None => Err(Refusal::violation("the server ended the attachment")),
    }
}

/// What a console stream yields, in offset order without holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleItem {
    /// Output bytes at an absolute journal offset.
    Chunk {
        /// Journal offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Bytes the server cannot deliver.
    Gap {
        /// First missing offset.
        offset: u64,
        /// Bytes missing.
        len: u64,
        /// Why.
        reason: GapReason,
    },
}

impl ConsoleItem {
    /// The offset after the item.
    pub fn end(&self) -> u64 {
        match self {
            ConsoleItem::Chunk { offset, bytes } => offset + bytes.len() as u64,
            ConsoleItem::Gap { offset, len, .. } => offset + len,
        }
    }
}

/// Report reading progress after this many bytes, so the server keeps sending (it allows
/// a bounded amount unreported per stream, far more than this).
pub const REPORT_EVERY: u64 = 16 << 10;

/// A console attachment seen from the client: items must follow each other without
/// holes, and reading progress is reported every [`REPORT_EVERY`] bytes.
#[derive(Debug, Clone)]
pub struct ConsoleReader {
    offset: u64,
    reported: u64,
}

impl ConsoleReader {
    /// A stream whose first item is at `offset` (from `Attached`).
    pub fn new(offset: u64) -> Self {
        ConsoleReader {
            offset,
            reported: offset,
        }
    }

    /// The offset of the next item.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// A frame from the server (`None`: it ended the attachment, `Ok(None)`). An item
    /// comes with the `Consumed` report to send, if one is due.
    pub fn on_frame(
        &mut self,
        frame: Option<Frame>,
    ) -> Result<Option<(ConsoleItem, Option<Frame>)>, Refusal> {
        let item = match frame {
            Some(Frame::Data { offset, bytes }) => ConsoleItem::Chunk { offset, bytes },
            Some(Frame::Gap {
                offset,
                len,
                reason,
            }) => ConsoleItem::Gap {
                offset,
                len,
                reason,
            },
            Some(f) => {
                return Err(Refusal::from_error_frame(&f).unwrap_or_else(|| {
                    Refusal::violation(format!("{} on a console stream", f.name()))
                }))
            }
            None => return Ok(None),
        };
        let start = match &item {
            ConsoleItem::Chunk { offset, .. } | ConsoleItem::Gap { offset, .. } => *offset,
        };
        if start != self.offset {
            return Err(Refusal::violation(format!(
                "expected offset {}, got {start}",
                self.offset
            )));
        }
        let end = match &item {
            ConsoleItem::Chunk { offset, bytes } => offset.checked_add(bytes.len() as u64),
            ConsoleItem::Gap { offset, len, .. } => offset.checked_add(*len),
        }
        .ok_or_else(|| Refusal::violation(format!("an item at {start} ends past 2^64")))?;
        self.offset = end;
        let report = (self.offset - self.reported >= REPORT_EVERY).then(|| {
            self.reported = self.offset;
            Frame::Consumed {
                offset: self.offset,
            }
        });
        Ok(Some((item, report)))
    }
}

/// A frame on an audio attachment's stream: a period, the end (`Ok(None)`), or why not.
pub fn audio_frame(frame: Option<Frame>) -> Result<Option<AudioData>, Refusal> {
    match frame {
        Some(Frame::Audio(a)) => Ok(Some(a)),
        Some(f) => Err(Refusal::from_error_frame(&f)
            .unwrap_or_else(|| Refusal::violation(format!("{} on an audio stream", f.name())))),
        None => Ok(None),
    }
}

/// What the server sent on a microphone attachment after `Attached` (`None`: it finished
/// the stream). A server sends nothing there but an error at the end; `Audio` means a
/// server older than the microphone, which took the attachment for a listener.
pub fn mic_frame(what: &str, frame: Option<Frame>) -> Result<(), Refusal> {
    match frame {
        None => Ok(()),
        Some(Frame::Audio(_)) => Err(Refusal::refused(
            ErrorCode::ReadOnly,
            format!(
                "the server sends {what}'s audio instead of taking it: it is older than \
                 `ringcast mic`; upgrade ringcastd"
            ),
        )),
        Some(f) => Err(Refusal::from_error_frame(&f)
            .unwrap_or_else(|| Refusal::violation(format!("{} on a microphone stream", f.name())))),
    }
}
