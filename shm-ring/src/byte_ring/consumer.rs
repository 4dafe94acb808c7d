//! The reading end of a byte ring: read, or peek and consume for durable storage.

use std::sync::Arc;

use super::{settled_positions, Consumed, Read, MAX_ATTEMPTS};
use crate::error::{Poison, RingError};
use crate::fence::FenceMode;
use crate::layout::{RingKind, FLAG, POS_MASK};
use crate::memory::{RingMemory, Word};
use crate::sync::{
    fence,
    Ordering::{Acquire, Relaxed, Release},
};

/// The reading end of a byte ring.
#[derive(Debug)]
pub struct ByteConsumer {
    pub(crate) mem: Arc<RingMemory>,
    pub(crate) read: u64,
    /// The producer's write position when this side last looked.
    pub(crate) cached_write: u64,
    /// The producer's discard floor when this side last looked.
    floor: u64,
    pub(crate) cap: u64,
    pub(crate) poisoned: Option<Poison>,
    fence: FenceMode,
    /// Bytes from `read` on that the last peek returned and nobody consumed yet.
    peeked: u64,
    /// How many times this side has slept (the count in its sleep word).
    sleeps: u64,
    /// The producer's wait word this side last rang the doorbell for: one ring per wait.
    rung_for: u64,
}

