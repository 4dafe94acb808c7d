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
use crate::layout::{RingKind, FLAG, POS_MASK};
use crate::memory::RingMemory;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed};

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

/// Checks the ring's kind and reads both positions for a side taking its role: returns
/// (capacity, write, read). A side may (re)attach to a ring in use, e.g. a restarted daemon.
fn settled_positions(mem: &RingMemory, kind: RingKind) -> Result<(u64, u64, u64), RingError> {
    if mem.geometry().kind != kind {
        return Err(RingError::BadRegion("ring kind is not the expected one"));
    }
    let cap = mem.geometry().capacity;
    // Acquire: pairs with the peer's last release, so the bytes below the write position
    // are visible and the slots below the read position are free.
    let w = mem.write_pos().load(Acquire) & POS_MASK;
    let r = mem.read_pos().load(Acquire) & POS_MASK;
    if r > w {
        return Err(Poison::PositionWentBack.into());
    }
    if w - r > cap {
        return Err(Poison::PositionPastCapacity.into());
    }
    Ok((cap, w, r))
}

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
        let (cap, w, r) = settled_positions(&mem, kind)?;
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
            loop {
                let r = self.accept_read_word(cur)?;
                if r >= target {
                    break;
                }
                // AcqRel: Acquire for the slots a racing consumer released; Release so that a
                // consumer that later fails its own CAS against this value knows its copy of
                // the slots we are about to overwrite is void. Clears our own wait flag.
                match self
                    .mem
                    .read_pos()
                    .compare_exchange(cur, target, AcqRel, Acquire)
                {
                    Ok(_) => {
                        dropped = target - r;
                        self.cached_read = target;
                        break;
                    }
                    Err(actual) => cur = actual,
                }
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
                .header()
                .dropped_oldest_bytes
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
        loop {
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
                .read_pos()
                .compare_exchange(cur, cur | FLAG, AcqRel, Acquire)
            {
                Ok(_) => return Ok(false),
                Err(actual) => cur = actual,
            }
        }
    }
}

/// The reading end of a byte ring.
#[derive(Debug)]
pub struct ByteConsumer {
    pub(crate) mem: Arc<RingMemory>,
    pub(crate) read: u64,
    pub(crate) cached_write: u64,
    pub(crate) cap: u64,
    pub(crate) poisoned: Option<Poison>,
}

