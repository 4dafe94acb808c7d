//! The byte ring: a single-producer/single-consumer byte stream in shared memory.
//!
//! # Protocol
//!
//! * `write_pos` is advanced only by the producer, `read_pos` only by the consumer, except
//!   in flight-recorder mode, where the producer (which then has no consumer to wait for)
//!   pushes `read_pos` forward to discard the oldest bytes. A consumer that is present
//!   anyway notices: its compare-and-swap on `read_pos` fails, it throws away what it copied
//!   and reports the exact number of bytes lost.
//! * Positions never wrap; `write - read <= capacity` always holds.
//! * Doorbell suppression: before it sleeps, the consumer raises bit 63 in `write_pos` with
//!   a compare-and-swap that succeeds only while the ring is empty. The producer publishes
//!   with a `swap`, which returns the old word: if the bit was set, the producer rings the
//!   doorbell. Both are read-modify-writes of one atomic, so one of them always sees the
//!   other: a wakeup cannot be lost, and a busy stream costs no syscall. The "space
//!   available" direction is the mirror image on `read_pos`.
//! * Each side keeps its own copy of its position and validates the peer's: a position
//!   that goes back, or runs past the capacity, poisons the ring for good.

use std::sync::Arc;

use crate::error::{Poison, RingError};
use crate::layout::{RingKind, POS_MASK};
use crate::memory::RingMemory;
use crate::sync::Ordering::Acquire;

mod consumer;
#[cfg(all(test, not(loom)))]
mod interference_tests;
mod producer;

pub use consumer::ByteConsumer;
pub use producer::ByteProducer;

/// What a producer's write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// Bytes of the caller's buffer that were taken (in flight-recorder mode: all of them).
    pub bytes: usize,
    /// Old bytes discarded to make room (flight-recorder mode only).
    pub dropped: u64,
    /// The consumer is asleep: ring its doorbell.
    pub wake_consumer: bool,
}

/// What a consumer's read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Read {
    /// Bytes copied into the caller's buffer.
    pub bytes: usize,
    /// Bytes the producer discarded before the first byte returned (flight-recorder mode).
    pub lost: u64,
    /// Position of the first byte returned (absolute, from the ring's creation).
    pub position: u64,
    /// The producer waits for space: ring its doorbell.
    pub wake_producer: bool,
}

/// What [`ByteConsumer::consume`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// The bytes are consumed; ring the producer's doorbell if `wake_producer`.
    Done {
        /// The producer waits for space.
        wake_producer: bool,
    },
    /// The producer overwrote the peeked bytes meanwhile (flight-recorder mode): the copy
    /// is void, the position jumped by `lost` bytes; peek again.
    Overwritten {
        /// Bytes discarded by the producer.
        lost: u64,
    },
}

/// Failed compare-and-swap attempts (or unstable snapshots) a call accepts before it
/// blames the peer. An honest peer can make one of our attempts fail only by making
/// progress itself (releasing, publishing, raising its flag once), which ends the loop on
/// the next look; a peer that keeps changing the word without progress would otherwise
/// keep us spinning (inside QEMU: a vCPU with the big lock held).
pub(crate) const MAX_ATTEMPTS: u32 = 32;

/// Checks the ring's kind and takes a stable snapshot of both positions for a side taking
/// its role: returns (capacity, write, read). A side may (re)attach to a ring in use, e.g. a
/// restarted daemon, while a flight-recording producer moves both positions: the read
/// position is loaded before and after the write position, and the pair is used only when
/// both loads agree (then the write position was read while the read position held still).
///
/// A flight-recording producer moves read_pos before it publishes write_pos, so a consumer
/// may find the read position ahead of the write position for a moment: it starts there
/// and finds nothing to read until the producer's publish catches up. A producer taking its
/// role finds no other producer at work, so for it that is a broken ring.
pub(crate) fn settled_positions(
    mem: &RingMemory,
    kind: RingKind,
    consumer: bool,
) -> Result<(u64, u64, u64), RingError> {
    if mem.geometry().kind != kind {
        return Err(RingError::BadRegion("ring kind is not the expected one"));
    }
    let cap = mem.geometry().capacity;
    let mut last = Poison::PeerInterference;
    for _ in 0..MAX_ATTEMPTS {
        // Acquire: pairs with the peer's last release, so the bytes below the write
        // position are visible and the slots below the read position are free.
        let r = mem.read_pos().load(Acquire) & POS_MASK;
        let w = mem.write_pos().load(Acquire) & POS_MASK;
        let r2 = mem.read_pos().load(Acquire) & POS_MASK;
        if r != r2 {
            last = Poison::PeerInterference;
            continue;
        }
        if r > w {
            if consumer {
                return Ok((cap, w, r));
            }
            last = Poison::PositionWentBack;
            continue;
        }
        if w - r > cap {
            return Err(Poison::PositionPastCapacity.into());
        }
        return Ok((cap, w, r));
    }
    Err(last.into())
}

/// Creates a producer and a consumer over one ring (both ends in this process).
pub fn byte_ring_pair(mem: RingMemory) -> Result<(ByteProducer, ByteConsumer), RingError> {
    let mem = Arc::new(mem);
    Ok((ByteProducer::new(mem.clone())?, ByteConsumer::new(mem)?))
}
