//! The connection and stream rules as state machines with no I/O and no clock: each takes
//! what arrived (a frame, the end of a stream, the current time) and returns what to do.
//! `ringcastd` (`sidecar::net`) and the client library drive them over quinn streams; the
//! rules are tested here directly, every refusal included (`tests/rules.rs`).
//!
//! - [`server`]: the control stream (Hello, then list and stats requests), the first frame
//!   of an attachment stream, the frames a console or an audio attachment may carry, the
//!   console's in-flight credit.
//! - [`credit`]: how fast a console's credit comes back (return time, delivery rate).
//! - [`audio`]: the codec of an audio attachment: the client's offer (`auto`), the
//!   server's choice, the client's check of it.
//! - [`client`]: the Welcome the client expects, the Attached answer, the console items in
//!   offset order with the `Consumed` reports they trigger, audio periods.
//! - [`Rights`] and [`authorize_attach`]: who may attach to what, in which mode, from where
//!   (authorization before existence: a name the client has no right on looks missing).
//! - [`WriteLocks`]: one writer per console.

pub mod audio;
pub mod client;
pub mod credit;
mod rights;
pub mod server;
mod writers;

pub use rights::{authorize_attach, DeviceFacts, Rights};
pub use writers::WriteLocks;

use crate::codec::Frame;
use crate::ErrorCode;

/// How a server-side stream ends when a rule says it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Finish the stream cleanly: the client detached or finished its side.
    Finish,
    /// Answer an [`Frame::Error`] on this stream and finish it; the connection lives on.
    Refuse {
        /// The error-table code.
        code: ErrorCode,
        /// For the person on the other side.
        message: String,
    },
    /// Answer an [`Frame::Error`] on this stream, then close the connection with the same
    /// code (the peer should see the message before the close).
    RefuseAndClose {
        /// The error-table code.
        code: ErrorCode,
        /// For the person on the other side.
        message: String,
    },
    /// Close the whole connection: the peer broke the protocol or a limit.
    Close {
        /// The error-table code.
        code: ErrorCode,
        /// The close reason.
        reason: String,
    },
}

impl End {
    pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> End {
        End::Refuse {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn close(code: ErrorCode, reason: impl Into<String>) -> End {
        End::Close {
            code,
            reason: reason.into(),
        }
    }

    /// The error-table code, if the stream does not end cleanly.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            End::Finish => None,
            End::Refuse { code, .. }
            | End::RefuseAndClose { code, .. }
            | End::Close { code, .. } => Some(*code),
        }
    }
}

/// Why the client gives up on a stream or a connection, by the client-side rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server refused with an [`Frame::Error`] (its code as sent: unknown codes of a
    /// newer server are kept).
    Refused {
        /// The error-table code as sent.
        code: u16,
        /// The server's explanation.
        message: String,
    },
    /// The server broke the protocol.
    Violation(String),
}

impl Refusal {
    pub(crate) fn violation(message: impl Into<String>) -> Refusal {
        Refusal::Violation(message.into())
    }

    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal::Refused {
            code: code.code(),
            message: message.into(),
        }
    }

    /// The refusal an [`Frame::Error`] carries, or `None` for any other frame.
    pub(crate) fn from_error_frame(frame: &Frame) -> Option<Refusal> {
        match frame {
            Frame::Error { code, message, .. } => Some(Refusal::Refused {
                code: *code,
                message: message.clone(),
            }),
            _ => None,
        }
    }
}
