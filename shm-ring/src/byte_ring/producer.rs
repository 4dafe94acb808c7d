//! The writing end of a byte ring: backpressure or flight-recorder overwriting.

use std::sync::Arc;

use super::{settled_positions, Written};
use crate::error::{Poison, RingError};
use crate::fence::FenceMode;
use crate::layout::{RingKind, FLAG, POS_MASK};
use crate::memory::{RingMemory, Word};
use crate::sync::{
    fence,
    Ordering::{Acquire, Relaxed, Release},
};

/// The writing end of a byte ring.
#[derive(Debug)]
pub struct ByteProducer {
    pub(crate) mem: Arc<RingMemory>,
    pub(crate) write: u64,
    /// The consumer's read position when this side last looked.
    pub(crate) cached_read: u64,
    /// The discard floor this side last stored (positions below it are given up).
    floor: u64,
    pub(crate) cap: u64,
    pub(crate) poisoned: Option<Poison>,
    fence: FenceMode,
    /// The consumer's sleep word this side last rang the doorbell for: one ring per sleep.
    rung_for: u64,
    /// How many times this side has waited for space (the count in its wait word).
    waits: u64,
    /// While waiting for space: the consumer's position when the flag was raised. The
    /// consumer rings only when it releases, so while its position has not moved the
    /// doorbell has not been rung for this wait and need not be drained again.
    armed_at: Option<u64>,
}

