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
///
/// The watch is declared before the socket: fields drop in declaration order, so QEMU
/// stops watching the descriptor before it is closed (a closed number may be reused).
pub(crate) enum LinkState {
    /// No connection; the retry timer is armed.
    Idle,
    /// Rings sent, waiting for the daemon's answer.
    AwaitingAck { _watch: Watch, sock: OwnedFd },
    /// The daemon consumes the rings.
    Attached { _watch: Watch, sock: OwnedFd },
}

/// What reading the socket changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkEvent {
    Nothing,
    Attached,
    Refused(String),
    Lost(String),
}

/// Whether a daemon running as `peer` may have the rings: root, our own uid, or the uid
/// the `daemon-uid=` option names.
pub(crate) fn peer_allowed(peer: u32, own: u32, extra: Option<u32>) -> bool {
    peer == 0 || peer == own || extra == Some(peer)
}

/// Connects to `path` and, if the daemon behind it runs as an allowed uid (SO_PEERCRED),
/// sends the description with its rings. Returns the connected socket, or why not (the
/// caller retries later).
pub(crate) fn connect_and_send(
    path: &Path,
    daemon_uid: Option<u32>,
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
    // Checked before any ring leaves this process: whoever listens on the path gets
    // read access to the guest's console and audio.
    let cred = rustix::net::sockopt::socket_peercred(&sock)
        .map_err(|e| format!("cannot tell who listens at {}: {e}", path.display()))?;
    let own = rustix::process::getuid().as_raw();
    let peer = cred.uid.as_raw();
    if !peer_allowed(peer, own, daemon_uid) {
        let also = daemon_uid.map_or(String::new(), |u| format!(" or {u} (daemon-uid)"));
        return Err(format!(
            "refusing the daemon at {}: it runs as uid {peer}, not root, uid {own} (QEMU's \
             own){also}; set daemon-uid={peer} if it is trusted",
            path.display()
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_may_be_root_ourselves_or_the_named_uid_only() {
        assert!(peer_allowed(0, 1000, None));
        assert!(peer_allowed(1000, 1000, None));
        assert!(peer_allowed(991, 1000, Some(991)));
        assert!(!peer_allowed(991, 1000, None));
        assert!(!peer_allowed(992, 1000, Some(991)));
    }
}
