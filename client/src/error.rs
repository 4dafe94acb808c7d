//! What went wrong, from connection, stream and refusal errors.

use crate::*;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be resolved.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// TLS, identity or file setup failed.
    #[error(transparent)]
    Transport(#[from] transport_quic::Error),
    /// The server's identity differs from the pinned one.
    #[error("{0}")]
    HostKeyChanged(String),
    /// The server is not in the known-hosts file and the trust asks before pinning
    /// ([`Trust::KnownHostsAsk`](crate::Trust::KnownHostsAsk)).
    #[error("{host} is not a known host; its identity is {fingerprint}")]
    UnknownHost {
        /// `host:port`, the known-hosts key.
        host: String,
        /// The identity it presented.
        fingerprint: Fingerprint,
    },
    /// The connection could not be made or was lost.
    #[error("connection to {addr}: {reason}")]
    Connection {
        /// The server.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server refused a request or closed the connection with a code from the table.
    #[error("{}: {message}", code.map(|c| c.name()).unwrap_or("UNKNOWN_ERROR"))]
    Refused {
        /// The code, if it is in this version's table.
        code: Option<ErrorCode>,
        /// The server's explanation.
        message: String,
    },
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A local file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The error-table code, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused { code, .. } => *code,
            _ => None,
        }
    }
}

pub(crate) fn from_connection(addr: &str, e: quinn::ConnectionError) -> Error {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = ErrorCode::from_varint(c.error_code);
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            // The server's reason starts with the code's name, which Display adds again.
            let message = match code {
                Some(k) => reason
                    .strip_prefix(k.name())
                    .and_then(|r| r.strip_prefix(": "))
                    .map(str::to_owned)
                    .unwrap_or(reason),
                None => reason,
            };
            Error::Refused { code, message }
        }
        other => Error::Connection {
            addr: addr.to_owned(),
            reason: other.to_string(),
        },
    }
}

pub(crate) fn from_read(addr: &str, e: ReadFrameError) -> Error {
    match e {
        ReadFrameError::Read(quinn::ReadError::ConnectionLost(c)) => from_connection(addr, c),
        ReadFrameError::Read(quinn::ReadError::Reset(code)) => Error::Refused {
            code: ErrorCode::from_varint(code),
            message: "stream reset by the server".into(),
        },
        other => Error::Protocol(other.to_string()),
    }
}

pub(crate) fn from_write(addr: &str, e: transport_quic::Error) -> Error {
    match e {
        transport_quic::Error::Write(quinn::WriteError::ConnectionLost(c)) => {
            from_connection(addr, c)
        }
        transport_quic::Error::Write(quinn::WriteError::Stopped(code)) => Error::Refused {
            code: ErrorCode::from_varint(code),
            message: "stream stopped by the server".into(),
        },
        other => Error::Transport(other),
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::Refused { code, message } => Error::Refused {
                code: ErrorCode::from_code(code),
                message,
            },
            Refusal::Violation(m) => Error::Protocol(m),
        }
    }
}