impl ByteConsumer {
    /// Takes the consumer role of `mem`, continuing at the positions found in its header
    /// (a restarted consumer resumes where its predecessor released).
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        Self::with_kind(mem, RingKind::Bytes)
    }

    pub(crate) fn with_kind(mem: Arc<RingMemory>, kind: RingKind) -> Result<Self, RingError> {
        let (cap, w, r) = settled_positions(&mem, kind)?;
        Ok(ByteConsumer {
            mem,
            read: r,
            cached_write: w,
            cap,
            poisoned: None,
        })
    }

    /// The poison that stopped this ring, if any.
    pub fn poisoned(&self) -> Option<Poison> {
        self.poisoned
    }

    /// Absolute position of the next byte to be read.
    pub fn position(&self) -> u64 {
        self.read
    }

    /// The ring memory this consumer reads.
    pub fn memory(&self) -> &Arc<RingMemory> {
        &self.mem
    }

    pub(crate) fn poison(&mut self, p: Poison) -> Poison {
        self.poisoned = Some(p);
        p
    }

    /// Reads and validates the producer's position. Returns the bytes available and, if the
    /// producer discarded bytes we had not read yet, how many (our position jumps past them).
    pub(crate) fn sync(&mut self) -> Result<(u64, u64), Poison> {
        if let Some(p) = self.poisoned {
            return Err(p);
        }
        // Acquire: pairs with the producer's publishing swap: the slots below w are written.
        let w = self.mem.write_pos().load(Acquire) & POS_MASK;
        if w < self.cached_write {
            return Err(self.poison(Poison::PositionWentBack));
        }
        self.cached_write = w;
        let mut lost = 0;
        if w > self.read && w - self.read > self.cap {
            // Only a flight-recording producer may run ahead of us, and then it must have
            // moved read_pos first.
            lost = self.resync_after_overrun()?;
        }
        // After a jump our position can be ahead of the last published write for a moment
        // (the producer moves read_pos before it publishes): nothing to read yet.
        Ok((w.saturating_sub(self.read).min(self.cap), lost))
    }

    /// The producer moved read_pos past us: adopt its value and report the jump. The upper
    /// bound is checked by the next `sync` (a write position more than a capacity ahead).
    fn resync_after_overrun(&mut self) -> Result<u64, Poison> {
        let r = self.mem.read_pos().load(Acquire) & POS_MASK;
        if r <= self.read {
            return Err(self.poison(Poison::PositionPastCapacity));
        }
        let lost = r - self.read;
        self.read = r;
        Ok(lost)
    }

    /// Bytes ready to read now.
    pub fn available(&mut self) -> Result<usize, Poison> {
        Ok(self.sync()?.0 as usize)
    }

    /// Copies up to `out.len()` bytes without consuming them. Returns the count.
    pub(crate) fn peek_raw(&mut self, out: &mut [u8], avail: u64) -> usize {
        let n = out.len().min(avail as usize);
        self.mem.copy_out(self.read, &mut out[..n]);
        n
    }

    /// Marks `n` peeked bytes consumed. `Err(Ok(lost))` means the producer overwrote them
    /// meanwhile: the copy is void and our position jumped by `lost`.
    pub(crate) fn release(&mut self, n: u64) -> Result<Result<bool, u64>, Poison> {
        // A poisoned ring is never touched again, even by a consume of an earlier peek.
        if let Some(p) = self.poisoned {
            return Err(p);
        }
        let new_read = self.read + n;
        let mut cur = self.mem.read_pos().load(Relaxed);
        loop {
            if cur & POS_MASK != self.read {
                return Ok(Err(self.resync_after_overrun()?));
            }
            // AcqRel: Release hands the slots we copied out back to the producer (its
            // Acquire load of read_pos); success also clears the producer's wait flag and
            // tells us, in the same atomic step, whether it was waiting.
            match self
                .mem
                .read_pos()
                .compare_exchange_weak(cur, new_read, AcqRel, Relaxed)
            {
                Ok(old) => {
                    self.read = new_read;
                    return Ok(Ok(old & FLAG != 0));
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reads up to `out.len()` bytes. Never blocks: returns 0 bytes when the ring is empty.
    pub fn read(&mut self, out: &mut [u8]) -> Result<Read, Poison> {
        let mut lost_total = 0;
        loop {
            let (avail, lost) = self.sync()?;
            lost_total += lost;
            let position = self.read;
            let n = self.peek_raw(out, avail);
            if n == 0 {
                return Ok(Read {
                    bytes: 0,
                    lost: lost_total,
                    position,
                    wake_producer: false,
                });
            }
            match self.release(n as u64)? {
                Ok(wake_producer) => {
                    return Ok(Read {
                        bytes: n,
                        lost: lost_total,
                        position,
                        wake_producer,
                    })
                }
                Err(lost) => lost_total += lost,
            }
        }
    }

    /// Copies up to `out.len()` bytes without consuming them, for a consumer that must
    /// store the bytes durably before it lets the producer reuse their slots. Follow with
    /// [`ByteConsumer::consume`]. `lost` reports bytes the producer discarded before
    /// `position` (flight-recorder mode); `wake_producer` is always false here.
    pub fn peek(&mut self, out: &mut [u8]) -> Result<Read, Poison> {
        let (avail, lost) = self.sync()?;
        let position = self.read;
        let bytes = self.peek_raw(out, avail);
        Ok(Read {
            bytes,
            lost,
            position,
            wake_producer: false,
        })
    }

    /// Consumes `n` bytes returned by the last [`ByteConsumer::peek`].
    pub fn consume(&mut self, n: usize) -> Result<Consumed, Poison> {
        Ok(match self.release(n as u64)? {
            Ok(wake_producer) => Consumed::Done { wake_producer },
            Err(lost) => Consumed::Overwritten { lost },
        })
    }

    /// Before waiting on the data doorbell: raises the "consumer sleeps" flag if the ring is
    /// still empty and returns true (now it is safe to wait). Returns false when data is
    /// there (the flag is not raised; read instead).
    pub fn prepare_sleep(&mut self) -> Result<bool, Poison> {
        if let Some(p) = self.poisoned {
            return Err(p);
        }
        let mut cur = self.mem.write_pos().load(Acquire);
        loop {
            let w = cur & POS_MASK;
            if w < self.cached_write {
                return Err(self.poison(Poison::PositionWentBack));
            }
            if w > self.read {
                return Ok(false);
            }
            if cur & FLAG != 0 {
                return Ok(true);
            }
            // AcqRel: the flag and the producer's publishing swap are RMWs of the same word,
            // so exactly one of "we see new data" or "the producer sees our flag" happens.
            match self
                .mem
                .write_pos()
                .compare_exchange(cur, cur | FLAG, AcqRel, Acquire)
            {
                Ok(_) => return Ok(true),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Bytes the producer reports having discarded from the old end (informational: the
    /// authoritative count is the `lost` of each [`Read`]).
    pub fn producer_dropped(&self) -> u64 {
        self.mem.header().dropped_oldest_bytes.load(Relaxed)
    }
}

/// Creates a producer and a consumer over one ring (both ends in this process).
pub fn byte_ring_pair(mem: RingMemory) -> Result<(ByteProducer, ByteConsumer), RingError> {
    let mem = Arc::new(mem);
    Ok((ByteProducer::new(mem.clone())?, ByteConsumer::new(mem)?))
}
