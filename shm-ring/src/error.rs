//! Errors of the shared-memory layer.

use std::io;

/// Why a ring cannot be created, mapped or used.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A system call (memfd, mmap, eventfd, socket) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The requested ring size is unusable.
    #[error("ring capacity {0} is invalid: it must be a power of two between 4 KiB and 1 GiB")]
    BadCapacity(u64),
    /// A region handed over by the peer does not hold a valid ring.
    #[error("shared ring rejected: {0}")]
    BadRegion(&'static str),
    /// A region handed over by the peer has a size no ring has (checked before mapping).
    #[error(
        "shared ring rejected: the region is {0} bytes, but a ring is a 256-byte header plus a \
         power of two between 4 KiB and 1 GiB"
    )]
    RegionSize(u64),
    /// The peer's ring has another layout version than this side's.
    #[error(
        "shared ring rejected: it has ring layout version {found}, this side uses version \
         {ours}: {}",
        upgrade_hint(*found, *ours)
    )]
    LayoutVersion {
        /// The version in the peer's ring.
        found: u32,
        /// This side's version.
        ours: u32,
    },
    /// The peer's ring relies on membarrier, which this process cannot use.
    #[error(
        "shared ring rejected: its creator skips the hot-path fence and relies on \
         membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which this process cannot use (a kernel \
         older than 4.16, or a seccomp filter that denies it): allow membarrier here, or run \
         the creator with SHM_RING_FENCE=seqcst"
    )]
    FenceUnsupported,
    /// A descriptor handed over as a doorbell is not an eventfd.
    #[error("doorbell rejected: the descriptor is {0}, not an eventfd")]
    NotAnEventfd(String),
    /// The peer broke the ring protocol; the ring is no longer used.
    #[error("ring poisoned: {0}")]
    Poisoned(Poison),
    /// A registration message was malformed.
    #[error("bad registration message: {0}")]
    BadMessage(&'static str),
}

/// Which side to upgrade when the two speak different ring layouts.
fn upgrade_hint(found: u32, ours: u32) -> &'static str {
    if found < ours {
        "the peer is older; upgrade it (the ringcast QEMU plugin or ringcastd) to this side's \
         release"
    } else {
        "this program is older; upgrade it to the peer's release (the ringcast QEMU plugin and \
         ringcastd must come from the same release)"
    }
}

impl RingError {
    pub(crate) fn io(what: &'static str, source: impl Into<io::Error>) -> Self {
        RingError::Io {
            what,
            source: source.into(),
        }
    }
}

/// How the peer broke the ring protocol. Once a side sees one of these, it stops using the
/// ring for good: a peer that wrote garbage once cannot be trusted to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Poison {
    /// A position moved backwards.
    #[error("a position moved backwards")]
    PositionWentBack,
    /// A position moved further than the capacity allows.
    #[error("a position moved past the ring's capacity")]
    PositionPastCapacity,
    /// The producer's discard floor is above every position it published: it would make
    /// this side skip, and count as lost, bytes that were never written.
    #[error(
        "the producer gave up bytes past its own write position (a discard floor no honest \
         producer sets)"
    )]
    FloorPastWrite,
    /// A record header announced an impossible length.
    #[error("a record header has an impossible length")]
    BadRecordLength,
    /// The peer kept changing a shared word without making progress, so that an update of
    /// ours failed again and again (an honest peer makes it fail only by progressing).
    #[error("the peer kept changing a shared position word without making progress")]
    PeerInterference,
    /// This side consumed more bytes than its last peek returned (a bug of the caller):
    /// the ring is stopped rather than handing back slots whose bytes were never stored.
    #[error("consumed more bytes than the last peek returned")]
    ConsumedUnpeeked,
}

impl From<Poison> for RingError {
    fn from(p: Poison) -> Self {
        RingError::Poisoned(p)
    }
}
