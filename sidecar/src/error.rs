//! The sidecar's errors.

use std::io;
use std::path::PathBuf;

/// What went wrong in the sidecar library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or socket concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The io_uring could not be set up or used.
    #[error("io_uring: {0} (is io_uring disabled by kernel.io_uring_disabled?)")]
    Uring(#[source] io::Error),
    /// A directory ringcastd keeps private (state, sockets) is not: another user owns it
    /// or others can write it.
    #[error("the {what} {} {reason}", path.display())]
    UnsafeDirectory {
        /// Which directory ("state directory", "socket directory").
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A journal directory's metadata names another device than the one it was opened for.
    #[error("the journal directory {} holds the journal of {owner}; it is not used for another device (move it away if that device is gone)", dir.display())]
    JournalOfAnother {
        /// The directory.
        dir: PathBuf,
        /// The device its metadata names.
        owner: String,
    },
    /// Another ringcastd already listens on the socket.
    #[error("another ringcastd already listens on {}; stop it or pass --socket", .0.display())]
    AlreadyRunning(PathBuf),
    /// The locally granted rules (`local_clients` in the state directory) are unusable.
    #[error("local grants: {0}")]
    Grants(String),
    /// No device with this name is known.
    #[error("no device named {0}")]
    NoSuchDevice(String),
    /// The operation needs a console device, or an audio device, and this is the other kind.
    #[error("device {0} is not a {1} device")]
    WrongKind(String, &'static str),
    /// Opus cannot carry this device's audio (no format yet, more than two channels, an
    /// unknown sample format): its subscribers get PCM.
    #[error("device {0} has no audio Opus can carry; ask for PCM")]
    NoOpus(String),
    /// The device's Opus encoder could not be started.
    #[error("device {0}: cannot encode Opus: {1}")]
    Opus(String, String),
    /// The guest's sound card has no capture voice: there is nothing to send audio to.
    #[error(
        "device {0} has no audio input: its sound card records nothing (use one that does, \
         such as AC97 or intel-hda with hda-duplex)"
    )]
    NoCapture(String),
    /// The device's QEMU is not connected (console input cannot be delivered).
    #[error("device {0} is not attached to a running QEMU")]
    NotAttached(String),
    /// The device's peer broke the ring protocol; the ring is no longer used.
    #[error("device {0}: ring poisoned: {1}")]
    Poisoned(String, shm_ring::Poison),
    /// The daemon was shut down.
    #[error("ringcastd was shut down")]
    Closed,
    /// A journal segment that should hold a subscriber's bytes cannot be read (deleted or
    /// truncated behind ringcastd's back); the subscription ends.
    #[error("device {device}: the journal segment {} holding offset {offset} cannot be read ({reason}); it was deleted or truncated outside ringcastd and the bytes it held are lost", path.display())]
    JournalUnreadable {
        /// The device.
        device: String,
        /// The first offset that could not be read.
        offset: u64,
        /// The segment file.
        path: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
    /// The stats query got no answer.
    #[error("cannot query ringcastd at {}: {source} (is it running?)", path.display())]
    Control {
        /// The control socket.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
