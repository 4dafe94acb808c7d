//! The reading end of a byte ring: read, or peek and consume for durable storage.

use std::sync::Arc;

use super::{settled_positions, Consumed, Read, MAX_ATTEMPTS};
use crate::error::{Poison, RingError};
use crate::layout::{RingKind, FLAG, POS_MASK};
use crate::memory::{RingMemory, Word};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed};

/// The reading end of a byte ring.
#[derive(Debug)]
pub struct ByteConsumer {
    pub(crate) mem: Arc<RingMemory>,
    pub(crate) read: u64,
    pub(crate) cached_write: u64,
    pub(crate) cap: u64,
    pub(crate) poisoned: Option<Poison>,
    /// Bytes from `read` on that the last peek returned and nobody consumed yet.
    peeked: u64,
}

impl ByteConsumer {
    /// Takes the consumer role of `mem`, continuing at the positions found in its header
    /// (a restarted consumer resumes where its predecessor released).
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        Self::with_kind(mem, RingKind::Bytes)
    }

    pub(crate) fn with_kind(mem: Arc<RingMemory>, kind: RingKind) -> Result<Self, RingError> {
        let (cap, w, r) = settled_positions(&mem, kind, true)?;
        Ok(ByteConsumer {
            mem,
            read: r,
            cached_write: w,
            cap,
            poisoned: None,
            peeked: 0,
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
        for _ in 0..MAX_ATTEMPTS {
            if cur & POS_MASK != self.read {
                self.peeked = 0;
                return Ok(Err(self.resync_after_overrun()?));
            }
            // AcqRel: Release hands the slots we copied out back to the producer (its
            // Acquire load of read_pos); success also clears the producer's wait flag and
            // tells us, in the same atomic step, whether it was waiting. A strong CAS: a
            // failure then always means the word changed (the producer raised its flag).
            match self
                .mem
                .compare_exchange(Word::ReadPos, cur, new_read, AcqRel, Relaxed)
            {
                Ok(old) => {
                    self.read = new_read;
                    self.peeked = self.peeked.saturating_sub(n);
                    return Ok(Ok(old & FLAG != 0));
                }
                Err(actual) => cur = actual,
            }
        }
        Err(self.poison(Poison::PeerInterference))
    }

    /// Reads up to `out.len()` bytes. Never blocks: returns 0 bytes when the ring is empty.
    pub fn read(&mut self, out: &mut [u8]) -> Result<Read, Poison> {
        let mut lost_total = 0;
        let mut position = self.read;
        for _ in 0..MAX_ATTEMPTS {
            let (avail, lost) = self.sync()?;
            lost_total += lost;
            position = self.read;
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
        // A flight-recording producer lapped every copy: report what it discarded and let
        // the caller come back, rather than chase it here.
        Ok(Read {
            bytes: 0,
            lost: lost_total,
            position,
            wake_producer: false,
        })
    }

    /// Copies up to `out.len()` bytes without consuming them, for a consumer that must
    /// store the bytes durably before it lets the producer reuse their slots. Follow with
    /// [`ByteConsumer::consume`]. `lost` reports bytes the producer discarded before
    /// `position` (flight-recorder mode); `wake_producer` is always false here.
    pub fn peek(&mut self, out: &mut [u8]) -> Result<Read, Poison> {
        let (avail, lost) = self.sync()?;
        let position = self.read;
        let bytes = self.peek_raw(out, avail);
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
        for _ in 0..MAX_ATTEMPTS {
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
                .compare_exchange(Word::WritePos, cur, cur | FLAG, AcqRel, Acquire)
            {
                Ok(_) => return Ok(true),
                Err(actual) => cur = actual,
            }
        }
        Err(self.poison(Poison::PeerInterference))
    }

    /// Bytes the producer reports having discarded from the old end (informational: the
    /// authoritative count is the `lost` of each [`Read`]).
    pub fn producer_dropped(&self) -> u64 {
        self.mem.word(Word::DroppedOldestBytes).load(Relaxed)
    }
}
