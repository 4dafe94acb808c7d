//! The writing end of a byte ring: backpressure or flight-recorder overwriting.

use std::sync::Arc;

use super::{settled_positions, Written, MAX_ATTEMPTS};
use crate::error::{Poison, RingError};
use crate::layout::{RingKind, FLAG, POS_MASK};
use crate::memory::{RingMemory, Word};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed};

/// The writing end of a byte ring.
#[derive(Debug)]
pub struct ByteProducer {
    pub(crate) mem: Arc<RingMemory>,
    pub(crate) write: u64,
    pub(crate) cached_read: u64,
    pub(crate) cap: u64,
    pub(crate) poisoned: Option<Poison>,
}

impl ByteProducer {
    /// Takes the producer role of `mem`, continuing at the positions found in its header.
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        Self::with_kind(mem, RingKind::Bytes)
    }

    pub(crate) fn with_kind(mem: Arc<RingMemory>, kind: RingKind) -> Result<Self, RingError> {
        let (cap, w, r) = settled_positions(&mem, kind, false)?;
        Ok(ByteProducer {
            mem,
            write: w,
            cached_read: r,
            cap,
            poisoned: None,
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

    /// Validates a `read_pos` word read from shared memory and caches its position.
    fn accept_read_word(&mut self, word: u64) -> Result<u64, Poison> {
        let r = word & POS_MASK;
        if r < self.cached_read {
            return Err(self.poison(Poison::PositionWentBack));
        }
        if r > self.write {
            return Err(self.poison(Poison::PositionPastCapacity));
        }
        self.cached_read = r;
        Ok(r)
    }

    /// Free bytes, re-reading the consumer's position only when the cached one says full.
    pub(crate) fn free_for(&mut self, want: u64) -> Result<u64, Poison> {
        self.check()?;
        let free = self.cap - (self.write - self.cached_read);
        if free >= want {
            return Ok(free);
        }
        // Acquire: pairs with the consumer's release RMW on read_pos, so the slots it
        // has finished copying out are really free before we overwrite them.
        let word = self.mem.read_pos().load(Acquire);
        self.accept_read_word(word)?;
        Ok(self.cap - (self.write - self.cached_read))
    }

    /// Free bytes right now.
    pub fn free(&mut self) -> Result<usize, Poison> {
        Ok(self.free_for(u64::MAX)? as usize)
    }

    /// Publishes everything up to `new_write`. Returns whether the consumer sleeps.
    pub(crate) fn publish(&mut self, new_write: u64) -> Result<bool, Poison> {
        // Release (in AcqRel): the bytes copied into the slots become visible to the
        // consumer's Acquire load of write_pos. The swap also fetches the consumer's sleep
        // flag atomically with the publish, which is what makes a lost wakeup impossible.
        let old = self.mem.write_pos().swap(new_write, AcqRel);
        if old & POS_MASK != self.write {
            // Only the consumer's flag may change in our word; the position is ours.
            return Err(self.poison(Poison::PositionWentBack));
        }
        self.write = new_write;
        Ok(old & FLAG != 0)
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
        let wake_consumer = self.publish(self.write + n as u64)?;
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
        let len = buf.len() as u64;
        let end = self.write + len;
        let kept = len.min(self.cap);
        let keep = &buf[(len - kept) as usize..];
        let mut dropped = 0;
        if self.free_for(kept)? < kept || kept < len {
            // The oldest byte we may keep is end - cap.
            let target = end.saturating_sub(self.cap).max(self.cached_read);
            let mut cur = self.mem.read_pos().load(Acquire);
            let mut moved = false;
            for _ in 0..MAX_ATTEMPTS {
                let r = self.accept_read_word(cur)?;
                if r >= target {
                    moved = true;
                    break;
                }
                // AcqRel: Acquire for the slots a racing consumer released; Release so that a
                // consumer that later fails its own CAS against this value knows its copy of
                // the slots we are about to overwrite is void. Clears our own wait flag.
                match self
                    .mem
                    .compare_exchange(Word::ReadPos, cur, target, AcqRel, Acquire)
                {
                    Ok(_) => {
                        dropped = target - r;
                        self.cached_read = target;
                        moved = true;
                        break;
                    }
                    Err(actual) => cur = actual,
                }
            }
            if !moved {
                return Err(self.poison(Poison::PeerInterference));
            }
        }
        let start = end - kept;
        if start > self.write {
            // Bytes that never entered the ring still occupy positions: skip them. The
            // read position was moved to at least `start` above, so no slot is exposed.
            debug_assert!(self.cached_read >= start);
        }
        // SAFETY: read >= end - cap, so [start, end) with end - start <= cap are free slots
        // (any consumer has been told, through read_pos, to not trust them any more).
        unsafe { self.mem.copy_in(start, keep) };
        let wake_consumer = self.publish(end)?;
        if dropped > 0 {
            // Relaxed: an informational counter for the peer's statistics.
            self.mem
                .word(Word::DroppedOldestBytes)
                .fetch_add(dropped, Relaxed);
        }
        Ok(Written {
            bytes: buf.len(),
            dropped,
            wake_consumer,
        })
    }

    /// Backpressure: true when `want` bytes fit now. Otherwise raises the "producer waits"
    /// flag so the consumer's next release rings the space doorbell, and returns false.
    /// `before_arming` runs just before the flag is raised (not when it is already up):
    /// drain the space doorbell there, so a wakeup from an earlier wait cannot be mistaken
    /// for a new one and the caller never spins.
    pub fn space_or_arm(
        &mut self,
        want: usize,
        before_arming: impl FnOnce(),
    ) -> Result<bool, Poison> {
        self.check()?;
        let want = (want as u64).clamp(1, self.cap);
        let mut before_arming = Some(before_arming);
        let mut cur = self.mem.read_pos().load(Acquire);
        for _ in 0..MAX_ATTEMPTS {
            self.accept_read_word(cur)?;
            if self.cap - (self.write - self.cached_read) >= want {
                return Ok(true);
            }
            if cur & FLAG != 0 {
                return Ok(false);
            }
            if let Some(f) = before_arming.take() {
                f();
            }
            // AcqRel on success: the flag must be ordered against the consumer's release,
            // which reads it in the same atomic word. On failure (Acquire) the consumer moved
            // read_pos: re-check the space with the new value.
            match self
                .mem
                .compare_exchange(Word::ReadPos, cur, cur | FLAG, AcqRel, Acquire)
            {
                Ok(_) => return Ok(false),
                Err(actual) => cur = actual,
            }
        }
        Err(self.poison(Poison::PeerInterference))
    }
}
