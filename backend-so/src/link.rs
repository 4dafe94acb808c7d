//! The connection to the daemon that consumes the rings, driven from QEMU's main loop.
//!
//! ```text
//!   Idle ──retry timer──► connect + send rings ──► AwaitingAck ──ack──► Attached
//!     ▲                          │ fails                │ refused / EOF     │ EOF / error
//!     └──────────────────────────┴──────────────────────┴───────────────────┘
//! ```
//!
//! Every step is a non-blocking syscall made from a main-loop callback. While not
//! Attached, the device runs without a consumer (console: flight recorder; audio: drop).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack};

use crate::host::Watch;

/// Where the link stands.
pub(crate) enum LinkState {
    /// No connection; the retry timer is armed.
    Idle,
    /// Rings sent, waiting for the daemon's answer.
    AwaitingAck { sock: OwnedFd, _watch: Watch },
    /// The daemon consumes the rings.
    Attached { sock: OwnedFd, _watch: Watch },
}

/// What reading the socket changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    Nothing,
    Attached,
    Refused(String),
    Lost(String),
}

/// Smallest and largest pause between connection attempts.
pub(crate) const RETRY_MIN_MS: u64 = 100;
pub(crate) const RETRY_MAX_MS: u64 = 2000;

/// Connects to `path` and sends the description with its rings. Returns the connected
/// socket, or why not (the caller retries later).
pub(crate) fn connect_and_send(
    path: &Path,
    message: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<OwnedFd, String> {
    let addr = SocketAddrUnix::new(path).map_err(|e| format!("bad socket path: {e}"))?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    match rustix::net::connect(&sock, &addr) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Err(format!("no daemon socket at {}", path.display())),
        Err(Errno::CONNREFUSED) => {
            return Err(format!("no daemon listening at {}", path.display()))
        }
        Err(e) => return Err(format!("connect {}: {e}", path.display())),
    }
    handover::send_with_fds(&sock, message, fds).map_err(|e| e.to_string())?;
    Ok(sock)
}

/// Reads what the daemon sent on a readable socket.
pub(crate) fn on_readable(state: &LinkState) -> LinkEvent {
    let (sock, awaiting) = match state {
        LinkState::Idle => return LinkEvent::Nothing,
        LinkState::AwaitingAck { sock, .. } => (sock, true),
        LinkState::Attached { sock, .. } => (sock, false),
    };
    match handover::recv_with_fds(sock) {
        Ok(None) => LinkEvent::Lost("the daemon closed the connection".into()),
        Ok(Some((msg, _fds))) => {
            if !awaiting {
                // Nothing is expected after the ack in this version; ignore extras.
                return LinkEvent::Nothing;
            }
            match Ack::decode(&msg) {
                Ok(a) if a.accepted => LinkEvent::Attached,
                Ok(a) => LinkEvent::Refused(a.message),
                Err(e) => LinkEvent::Refused(format!("unintelligible answer: {e}")),
            }
        }
        Err(shm_ring::RingError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::WouldBlock =>
        {
            LinkEvent::Nothing
        }
        Err(e) => LinkEvent::Lost(e.to_string()),
    }
}

/// The raw fd to watch for a connected state.
pub(crate) fn raw_fd(sock: &OwnedFd) -> i32 {
    sock.as_raw_fd()
}
