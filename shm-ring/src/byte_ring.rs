//! The byte ring: a single-producer/single-consumer byte stream in shared memory.
//!
//! # Protocol
//!
//! Every header word has one writer, and every write is a plain store: no locked
//! read-modify-write on the hot path (on x86 each one drains the store buffer and pulls the
//! peer's cache line in synchronously).
//!
//! | word              | writer   | meaning                                                |
//! |-------------------|----------|--------------------------------------------------------|
//! | `write_pos` (W)   | producer | bytes below it are written                             |
//! | `read_pos` (R)    | consumer | slots below it are free again                          |
//! | `discard_floor` (F)| producer | positions below it are given up (flight recorder)     |
//! | `consumer_sleeps` | consumer | bit 63: asleep on the data doorbell; a sleep count     |
//! | `producer_waits`  | producer | bit 63: waiting on the space doorbell; a wait count    |
//!
//! Positions are monotonic byte counts; `W - max(R, F) <= capacity` always holds. Each side
//! keeps its own copy of its position, validates the peer's (a position that goes back or
//! runs past the capacity poisons the ring for good) and re-reads the peer's position only
//! when its cached value says "full" or "empty".
//!
//! Why it is correct, as happens-before edges (bytes are copied with relaxed atomics, see
//! `shared`):
//!
//! 1. Publish. The producer copies bytes in, then stores W with Release; the consumer loads
//!    W with Acquire, then copies out. The Release/Acquire pair makes the copies in happen
//!    before the copies out of every position below the W it saw.
//! 2. Release. The consumer copies out, then stores R with Release; the producer loads R
//!    with Acquire before it overwrites slots below `R + capacity`. The consumer's copies
//!    out happen before those overwrites.
//! 3. Sleep. The consumer stores its flag, executes the heavy fence, loads W; the producer
//!    stores W, executes the light fence, loads the flag. The fences act as a pair of SeqCst
//!    fences (see `fence`), so at least one load sees the other side's store: the consumer
//!    sees the new bytes and does not sleep, or the producer sees the flag and reports
//!    `wake_consumer`. A wakeup cannot be lost. The waker rings once per sleep: the flag
//!    word carries the sleeper's sleep count, and the waker remembers the word it rang for.
//!    "Producer waits for space" is the mirror image (flag in `producer_waits`, loads of R).
//! 4. Overwrite (flight-recorder mode, used while no consumer is attached). The producer does
//!    not touch R. Before it reuses the slots of positions below `end - capacity` it stores F
//!    (Relaxed), executes a Release fence, then overwrites (Relaxed stores), then publishes
//!    W. The consumer copies out (Relaxed loads), executes an Acquire fence, then loads F. If
//!    any byte it loaded came from an overwrite, that byte's store follows the producer's
//!    Release fence and its load precedes the consumer's Acquire fence: the fences
//!    synchronize, and the F load returns the floor stored before that overwrite or a later
//!    one, which is above the overwritten byte's position. So a consumer that finds F at or
//!    below its position copied only the stream's own bytes; one that finds F above it jumps
//!    there, counts the skipped bytes as lost and copies again. Torn bytes are never
//!    delivered, and a peeked copy stays valid whatever the producer does afterwards.
//!    F is stored before W (which is Release), so a consumer that acquired W sees
//!    `F >= W - capacity`: that is how it explains a W more than a capacity ahead. And F
//!    never passes a published W: the producer overwrites at most a capacity at a time
//!    (a larger write goes in pieces), so each floor `end - capacity` is at most the W
//!    published before it, and F is stored with Release, so a consumer that acquired F and
//!    then loads W finds `W >= F`. A floor
//!    above W is a hostile producer's and poisons the ring ([`Poison::FloorPastWrite`]);
//!    it cannot make a consumer skip, and count as lost, bytes that were never written.
//!
//! Loops: only a consumer's copy is retried when the producer laps it (at most
//! [`MAX_ATTEMPTS`] times, then it returns what was lost and nothing else).

use std::sync::Arc;

use crate::error::{Poison, RingError};
use crate::layout::RingKind;
use crate::memory::{RingMemory, Word};
use crate::sync::Ordering::Acquire;

mod consumer;
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

/// What [`ByteConsumer::consume`] did: the bytes are consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    /// The producer waits for space: ring its doorbell.
    pub wake_producer: bool,
}

/// Copies a read makes while a flight-recording producer keeps overwriting them, before it
/// returns with only the loss counted (a bounded loop even against a hostile producer).
pub(crate) const MAX_ATTEMPTS: u32 = 32;

/// The positions a side finds when it takes its role.
pub(crate) struct Settled {
    pub cap: u64,
    pub write: u64,
    /// For a consumer: where it starts (the read position, or the floor if that is higher).
    /// For a producer: the consumer's position.
    pub read: u64,
    pub floor: u64,
}

/// Checks the ring's kind and reads the positions for a side taking its role. A side may
/// (re)attach to a ring in use, e.g. a restarted daemon while a flight-recording producer
/// moves W and F. No snapshot loop is needed: R has no writer but the consumer role being
/// taken (or the consumer, for a producer, which only moves it forwards and never past W),
/// and W is loaded (Acquire) before F, so F >= W - capacity (F is stored before W).
///
/// An honest producer raises F only to positions it has published, so F loaded (Acquire)
/// before a second load of W is at most that W. A floor above it is a hostile producer's:
/// the ring is refused, rather than starting past bytes that were never written.
/// How many times an attaching side takes W and F again when the producer moved between
/// the two loads (each try is two loads: an honest producer almost never moves twice).
const SNAPSHOT_TRIES: u32 = 64;

pub(crate) fn settled_positions(
    mem: &RingMemory,
    kind: RingKind,
    consumer: bool,
) -> Result<Settled, RingError> {
    if mem.geometry().kind != kind {
        return Err(RingError::BadRegion("ring kind is not the expected one"));
    }
    let cap = mem.geometry().capacity;
    // Acquire: pairs with the peer's last Release, so the bytes below W are visible and the
    // slots below R are free.
    // W, then F: F >= W - capacity. A floor above that W means the producer wrote on in
    // between (publishing up to the floor before raising it): both are taken again, a few
    // times at most. A floor that stays above the W loaded before it is a hostile producer's.
    let (mut w, mut floor) = (0, 0);
    for _ in 0..SNAPSHOT_TRIES {
        w = mem.write_pos().load(Acquire);
        floor = mem.word(Word::DiscardFloor).load(Acquire);
        if floor <= w {
            break;
        }
    }
    if floor > w {
        w = mem.write_pos().load(Acquire);
        if floor > w {
            return Err(Poison::FloorPastWrite.into());
        }
    }
    let r = mem.read_pos().load(Acquire);
    let read = if consumer {
        r.max(floor)
    } else {
        if r > w {
            return Err(Poison::PositionWentBack.into());
        }
        r
    };
    let oldest = read.max(floor);
    if w > oldest && w - oldest > cap {
        return Err(Poison::PositionPastCapacity.into());
    }
    Ok(Settled {
        cap,
        write: w,
        read,
        floor,
    })
}

/// Creates a producer and a consumer over one ring (both ends in this process).
pub fn byte_ring_pair(mem: RingMemory) -> Result<(ByteProducer, ByteConsumer), RingError> {
    let mem = Arc::new(mem);
    Ok((ByteProducer::new(mem.clone())?, ByteConsumer::new(mem)?))
}
