//! ringcast's protocol over QUIC: the glue between the sans-IO [`protocol`] crate and
//! quinn/rustls.
//!
//! - [`tls`]: identities generated on first use, fingerprints, trust-on-first-use known
//!   hosts or a CA bundle, quinn/rustls configurations (TLS 1.3 only, ring provider).
//! - [`authz`]: the server's `authorized_clients` file.
//! - [`congestion`]: the default congestion controller (BBR that does not read random loss
//!   as congestion).
//! - [`endpoint`]: the server endpoint's stateless reset key (kept across restarts) and
//!   connection ids.
//! - [`io`]: the thin async shell that moves frames over quinn streams.
//! - [`QuicErrorCode`]: the error table's codes as QUIC application error codes.
//! - `codec`, `errors`, `proto`, `table`: the [`protocol`] crate's modules, re-exported so
//!   that one import path serves the server and the client.
//!
//! What it deliberately does not do: serve devices (ringcastd does, with the protocol
//! crate's rules) or run terminals, files and sound cards (the `client` crate does).
#![forbid(unsafe_code)]

pub mod authz;
pub mod congestion;
pub mod endpoint;
pub mod io;
pub mod local;
pub mod tls;

pub use protocol::{codec, errors, proto, rules, table, ErrorCode};

/// The error table's codes as QUIC application error codes (connection and stream close
/// codes).
pub trait QuicErrorCode: Sized {
    /// The code as a QUIC varint.
    fn varint(self) -> quinn::VarInt;
    /// The code of a QUIC application error code, if it is one of ours.
    fn from_varint(v: quinn::VarInt) -> Option<Self>;
}

impl QuicErrorCode for ErrorCode {
    fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(u32::from(self.code()))
    }

    fn from_varint(v: quinn::VarInt) -> Option<ErrorCode> {
        ErrorCode::from_wire(v.into_inner())
    }
}

use std::path::PathBuf;

/// What went wrong in transport-quic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate could not be generated.
    #[error("cannot generate a certificate: {0}")]
    Cert(#[source] rcgen::Error),
    /// A PEM file could not be read.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// TLS refused the configuration or the peer.
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The authorization file has a bad line.
    #[error("{}:{line}: {msg}", path.display())]
    Authorization {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A protocol rule was broken or a setting is unusable.
    #[error("{0}")]
    Protocol(String),
    /// A frame could not be encoded.
    #[error("{0}")]
    Encode(codec::EncodeError),
    /// Writing a stream failed.
    #[error("{0}")]
    Write(#[source] quinn::WriteError),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_quic_varint() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_varint(c.varint()), Some(c));
        }
        assert_eq!(
            ErrorCode::from_varint(quinn::VarInt::from_u32(70_000)),
            None
        );
    }
}