impl ByteConsumer {
    /// Takes the consumer role of `mem`, continuing at the positions found in its header
    /// (a restarted consumer resumes where its predecessor released).
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        Self::with_kind(mem, RingKind::Bytes)
    }

    pub(crate) fn with_kind(mem: Arc<RingMemory>, kind: RingKind) -> Result<Self, RingError> {
        let s = settled_positions(&mem, kind, true)?;
        let sleeps = mem.word(Word::ConsumerSleeps).load(Relaxed) & POS_MASK;
        Ok(ByteConsumer {
            read: s.read,
            cached_write: s.write,
            floor: s.floor,
            cap: s.cap,
            poisoned: None,
            fence: mem.geometry().fence,
            peeked: 0,
            sleeps,
            rung_for: 0,
            mem,
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

    /// Loads, validates and caches the producer's position.
    fn reload_write(&mut self) -> Result<u64, Poison> {
        // Acquire: pairs with the producer's Release store: the slots below w are written,
        // and so is the discard floor it stored before.
        let w = self.mem.write_pos().load(Acquire);
        if w < self.cached_write {
            return Err(self.poison(Poison::PositionWentBack));
        }
        self.cached_write = w;
        Ok(w)
    }

    /// Loads and validates the discard floor; when it passed our position, jumps to it and
    /// returns how many bytes were given up.
    fn jump_to_floor(&mut self) -> Result<u64, Poison> {
        // Acquire: pairs with the producer's Release store of the floor, which it makes only
        // once every position below the floor is published: a write position loaded after
        // this is at least the floor, unless the producer is hostile.
        let f = self.mem.word(Word::DiscardFloor).load(Acquire);
        if f < self.floor {
            return Err(self.poison(Poison::PositionWentBack));
        }
        if f > self.cached_write && f > self.reload_write()? {
            return Err(self.poison(Poison::FloorPastWrite));
        }
        self.floor = f;
        if f <= self.read {
            return Ok(0);
        }
        let lost = f - self.read;
        self.read = f;
        self.peeked = 0;
        Ok(lost)
    }

    /// Bytes available (re-reading the producer's position only when the cached one says
    /// there are fewer than `want`, at least one) and bytes the producer discarded before our
    /// position, which then jumps past them.
    pub(crate) fn sync_for(&mut self, want: u64) -> Result<(u64, u64), Poison> {
        if let Some(p) = self.poisoned {
            return Err(p);
        }
        let cached = self.cached_write.saturating_sub(self.read);
        if cached >= want.max(1) && cached <= self.cap {
            return Ok((cached, 0));
        }
        let w = self.reload_write()?;
        let mut lost = 0;
        if w > self.read && w - self.read > self.cap {
            // Only a flight-recording producer may run ahead of us, and it raised the floor
            // (to at least w - cap) before it published w.
            lost = self.jump_to_floor()?;
            if w > self.read && w - self.read > self.cap {
                return Err(self.poison(Poison::PositionPastCapacity));
            }
        }
        // Up to `w`, the position checked above: the jump may have reloaded a later one,
        // which may be more than a capacity ahead again (a flight recorder that kept
        // writing); the next call checks that one. (Nothing yet when the floor is past `w`.)
        Ok((w.saturating_sub(self.read), lost))
    }

    /// Bytes ready to read now.
    pub fn available(&mut self) -> Result<usize, Poison> {
        Ok(self.sync_for(u64::MAX)?.0 as usize)
    }

    /// Copies up to `out.len()` bytes without consuming them. Returns the count.
    pub(crate) fn peek_raw(&mut self, out: &mut [u8], avail: u64) -> usize {
        let n = out.len().min(avail as usize);
        self.mem.copy_out(self.read, &mut out[..n]);
        n
    }

    /// After a copy: whether the producer overwrote any of it. Returns the bytes given up
    /// (our position jumps past them); the copy is void when that is not zero.
    pub(crate) fn after_copy(&mut self) -> Result<u64, Poison> {
        // Acquire fence, then the floor: if the copy read any byte of an overwrite, the
        // producer's Release fence (after its floor store, before the overwrite)
        // synchronizes with this fence, so the floor load sees that floor or a later one.
        fence(Acquire);
        self.jump_to_floor()
    }

    /// Marks `n` copied bytes consumed. Returns whether the producer waits for space and
    /// has not been rung for this wait yet.
    pub(crate) fn release(&mut self, n: u64) -> bool {
        self.read += n;
        // Release: our copies out of the slots happen before the producer's overwrites
        // (its Acquire load of read_pos). A plain store: the word has no other writer.
        self.mem.read_pos().store(self.read, Release);
        // The handshake's hot side (see `fence`).
        self.fence.light();
        let s = self.mem.word(Word::ProducerWaits).load(Relaxed);
        if s & FLAG != 0 && s != self.rung_for {
            self.rung_for = s;
            return true;
        }
        false
    }

    /// Copies up to `out.len()` valid bytes: retries (bounded) while a flight-recording
    /// producer overwrites what we copy. Returns (bytes, lost before them, their position).
    fn copy_valid(&mut self, out: &mut [u8]) -> Result<(usize, u64, u64), Poison> {
        let mut lost_total = 0;
        for _ in 0..MAX_ATTEMPTS {
            let (avail, lost) = self.sync_for(out.len() as u64)?;
            lost_total += lost;
            let position = self.read;
            let n = self.peek_raw(out, avail);
            let lost = self.after_copy()?;
            if lost == 0 {
                return Ok((n, lost_total, position));
            }
            lost_total += lost;
        }
        // A flight-recording producer lapped every copy: report what it discarded and let
        // the caller come back, rather than chase it here.
        Ok((0, lost_total, self.read))
    }

    /// Reads up to `out.len()` bytes. Never blocks: returns 0 bytes when the ring is empty.
    pub fn read(&mut self, out: &mut [u8]) -> Result<Read, Poison> {
        let (bytes, lost, position) = self.copy_valid(out)?;
        let wake_producer = bytes > 0 && self.release(bytes as u64);
        Ok(Read {
            bytes,
            lost,
            position,
            wake_producer,
        })
    }

    /// Copies up to `out.len()` bytes without consuming them, for a consumer that must
    /// store the bytes durably before it lets the producer reuse their slots. Follow with
    /// [`ByteConsumer::consume`]. The bytes returned are the stream's, even if a
    /// flight-recording producer discards them meanwhile. `lost` reports bytes the producer
    /// discarded before `position`; `wake_producer` is always false here.
    pub fn peek(&mut self, out: &mut [u8]) -> Result<Read, Poison> {
        let (bytes, lost, position) = self.copy_valid(out)?;
        self.peeked = bytes as u64;
        Ok(Read {
            bytes,
            lost,
            position,
            wake_producer: false,
        })
    }

    /// Consumes `n` bytes returned by the last [`ByteConsumer::peek`].
    pub fn consume(&mut self, n: usize) -> Result<Consumed, Poison> {
        if let Some(p) = self.poisoned {
            return Err(p);
        }
        if n as u64 > self.peeked {
            return Err(self.poison(Poison::ConsumedUnpeeked));
        }
        self.peeked -= n as u64;
        Ok(Consumed {
            wake_producer: self.release(n as u64),
        })
    }

    /// Before waiting on the data doorbell: raises the "consumer sleeps" flag if the ring is
    /// still empty and returns true (now it is safe to wait). Returns false when data is
    /// there (the flag is not left up; read instead).
    pub fn prepare_sleep(&mut self) -> Result<bool, Poison> {
        if let Some(p) = self.poisoned {
            return Err(p);
        }
        if self.reload_write()? > self.read {
            return Ok(false);
        }
        self.sleeps = (self.sleeps + 1) & POS_MASK;
        let mem = self.mem.clone();
        let word = mem.word(Word::ConsumerSleeps);
        word.store(self.sleeps | FLAG, Relaxed);
        // The handshake's sleeping side: the flag store above, then one more look at the
        // producer's position, ordered against the producer's publish-then-look-at-flag.
        self.fence.heavy();
        if self.reload_write()? > self.read {
            word.store(self.sleeps, Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// Bytes the producer reports having discarded from the old end (informational: the
    /// authoritative count is the `lost` of each [`Read`]).
    pub fn producer_dropped(&self) -> u64 {
        self.mem.word(Word::DroppedOldestBytes).load(Relaxed)
    }
}
