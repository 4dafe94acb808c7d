//! ringcast client library: open a remote VM's console or audio output over one secure QUIC
//! connection to ringcastd, read and write it from a program.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::Error> {
//! use client::{ConsoleItem, Mode, Session, StartAt, Trust};
//! let trust = Trust::KnownHosts(client::default_known_hosts());
//! let session = Session::connect("vmhost:7878", client::default_identity()?, trust).await?;
//! let mut console = session.attach_console("vm1", "serial0", Mode::Write, StartAt::TailBytes(4096)).await?;
//! console.write(b"uname -a\r").await?;
//! while let Some(item) = console.next().await? {
//!     if let ConsoleItem::Chunk { bytes, .. } = item {
//!         print!("{}", String::from_utf8_lossy(&bytes));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it deliberately does not do: terminals, files and sound cards (the `ringcast` binary
//! does those); retries (a program decides when to reconnect, and resumes with
//! [`StartAt::Offset`] from [`ConsoleStream::offset`]).
#![forbid(unsafe_code)]
//!
//! Modules: [`session`] (connecting, listing, attaching, QMP), [`console`] and [`audio`]
//! (one attachment each), [`jitter`] and [`playout`] (received audio to samples to play:
//! the adaptive jitter buffer, PCM and Opus decoding with loss concealment and FEC), [`link`]
//! (is the link alive), [`chunk_writer`] (received console bytes to a file without a copy),
//! [`error`].

pub mod audio;
pub mod chunk_writer;
pub mod conceal;
pub mod console;
pub mod error;
pub mod jitter;
pub mod link;
pub mod mic;
pub mod playout;
pub mod session;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use transport_quic::codec::{decode_datagram, Frame, MAX_INPUT};
pub use transport_quic::codec::{
    AudioCodec, AudioData, AudioEncoding, AudioFormat, DeviceEntry, DeviceKind, DeviceState,
    GapReason, Mode, OpusParams, StartAt, StatsEntry, OPUS_RATE,
};
use transport_quic::io::{send_frame, FrameReader, ReadFrameError};
use transport_quic::rules::{self, Refusal};
pub use transport_quic::tls::{Fingerprint, Identity, Trust};
pub use transport_quic::ErrorCode;
use transport_quic::QuicErrorCode;

pub use audio::AudioStream;
pub use chunk_writer::ChunkWriter;
pub use console::{ConsoleItem, ConsoleStream};
pub use error::Error;
use error::*;
pub use link::{LinkEvent, LinkMonitor, LinkState, LINK_QUIET};
pub use mic::MicStream;
pub use session::Session;

/// Default port of ringcastd's QUIC server.
pub const DEFAULT_PORT: u16 = 7878;

/// `~/.config/ringcast/known_hosts`.
pub fn default_known_hosts() -> PathBuf {
    transport_quic::tls::config_dir().join("known_hosts")
}

/// The client identity in `~/.config/ringcast/` (`client.crt`, `client.key`) if one was
/// created with `ringcast identity new`; without one the client connects anonymously,
/// which a loopback ringcastd without an authorization file accepts.
pub fn default_identity() -> Result<Option<Identity>, Error> {
    let dir = transport_quic::tls::config_dir();
    let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
    if crt.exists() && key.exists() {
        Ok(Some(Identity::load(&crt, &key)?))
    } else {
        Ok(None)
    }
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<AudioData>>>>;
