//! The one table of ringcast application error codes.
//!
//! The same numbers travel in [`crate::codec::Frame::Error`] frames, in QUIC
//! `CONNECTION_CLOSE` / `RESET_STREAM` / `STOP_SENDING` application codes, and in the client
//! library's errors, so a code, its name and its meaning cannot drift apart.

macro_rules! error_table {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $meaning:literal; )*) => {
        /// A ringcast application error code (see the table in this module's source).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The number on the wire.
            pub const fn code(self) -> u16 {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The upper-case name (as in logs and documentation).
            pub const fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// What it means, in a sentence a person can act on.
            pub const fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)* }
            }

            /// The code with this number, if the table has one.
            pub const fn from_code(code: u16) -> Option<ErrorCode> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_table! {
    /// Closed on purpose.
    NoError = 0, "NO_ERROR", "closed normally";
    /// The peer broke the protocol's rules (frame on the wrong stream, out of order).
    ProtocolViolation = 1, "PROTOCOL_VIOLATION", "the peer sent a frame that is not allowed at this point";
    /// A frame's length exceeded the maximum frame size.
    FrameTooLarge = 2, "FRAME_TOO_LARGE", "a frame is longer than the maximum frame size";
    /// A frame type this version does not know.
    UnknownFrame = 3, "UNKNOWN_FRAME", "a frame type this protocol version does not define";
    /// A frame whose fields could not be decoded.
    MalformedFrame = 4, "MALFORMED_FRAME", "a frame's fields are truncated or invalid";
    /// No protocol version in common.
    UnsupportedVersion = 5, "UNSUPPORTED_VERSION", "client and server share no protocol version; upgrade the older side";
    /// The client identity has no right for this.
    NotAuthorized = 6, "NOT_AUTHORIZED", "this client identity has no such right; the server's admin grants rights (ringcastd authorize, or its authorized_clients)";
    /// No device with this name.
    NoSuchDevice = 7, "NO_SUCH_DEVICE", "no device with this name that this client may use; `ringcast list` shows them";
    /// Console operation on audio or the reverse.
    WrongKind = 8, "WRONG_KIND", "the device is of the other kind (console vs audio)";
    /// Another client holds the console's write lock.
    WriterBusy = 9, "WRITER_BUSY", "another client is attached to this console for writing; attach with --spy or wait";
    /// The device's QEMU is not running, so input cannot be delivered.
    NotAttached = 10, "DEVICE_NOT_ATTACHED", "the device's QEMU is not connected to ringcastd";
    /// Too many requests.
    RateLimited = 11, "RATE_LIMITED", "the client sent requests faster than the server's per-client limit";
    /// Too many attached devices.
    TooManyStreams = 12, "TOO_MANY_STREAMS", "the client has more devices attached than the server's per-client limit";
    /// The server is stopping.
    ShuttingDown = 13, "SHUTTING_DOWN", "ringcastd is shutting down";
    /// Something failed inside the server.
    Internal = 14, "INTERNAL_ERROR", "the server failed internally; see its log";
    /// Input sent on a read or spy attachment.
    ReadOnly = 15, "READ_ONLY", "input was sent on an attachment opened read-only (read or spy)";
    /// The server already has as many connections as it allows.
    TooManyConnections = 16, "TOO_MANY_CONNECTIONS", "the server has as many connections as it allows, in total or from this client identity";
}

impl ErrorCode {
    /// The code of a QUIC application error code (a varint's value), if it is one of ours.
    pub fn from_wire(v: u64) -> Option<ErrorCode> {
        u16::try_from(v).ok().and_then(ErrorCode::from_code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(codes.insert(c.code()), "duplicate code {}", c.code());
            assert!(names.insert(c.name()), "duplicate name {}", c.name());
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            assert_eq!(ErrorCode::from_wire(u64::from(c.code())), Some(c));
            assert!(!c.meaning().is_empty());
        }
        assert_eq!(ErrorCode::from_code(9999), None);
        assert_eq!(ErrorCode::from_wire(1 << 20), None);
    }
}
