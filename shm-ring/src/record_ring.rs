//! The record ring: framed records (audio periods) over the byte ring protocol.
//!
//! Each record is a 32-byte [`RecordMeta`] header followed by its payload, padded to 8
//! bytes; a record may wrap around the end of the data area. The producer never blocks
//! and never overwrites: when a record does not fit, it is dropped whole ("drop the
//! newest", which keeps real time) and counted. Sequence numbers count dropped records
//! too, so a consumer sees every gap.

use std::sync::Arc;

use crate::byte_ring::{ByteConsumer, ByteProducer};
use crate::error::{Poison, RingError};
use crate::layout::RingKind;
use crate::memory::{RingMemory, Word};
use crate::sync::Ordering::Relaxed;

/// Size of the header in front of every record.
pub const RECORD_HEADER_SIZE: usize = 32;

/// The description of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta {
    /// Counts every record the producer was handed, including dropped ones.
    pub seq: u64,
    /// When the producer received the data (CLOCK_MONOTONIC, ns).
    pub timestamp_ns: u64,
    /// Audio frames in the payload (informational for other record types).
    pub frames: u32,
    /// Free for the application.
    pub flags: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl RecordMeta {
    fn encode(&self) -> [u8; RECORD_HEADER_SIZE] {
        let mut b = [0u8; RECORD_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..8].copy_from_slice(&self.frames.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b[24..28].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    fn decode(b: &[u8; RECORD_HEADER_SIZE]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        RecordMeta {
            len: u32_at(0),
            frames: u32_at(4),
            seq: u64_at(8),
            timestamp_ns: u64_at(16),
            flags: u32_at(24),
        }
    }
}

fn framed_len(payload: usize) -> u64 {
    (RECORD_HEADER_SIZE + payload).next_multiple_of(8) as u64
}

/// What pushing a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// False: the ring was full and the record was dropped (and counted).
    pub stored: bool,
    /// The sequence number the record got.
    pub seq: u64,
    /// The consumer is asleep: ring its doorbell.
    pub wake_consumer: bool,
}

/// The writing end of a record ring.
#[derive(Debug)]
pub struct RecordProducer {
    inner: ByteProducer,
    next_seq: u64,
    max_record: u32,
    dropped: u64,
}

impl RecordProducer {
    /// Takes the producer role of a records ring.
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        let max_record = mem.geometry().max_record;
        Ok(RecordProducer {
            inner: ByteProducer::with_kind(mem, RingKind::Records)?,
            next_seq: 0,
            max_record,
            dropped: 0,
        })
    }

    /// The ring memory this producer writes.
    pub fn memory(&self) -> &Arc<RingMemory> {
        self.inner.memory()
    }

    /// Largest payload a record may carry.
    pub fn max_payload(&self) -> usize {
        self.max_record as usize
    }

    /// Records dropped so far because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The poison that stopped this ring, if any.
    pub fn poisoned(&self) -> Option<Poison> {
        self.inner.poisoned()
    }

    /// Records stored that the consumer had not taken when this side last looked: what is
    /// lost if the ring is abandoned now (after a poison, say). Walks the record headers
    /// this side wrote between the consumer's last released position and its own; a header
    /// the peer scribbled over ends the walk and counts as one more record lost (the bytes
    /// after it cannot be told apart any more). At most capacity / 32 steps.
    pub fn unconsumed_records(&self) -> u64 {
        let inner = &self.inner;
        let (mut pos, end) = (inner.cached_read, inner.write);
        let mut n = 0;
        while pos < end {
            let mut hdr = [0u8; RECORD_HEADER_SIZE];
            if end - pos < RECORD_HEADER_SIZE as u64 {
                return n + 1;
            }
            inner.mem.copy_out(pos, &mut hdr);
            let len = RecordMeta::decode(&hdr).len;
            let next = pos + framed_len(len as usize);
            if len > self.max_record || next > end {
                return n + 1;
            }
            n += 1;
            pos = next;
        }
        n
    }

    /// Appends one record, or drops it (counted) when it does not fit. Payloads larger than
    /// [`RecordProducer::max_payload`] are dropped too: the caller splits them.
    pub fn push(
        &mut self,
        timestamp_ns: u64,
        frames: u32,
        flags: u32,
        payload: &[u8],
    ) -> Result<Pushed, Poison> {
        // A poisoned ring is not touched again, not even its drop counters.
        if let Some(p) = self.inner.poisoned() {
            return Err(p);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let need = framed_len(payload.len());
        if payload.len() > self.max_record as usize || self.inner.free_for(need)? < need {
            self.dropped += 1;
            let m = &self.inner.mem;
            // Relaxed: informational counters for the peer's statistics. This side is their
            // only writer: a load and a store, no locked read-modify-write.
            for (w, n) in [
                (Word::DroppedRecords, 1),
                (Word::DroppedRecordBytes, payload.len() as u64),
            ] {
                let c = m.word(w);
                c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
            }
            return Ok(Pushed {
                stored: false,
                seq,
                wake_consumer: false,
            });
        }
        let meta = RecordMeta {
            seq,
            timestamp_ns,
            frames,
            flags,
            len: payload.len() as u32,
        };
        let pos = self.inner.write;
        // SAFETY: `need` bytes from `pos` are free (checked above) and the header plus the
        // payload fit inside them.
        unsafe {
            self.inner.mem.copy_in(pos, &meta.encode());
            self.inner
                .mem
                .copy_in(pos + RECORD_HEADER_SIZE as u64, payload);
        }
        let wake_consumer = self.inner.publish(pos + need);
        Ok(Pushed {
            stored: true,
            seq,
            wake_consumer,
        })
    }
}

/// The reading end of a record ring.
#[derive(Debug)]
pub struct RecordConsumer {
    inner: ByteConsumer,
    max_record: u32,
}

/// One record taken from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Popped {
    /// The record's header.
    pub meta: RecordMeta,
    /// The producer waits for space: ring its doorbell (records producers never wait, but
    /// the flag is reported faithfully).
    pub wake_producer: bool,
}

