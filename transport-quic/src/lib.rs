//! ringcast's wire protocol and its QUIC/TLS setup.
//!
//! - [`codec`]: the protocol as values and bytes, with no I/O and no clock (frames, version
//!   handshake rules, limits). Fuzzed (`fuzz/`), property-tested.
//! - [`errors`]: the one table of application error codes ([`ErrorCode`]).
//! - [`proto`]: negotiation, the per-client request budget and the console in-flight
//!   credit, as plain functions of their inputs (time is an argument).
//! - [`tls`]: identities generated on first use, fingerprints, trust-on-first-use known
//!   hosts or a CA bundle, quinn/rustls configurations (TLS 1.3 only, ring provider).
//! - [`authz`]: the server's `authorized_clients` file.
//! - [`io`]: the thin async shell that moves frames over quinn streams.
//! - [`table`]: the one rendering of the stats and device tables, shared by `ringcastd
//!   stats` and `ringcast stats`/`list` so their columns cannot drift apart.
//!
//! What it deliberately does not do: serve devices (ringcastd does, with [`proto`] rules)
//! or run terminals, files and sound cards (the `client` crate does).
//!
//! ```
//! use transport_quic::codec::{Frame, StartAt, Mode};
//! let attach = Frame::Attach {
//!     vm: "vm1".into(), device: "serial0".into(), mode: Mode::Spy,
//!     start: StartAt::TailBytes(4096), datagrams: false,
//! };
//! let bytes = attach.to_bytes().unwrap();
//! let (decoded, used) = Frame::decode(&bytes).unwrap().unwrap();
//! assert_eq!((decoded, used), (attach, bytes.len()));
//! ```
#![forbid(unsafe_code)]

pub mod authz;
pub mod codec;
pub mod errors;
pub mod io;
pub mod proto;
pub mod table;
pub mod tls;

pub use errors::ErrorCode;

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
    /// Listening beyond loopback with nobody deciding who may connect.
    #[error(
        "refusing to listen on {listen} without an authorization file.\n\
         Beyond loopback, ringcastd must know which client certificates may use which devices.\n\
         1. On each client: `ringcast identity new` and `ringcast identity show` (prints SHA256:...).\n\
         2. On this host, put one line per client in {}:\n   \
            SHA256:<fingerprint>  vm1/*,vm2/serial0  read,write,spy\n\
         3. Start ringcastd again (or pass --authorized-clients FILE).\n\
         To serve only this machine, listen on 127.0.0.1 or [::1].",
        path.display()
    )]
    NoAuthorization {
        /// The address asked for.
        listen: std::net::SocketAddr,
        /// Where the file was looked for.
        path: PathBuf,
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
