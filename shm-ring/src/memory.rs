//! Ring regions: creation in a sealed memfd, and validated mapping of a peer's memfd.
//!
//! This module and `shared` are the only places that touch shared memory. No Rust
//! reference to the region is ever formed except to its atomic words (`&AtomicU64`, whose
//! interior mutability permits the peer's concurrent writes): the header is reached through
//! raw field pointers, and the data area is copied with the atomic copies of `shared`.

use std::ptr::{addr_of_mut, NonNull};

#[cfg(loom)]
use crate::error::RingError;
use crate::fence::FenceMode;
use crate::layout::{RingHeader, RingKind};
#[cfg(loom)]
use crate::layout::{HEADER_SIZE, MAGIC, VERSION};
use crate::sync::AtomicU64;

/// The immutable description of a ring, copied out of the header once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// What the ring carries.
    pub kind: RingKind,
    /// Size of the data area in bytes (a power of two).
    pub capacity: u64,
    /// Largest record payload in bytes (records rings only; 0 for byte rings).
    pub max_record: u32,
    /// How the ring's sleep handshake is fenced.
    pub fence: FenceMode,
}

/// One mapped ring region: header plus data area.
///
/// The region stays mapped as long as this value (and every producer or consumer holding
/// it through an `Arc`) lives.
pub struct RingMemory {
    header: NonNull<RingHeader>,
    #[cfg(not(loom))]
    data: NonNull<u8>,
    geometry: RingGeometry,
    backing: Backing,
}

impl std::fmt::Debug for RingMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMemory")
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

enum Backing {
    #[cfg(not(loom))]
    Memfd {
        _map: memmap2::MmapRaw,
        file: std::fs::File,
    },
    /// Under Miri, which cannot run memfd_create or mmap: the same layout in a heap
    /// allocation, reached through the same raw pointers and atomic copies.
    #[cfg(all(miri, not(loom)))]
    MiriHeap(miri_heap::Region),
    /// Model checking: loom's atomics cannot live in a mapping.
    #[cfg(loom)]
    Heap {
        header: *mut RingHeader,
        data: LoomData,
    },
}

/// The data area of a model-checked ring.
#[cfg(loom)]
enum LoomData {
    /// One loom `UnsafeCell` per slot: loom fails the model on any access to a slot that
    /// is not ordered after the peer's last access by the positions' happens-before (a
    /// publish or release that is too weak). For rings whose producer never overwrites.
    Cells(Box<[loom::cell::UnsafeCell<u8>]>),
    /// One loom atomic byte per slot, accessed Relaxed like the production copies: for the
    /// flight recorder, whose overwrites race with a consumer's copy by design (the copy is
    /// validated by the discard floor afterwards, and a wrong byte fails the model).
    Atomics(Box<[loom::sync::atomic::AtomicU8]>),
}

// SAFETY: the region is shared memory accessed only through atomics; the pointers stay
// valid for the life of the value regardless of which thread holds it.
unsafe impl Send for RingMemory {}
// SAFETY: as above: no method hands out references to anything but atomic words.
unsafe impl Sync for RingMemory {}

/// One of the header's atomic words.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Word {
    WritePos,
    ReadPos,
    DroppedOldestBytes,
    DroppedRecords,
    DroppedRecordBytes,
    DiscardFloor,
    ProducerWaits,
    ConsumerSleeps,
}

impl RingMemory {
    /// The ring's immutable geometry.
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    /// One atomic word of the header.
    pub(crate) fn word(&self, w: Word) -> &AtomicU64 {
        let h = self.header.as_ptr();
        // SAFETY: `header` points at a live, 64-byte aligned header for as long as `self`
        // lives (mapping or allocation owned by `backing`). Only the field's address is
        // computed (no reference to the header is formed); the result is a shared
        // reference to an atomic, which the peer may modify concurrently by design. std's
        // AtomicU64 has the size and alignment of u64 (asserted in `layout`).
        unsafe {
            &*match w {
                Word::WritePos => addr_of_mut!((*h).write_pos),
                Word::ReadPos => addr_of_mut!((*h).read_pos),
                Word::DroppedOldestBytes => addr_of_mut!((*h).dropped_oldest_bytes),
                Word::DroppedRecords => addr_of_mut!((*h).dropped_records),
                Word::DroppedRecordBytes => addr_of_mut!((*h).dropped_record_bytes),
                Word::DiscardFloor => addr_of_mut!((*h).discard_floor),
                Word::ProducerWaits => addr_of_mut!((*h).producer_waits),
                Word::ConsumerSleeps => addr_of_mut!((*h).consumer_sleeps),
            }
        }
    }

    pub(crate) fn write_pos(&self) -> &AtomicU64 {
        self.word(Word::WritePos)
    }

    pub(crate) fn read_pos(&self) -> &AtomicU64 {
        self.word(Word::ReadPos)
    }

    /// The two pieces `[start, start + first)` and `[0, len - first)` of the data area
    /// that hold `len` bytes from position `pos`.
    fn split(&self, pos: u64, len: usize) -> (usize, usize) {
        let cap = self.geometry.capacity as usize;
        assert!(len <= cap, "a copy larger than the ring");
        let start = (pos as usize) & (cap - 1);
        (start, len.min(cap - start))
    }