impl RecordConsumer {
    /// Takes the consumer role of a records ring.
    pub fn new(mem: Arc<RingMemory>) -> Result<Self, RingError> {
        let max_record = mem.geometry().max_record;
        Ok(RecordConsumer {
            inner: ByteConsumer::with_kind(mem, RingKind::Records)?,
            max_record,
        })
    }

    /// The poison that stopped this ring, if any.
    pub fn poisoned(&self) -> Option<Poison> {
        self.inner.poisoned()
    }

    /// Takes the next record, copying its payload into `payload` (cleared first). Returns
    /// `None` when the ring is empty.
    pub fn pop(&mut self, payload: &mut Vec<u8>) -> Result<Option<Popped>, Poison> {
        // Records are published whole: one available byte means a whole record.
        let (avail, lost) = self.inner.sync_for(1)?;
        if lost != 0 {
            // Records producers never overwrite: a moved read position is an attack.
            return Err(self.inner.poison(Poison::PositionWentBack));
        }
        if avail == 0 {
            return Ok(None);
        }
        if avail < RECORD_HEADER_SIZE as u64 {
            return Err(self.inner.poison(Poison::BadRecordLength));
        }
        let mut hdr = [0u8; RECORD_HEADER_SIZE];
        self.inner.peek_raw(&mut hdr, avail);
        let meta = RecordMeta::decode(&hdr);
        let need = framed_len(meta.len as usize);
        if meta.len > self.max_record || need > avail {
            return Err(self.inner.poison(Poison::BadRecordLength));
        }
        payload.clear();
        payload.resize(meta.len as usize, 0);
        self.inner
            .mem
            .copy_out(self.inner.read + RECORD_HEADER_SIZE as u64, payload);
        if self.inner.after_copy()? != 0 {
            // Records producers never overwrite: a moved floor is an attack.
            return Err(self.inner.poison(Poison::PositionWentBack));
        }
        Ok(Some(Popped {
            meta,
            wake_producer: self.inner.release(need),
        }))
    }

    /// The ring memory this consumer reads.
    pub fn memory(&self) -> &Arc<RingMemory> {
        self.inner.memory()
    }

    /// Same as [`ByteConsumer::prepare_sleep`].
    pub fn prepare_sleep(&mut self) -> Result<bool, Poison> {
        self.inner.prepare_sleep()
    }

    /// Records the producer reports as dropped (informational).
    pub fn producer_dropped(&self) -> u64 {
        self.inner.mem.word(Word::DroppedRecords).load(Relaxed)
    }
}