impl ByteProducer {
    /// Takes the producer role of `mem`, continuing at the positions found in its header.
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        Self::with_kind(mem, RingKind::Bytes)
    }

    pub(crate) fn with_kind(mem: Arc<RingMemory>, kind: RingKind) -> Result<Self, RingError> {
        let s = settled_positions(&mem, kind, false)?;
        let waits = mem.word(Word::ProducerWaits).load(Relaxed) & POS_MASK;
        // Lower a flag a predecessor left up: this side is not waiting.
        mem.word(Word::ProducerWaits).store(waits, Relaxed);
        Ok(ByteProducer {
            write: s.write,
            cached_read: s.read,
            floor: s.floor,
            cap: s.cap,
            poisoned: None,
            fence: mem.geometry().fence,
            rung_for: 0,
            waits,
            armed_at: None,
            mem,
        })
    }

    /// The poison that stopped this ring, if any.
    pub fn poisoned(&self) -> Option<Poison> {
        self.poisoned
    }

    /// Absolute position of the next byte to be written.
    pub fn position(&self) -> u64 {
        self.write
    }

    /// Bytes written that the consumer had not released when this side last looked: what
    /// is lost if the ring is abandoned now.
    pub fn unconsumed(&self) -> u64 {
        self.write - self.oldest_kept()
    }

    /// The ring memory this producer writes.
    pub fn memory(&self) -> &Arc<RingMemory> {
        &self.mem
    }

    fn check(&self) -> Result<(), Poison> {
        match self.poisoned {
            Some(p) => Err(p),
            None => Ok(()),
        }
    }

    fn poison(&mut self, p: Poison) -> Poison {
        self.poisoned = Some(p);
        p
    }

    /// The oldest position whose slot is not free: the consumer's, or the discard floor.
    fn oldest_kept(&self) -> u64 {
        self.cached_read.max(self.floor)
    }

    /// Loads, validates and caches the consumer's position.
    fn reload_read(&mut self) -> Result<u64, Poison> {
        // Acquire: pairs with the consumer's Release store of read_pos, so its copies out
        // of the slots below it happen before our overwrites of them.
        let r = self.mem.read_pos().load(Acquire);
        if r < self.cached_read {
            return Err(self.poison(Poison::PositionWentBack));
        }
        if r > self.write {
            return Err(self.poison(Poison::PositionPastCapacity));
        }
        self.cached_read = r;
        Ok(r)
    }

    /// Free bytes, re-reading the consumer's position only when the cached one says there
    /// are fewer than `want`.
    pub(crate) fn free_for(&mut self, want: u64) -> Result<u64, Poison> {
        self.check()?;
        let free = self.cap - (self.write - self.oldest_kept());
        if free >= want {
            return Ok(free);
        }
        self.reload_read()?;
        Ok(self.cap - (self.write - self.oldest_kept()))
    }

    /// Free bytes right now.
    pub fn free(&mut self) -> Result<usize, Poison> {
        Ok(self.free_for(u64::MAX)? as usize)
    }

    /// Publishes everything up to `new_write`. Returns whether the consumer sleeps and has
    /// not been rung for this sleep yet.
    pub(crate) fn publish(&mut self, new_write: u64) -> bool {
        // Release: the bytes copied into the slots happen before the consumer's Acquire
        // load that sees this position. A plain store: the word has no other writer.
        self.mem.write_pos().store(new_write, Release);
        self.write = new_write;
        // The handshake's hot side: the store above, then the load of the sleep flag,
        // ordered by the fence pair (see `fence`).
        self.fence.light();
        let s = self.mem.word(Word::ConsumerSleeps).load(Relaxed);
        if s & FLAG != 0 && s != self.rung_for {
            self.rung_for = s;
            return true;
        }
        false
    }

    /// Writes as much of `buf` as fits without overwriting unread bytes (backpressure).
    /// A short count means the ring is full: see [`ByteProducer::space_or_arm`].
    pub fn write(&mut self, buf: &[u8]) -> Result<Written, Poison> {
        let free = self.free_for(buf.len() as u64)?;
        let n = buf.len().min(free as usize);
        if n == 0 {
            return Ok(Written::default());
        }
        // SAFETY: [write, write + n) are free slots: n <= free = cap - (write - read).
        unsafe { self.mem.copy_in(self.write, &buf[..n]) };
        let wake_consumer = self.publish(self.write + n as u64);
        Ok(Written {
            bytes: n,
            dropped: 0,
            wake_consumer,
        })
    }

    /// Writes all of `buf`, discarding the oldest unread bytes if there is not enough room
    /// (flight-recorder mode, used while no consumer is attached). The positions still count
    /// every byte, so a consumer that attaches later sees exactly how much it missed.
    pub fn write_overwriting(&mut self, buf: &[u8]) -> Result<Written, Poison> {
        self.check()?;
        let mut total = Written {
            bytes: buf.len(),
            ..Written::default()
        };
        // At most a capacity at a time: the floor of each piece (`end - cap`) is then at most
        // the position published before it, which is how a consumer tells an honest floor
        // from a hostile one. A write larger than the ring (rare: rings hold megabytes) is
        // copied whole, piece by piece, and all but its last capacity is overwritten.
        for piece in buf.chunks(self.cap as usize) {
            let w = self.overwrite_piece(piece)?;
            total.dropped += w.dropped;
            total.wake_consumer |= w.wake_consumer;
        }
        Ok(total)
    }

    /// [`ByteProducer::write_overwriting`] of at most a capacity.
    fn overwrite_piece(&mut self, piece: &[u8]) -> Result<Written, Poison> {
        let len = piece.len() as u64;
        let end = self.write + len;
        let mut dropped = 0;
        if self.free_for(len)? < len {
            // The piece does not fit: `end - cap > oldest_kept()`, and `end - cap <= write`
            // since `len <= cap`.
            dropped = self.raise_floor(end - self.cap);
        }
        // SAFETY: oldest_kept() >= end - cap, so [write, end) with end - write <= cap are
        // free slots (a consumer copying them is told by the floor to discard its copy).
        unsafe { self.mem.copy_in(self.write, piece) };
        let wake_consumer = self.publish(end);
        if dropped > 0 {
            // Relaxed: an informational counter for the peer's statistics; this side is
            // its only writer, so a load and a store (no locked read-modify-write).
            let c = self.mem.word(Word::DroppedOldestBytes);
            c.store(c.load(Relaxed).wrapping_add(dropped), Relaxed);
        }
        Ok(Written {
            bytes: piece.len(),
            dropped,
            wake_consumer,
        })
    }

    /// Gives up every position below `floor` (above `oldest_kept()`, at most the published
    /// write position) before the slots are reused. Returns the bytes given up.
    fn raise_floor(&mut self, floor: u64) -> u64 {
        let dropped = floor - self.oldest_kept();
        self.floor = floor;
        // Release: every write position below the floor was published before it, so a
        // consumer that acquires this floor then finds the write position at least as high
        // (how it tells an honest floor from a hostile one). Then a Release fence before the
        // overwrites (`copy_in`): a consumer whose copy read any overwritten byte has,
        // through that byte, its Acquire fence synchronized with this one, and sees this
        // floor or a later one (see the protocol in `byte_ring`).
        self.mem.word(Word::DiscardFloor).store(floor, Release);
        fence(Release);
        if self.armed_at.take().is_some() {
            // No more waiting for space: lower the flag so the consumer does not ring.
            self.mem
                .word(Word::ProducerWaits)
                .store(self.waits, Relaxed);
        }
        dropped
    }

    /// Backpressure: true when `want` bytes fit now. Otherwise raises the "producer waits"
    /// flag so the consumer's next release rings the space doorbell, and returns false.
    /// `before_arming` runs just before the flag is raised (not when it is already up and
    /// the consumer has not released since): drain the space doorbell there, so a wakeup
    /// from an earlier wait cannot be mistaken for a new one and the caller never spins.
    pub fn space_or_arm(
        &mut self,
        want: usize,
        before_arming: impl FnOnce(),
    ) -> Result<bool, Poison> {
        let want = (want as u64).clamp(1, self.cap);
        // Space: the flag, if up, stays up; the consumer's next release may ring once more
        // and the next arming drains that.
        if self.free_for(want)? >= want {
            return Ok(true);
        }
        // free_for just reloaded the consumer's position: it is current.
        if self.armed_at == Some(self.cached_read) {
            return Ok(false);
        }
        before_arming();
        self.waits = (self.waits + 1) & POS_MASK;
        self.mem
            .word(Word::ProducerWaits)
            .store(self.waits | FLAG, Relaxed);
        self.armed_at = Some(self.cached_read);
        // The handshake's sleeping side: the flag store above, then one more look at the
        // consumer's position, ordered against the consumer's release-then-look-at-flag.
        self.fence.heavy();
        self.reload_read()?;
        Ok(self.cap - (self.write - self.oldest_kept()) >= want)
    }
}