    /// Copies `src` into the data area starting at position `pos`, wrapping around the end.
    ///
    /// # Safety
    /// The caller must own the slots `[pos, pos + src.len())` under the ring protocol
    /// (they are free space) and `src.len()` must not exceed the capacity.
    pub(crate) unsafe fn copy_in(&self, pos: u64, src: &[u8]) {
        let (start, first) = self.split(pos, src.len());
        #[cfg(not(loom))]
        // SAFETY: `start + first <= cap` and `src.len() - first <= cap`, so both pieces
        // stay inside the data area; it is accessed only atomically (`shared`).
        unsafe {
            crate::shared::store(&src[..first], self.data.as_ptr().add(start));
            crate::shared::store(&src[first..], self.data.as_ptr());
        }
        #[cfg(loom)]
        {
            let Backing::Heap { data, .. } = &self.backing;
            for (i, b) in src.iter().enumerate() {
                let slot = if i < first { start + i } else { i - first };
                match data {
                    // SAFETY: loom checks that no other access to the slot is concurrent.
                    LoomData::Cells(c) => c[slot].with_mut(|p| unsafe { *p = *b }),
                    LoomData::Atomics(a) => a[slot].store(*b, crate::sync::Ordering::Relaxed),
                }
            }
        }
    }

    /// Copies bytes of the data area starting at position `pos` into `dst`, wrapping.
    /// A misbehaving peer may overwrite them meanwhile: the copy is then of unspecified
    /// value (never undefined behaviour, see `shared`), and the caller validates positions
    /// afterwards and discards it.
    pub(crate) fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let (start, first) = self.split(pos, dst.len());
        #[cfg(not(loom))]
        {
            let (a, b) = dst.split_at_mut(first);
            // SAFETY: both source pieces lie inside the data area (see copy_in) and are
            // read atomically; `dst` is an exclusive Rust buffer outside the mapping.
            unsafe {
                crate::shared::load(self.data.as_ptr().add(start), a);
                crate::shared::load(self.data.as_ptr(), b);
            }
        }
        #[cfg(loom)]
        {
            let Backing::Heap { data, .. } = &self.backing;
            for (i, b) in dst.iter_mut().enumerate() {
                let slot = if i < first { start + i } else { i - first };
                *b = match data {
                    // SAFETY: loom checks that no write to the slot is concurrent.
                    LoomData::Cells(c) => c[slot].with(|p| unsafe { *p }),
                    LoomData::Atomics(a) => a[slot].load(crate::sync::Ordering::Relaxed),
                };
            }
        }
    }
}

#[cfg(not(loom))]
mod memfd;

#[cfg(all(miri, not(loom)))]
mod miri_heap;

#[cfg(loom)]
impl RingMemory {
    /// Heap-backed ring for model checking, its data area of loom `UnsafeCell`s (any
    /// unordered access fails the model). For rings whose producer never overwrites.
    pub fn create_heap(kind: RingKind, capacity: u64, max_record: u32) -> Result<Self, RingError> {
        Self::create_heap_with(kind, capacity, max_record, false)
    }

    /// Heap-backed ring whose data area is loom atomics, for flight-recorder models (the
    /// producer's overwrites race with the consumer's copies by design).
    pub fn create_heap_racy(kind: RingKind, capacity: u64) -> Result<Self, RingError> {
        Self::create_heap_with(kind, capacity, 0, true)
    }

    fn create_heap_with(
        kind: RingKind,
        capacity: u64,
        max_record: u32,
        racy: bool,
    ) -> Result<Self, RingError> {
        // Model checking wants tiny rings; any power of two of at least 8 bytes works.
        if !capacity.is_power_of_two() || capacity < 8 {
            return Err(RingError::BadCapacity(capacity));
        }
        let max_record = match kind {
            RingKind::Bytes => 0,
            RingKind::Records => max_record.min((capacity / 4) as u32),
        };
        let fence = FenceMode::of_this_process();
        let header = Box::into_raw(Box::new(RingHeader::new(
            kind,
            capacity,
            max_record,
            fence as u32,
        )));
        let data = if racy {
            LoomData::Atomics(
                (0..capacity)
                    .map(|_| loom::sync::atomic::AtomicU8::new(0))
                    .collect(),
            )
        } else {
            LoomData::Cells(
                (0..capacity)
                    .map(|_| loom::cell::UnsafeCell::new(0))
                    .collect(),
            )
        };
        Ok(RingMemory {
            // SAFETY: Box::into_raw never returns null.
            header: unsafe { NonNull::new_unchecked(header) },
            geometry: RingGeometry {
                kind,
                capacity,
                max_record,
                fence,
            },
            backing: Backing::Heap { header, data },
        })
    }
}

#[cfg(loom)]
impl Drop for Backing {
    fn drop(&mut self) {
        let Backing::Heap { header, .. } = *self;
        // SAFETY: the pointer came from Box::into_raw in create_heap and is freed once.
        unsafe { drop(Box::from_raw(header)) };
    }
}

// Keep the identity constants referenced in loom builds too.
#[cfg(loom)]
const _: (u64, u32, usize) = (MAGIC, VERSION, HEADER_SIZE);
