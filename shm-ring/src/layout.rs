//! The `#[repr(C)]` header at the start of every ring region.
//!
//! ```text
//! offset   0  line 0  identity, written once by the creator: magic, version, kind, capacity,
//!                     data offset, largest record, fence mode. Each side copies it once and
//!                     never re-reads it.
//! offset  64  line 1  producer's hot line: write position, the loss counters (informational:
//!                     never trusted for control)
//! offset 128  line 2  consumer's hot line: read position
//! offset 192  line 3  rarely written words: discard floor (producer, flight-recorder mode),
//!                     "producer waits for space" (producer), "consumer sleeps" (consumer)
//! offset 256          data: `capacity` bytes, a power of two
//! ```
//!
//! Positions are monotonic byte counts (never wrapped); the slot of position `p` is
//! `p & (capacity - 1)`. Every word has one writer. The two hot lines sit in different
//! 128-byte blocks: x86 cores prefetch cache lines in adjacent pairs, so a position sharing
//! a pair with the peer's position would bounce between the cores as if it shared a line.
//! The rare words share the consumer's pair: they are read on every publish and release but
//! written only when a side goes to sleep or the producer overwrites, so they stay cached
//! on both sides. The protocol over these words is described in `byte_ring`.

use crate::sync::AtomicU64;

/// "SHMRING1", little endian: the first eight bytes of every ring region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMRING1");
/// Layout version. Bumped on any incompatible change of this header or of the protocol over
/// it. Version 2: one writer per word (no read-modify-write), sleep flags in their own
/// words, the discard floor, the fence mode.
pub const VERSION: u32 = 2;
/// Bytes before the data area.
pub const HEADER_SIZE: usize = 256;
/// Smallest ring data area.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest ring data area.
pub const MAX_CAPACITY: u64 = 1 << 30;

/// Bit 63 of a sleep word: the side that owns it sleeps (or waits) on its doorbell. The
/// rest of the word counts the owner's sleeps, so the waker rings once per sleep.
pub(crate) const FLAG: u64 = 1 << 63;
/// The position part of a position word (a hostile peer may set bit 63 anywhere).
pub(crate) const POS_MASK: u64 = !FLAG;

/// What a ring carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// A plain byte stream (console output or input).
    Bytes = 1,
    /// Framed records (audio periods with sequence number and timestamp).
    Records = 2,
}

impl RingKind {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(RingKind::Bytes),
            2 => Some(RingKind::Records),
            _ => None,
        }
    }
}

#[repr(C, align(64))]
pub(crate) struct RingHeader {
    pub magic: u64,
    pub version: u32,
    pub kind: u32,
    pub capacity: u64,
    pub data_offset: u64,
    pub max_record: u32,
    /// How the sleep handshake is fenced ([`crate::fence::FenceMode`]), chosen by the creator.
    pub fence: u32,
    pub _reserved0: [u32; 6],

    pub write_pos: AtomicU64,
    /// Bytes the producer discarded from the old end to make room (flight-recorder mode).
    pub dropped_oldest_bytes: AtomicU64,
    /// Records the producer could not write because the ring was full.
    pub dropped_records: AtomicU64,
    /// Payload bytes in those records.
    pub dropped_record_bytes: AtomicU64,
    pub _pad1: [u64; 4],

    pub read_pos: AtomicU64,
    pub _pad2: [u64; 7],

    /// Positions below this are discarded: the producer may reuse their slots.
    pub discard_floor: AtomicU64,
    /// The producer waits for space (bit 63) and how many times it has waited.
    pub producer_waits: AtomicU64,
    /// The consumer sleeps (bit 63) and how many times it has slept.
    pub consumer_sleeps: AtomicU64,
    pub _pad3: [u64; 5],
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RingHeader>() == HEADER_SIZE);
    assert!(align_of::<RingHeader>() == 64);
    assert!(offset_of!(RingHeader, write_pos) == 64);
    assert!(offset_of!(RingHeader, dropped_oldest_bytes) == 72);
    assert!(offset_of!(RingHeader, read_pos) == 128);
    assert!(offset_of!(RingHeader, discard_floor) == 192);
    assert!(offset_of!(RingHeader, producer_waits) == 200);
    assert!(offset_of!(RingHeader, consumer_sleeps) == 208);
    // The header is placed over raw shared memory: std's AtomicU64 must be a plain u64.
    assert!(size_of::<AtomicU64>() == 8);
};

impl RingHeader {
    pub(crate) fn new(kind: RingKind, capacity: u64, max_record: u32, fence: u32) -> Self {
        RingHeader {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u32,
            capacity,
            data_offset: HEADER_SIZE as u64,
            max_record,
            fence,
            _reserved0: [0; 6],
            write_pos: AtomicU64::new(0),
            dropped_oldest_bytes: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
            dropped_record_bytes: AtomicU64::new(0),
            _pad1: [0; 4],
            read_pos: AtomicU64::new(0),
            _pad2: [0; 7],
            discard_floor: AtomicU64::new(0),
            producer_waits: AtomicU64::new(0),
            consumer_sleeps: AtomicU64::new(0),
            _pad3: [0; 5],
        }
    }
}

/// Checks a capacity for a new ring.
pub(crate) fn check_capacity(capacity: u64) -> bool {
    capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
}
