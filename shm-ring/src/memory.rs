//! Ring regions: creation in a sealed memfd, and validated mapping of a peer's memfd.
//!
//! This module and `shared` are the only places that touch shared memory. No Rust
//! reference to the region is ever formed except to its atomic words (`&AtomicU64`, whose
//! interior mutability permits the peer's concurrent writes): the header is reached through
//! raw field pointers, and the data area is copied with the atomic copies of `shared`.

use std::ptr::{addr_of_mut, NonNull};

#[cfg(loom)]
use crate::error::RingError;
use crate::layout::{RingHeader, RingKind};
#[cfg(loom)]
use crate::layout::{HEADER_SIZE, MAGIC, VERSION};
use crate::sync::{AtomicU64, Ordering};

/// The immutable description of a ring, copied out of the header once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// What the ring carries.
    pub kind: RingKind,
    /// Size of the data area in bytes (a power of two).
    pub capacity: u64,
    /// Largest record payload in bytes (records rings only; 0 for byte rings).
    pub max_record: u32,
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
    /// Model checking: loom's atomics cannot live in a mapping. The data area is one loom
    /// atomic byte per slot, accessed Relaxed like the production copies, so loom explores
    /// stale values of every byte and a publish that is too weak shows up as a wrong byte.
    #[cfg(loom)]
    Heap {
        header: *mut RingHeader,
        data: Box<[loom::sync::atomic::AtomicU8]>,
    },
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
            }
        }
    }

    /// Compare-and-swap of a header word. Every retry loop on peer-controlled state goes
    /// through here, so the unit tests can play a peer that interferes before each attempt.
    pub(crate) fn compare_exchange(
        &self,
        w: Word,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        #[cfg(all(test, not(loom)))]
        interference::before_attempt(self.word(w));
        self.word(w)
            .compare_exchange(current, new, success, failure)
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
                data[slot].store(*b, crate::sync::Ordering::Relaxed);
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
                *b = data[slot].load(crate::sync::Ordering::Relaxed);
            }
        }
    }
}

#[cfg(not(loom))]
mod memfd {
    use std::fs::File;
    use std::mem::offset_of;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::ptr::NonNull;

    use rustix::fs::{fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, MemfdFlags, SealFlags};

    use super::{Backing, RingGeometry, RingMemory};
    use crate::error::RingError;
    use crate::layout::{check_capacity, RingHeader, RingKind, HEADER_SIZE};

    /// Seals a region must carry before the peer maps it: without them the creator could
    /// shrink the file and make the other side fault on access.
    const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

    impl RingMemory {
        /// Creates a ring in a new sealed memfd named `name` (visible in /proc/PID/fd only).
        ///
        /// `max_record` is the largest record payload for [`RingKind::Records`] rings (at
        /// most a quarter of the capacity), and ignored for byte rings.
        pub fn create(
            name: &str,
            kind: RingKind,
            capacity: u64,
            max_record: u32,
        ) -> Result<Self, RingError> {
            if !check_capacity(capacity) {
                return Err(RingError::BadCapacity(capacity));
            }
            let max_record = match kind {
                RingKind::Bytes => 0,
                RingKind::Records => max_record.min((capacity / 4) as u32),
            };
            let fd =
                rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                    .map_err(|e| RingError::io("memfd_create", e))?;
            let len = HEADER_SIZE as u64 + capacity;
            ftruncate(&fd, len).map_err(|e| RingError::io("ftruncate ring memfd", e))?;
            fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::SEAL)
                .map_err(|e| RingError::io("seal ring memfd", e))?;
            let file = File::from(fd);
            let map = map(&file, len as usize)?;
            let header = map.as_mut_ptr().cast::<RingHeader>();
            // SAFETY: the mapping is `len >= HEADER_SIZE` bytes, page aligned (so 64-byte
            // aligned), freshly created and not yet shared with anyone: writing a whole
            // initialised header is the first and only access.
            unsafe { header.write(RingHeader::new(kind, capacity, max_record)) };
            let geometry = RingGeometry {
                kind,
                capacity,
                max_record,
            };
            Ok(Self::from_map(map, file, geometry))
        }

        /// Maps a ring region received from a peer, checking everything before use: seals,
        /// size, magic, version, kind and geometry. `expected` is the kind this side needs.
        pub fn open(fd: OwnedFd, expected: RingKind) -> Result<Self, RingError> {
            let seals = fcntl_get_seals(&fd)
                .map_err(|_| RingError::BadRegion("not a sealable memfd (F_GET_SEALS failed)"))?;
            if !seals.contains(REQUIRED_SEALS) {
                return Err(RingError::BadRegion("memfd is not sealed against resizing"));
            }
            let st = fstat(&fd).map_err(|e| RingError::io("fstat ring memfd", e))?;
            // The size is checked before anything is mapped: a sealed memfd of any size can
            // be sent, and mapping (and populating) a huge one would exhaust this process.
            let len = u64::try_from(st.st_size).unwrap_or(0);
            if !region_len_ok(len) {
                return Err(RingError::RegionSize(len));
            }
            let file = File::from(fd);
            let map = map(&file, len as usize)?;
            // The identity line is copied out once (the peer may change it later; we keep
            // this copy and never look again).
            let mut line = [0u8; 64];
            // SAFETY: the mapping holds at least HEADER_SIZE >= 64 bytes, and is accessed
            // only atomically while shared.
            unsafe { crate::shared::load(map.as_ptr(), &mut line) };
            let u32_at = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&line[i..i + 4]);
                u32::from_ne_bytes(b)
            };
            let u64_at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&line[i..i + 8]);
                u64::from_ne_bytes(b)
            };
            let (magic, version, kind, capacity, data_offset, max_record) = (
                u64_at(offset_of!(RingHeader, magic)),
                u32_at(offset_of!(RingHeader, version)),
                u32_at(offset_of!(RingHeader, kind)),
                u64_at(offset_of!(RingHeader, capacity)),
                u64_at(offset_of!(RingHeader, data_offset)),
                u32_at(offset_of!(RingHeader, max_record)),
            );
            let geometry = validate_identity(
                magic,
                version,
                kind,
                capacity,
                data_offset,
                max_record,
                len,
                expected,
            )?;
            Ok(Self::from_map(map, file, geometry))
        }

        /// The memfd behind this ring, to hand to the peer.
        pub fn fd(&self) -> BorrowedFd<'_> {
            match &self.backing {
                Backing::Memfd { file, .. } => file.as_fd(),
            }
        }

        fn from_map(map: memmap2::MmapRaw, file: File, geometry: RingGeometry) -> Self {
            let base = map.as_mut_ptr();
            RingMemory {
                // SAFETY: mmap never returns null on success.
                header: unsafe { NonNull::new_unchecked(base.cast()) },
                // SAFETY: HEADER_SIZE is inside the mapping (checked by the callers).
                data: unsafe { NonNull::new_unchecked(base.add(HEADER_SIZE)) },
                geometry,
                backing: Backing::Memfd { _map: map, file },
            }
        }
    }

    /// Whether a region of `len` bytes can hold a ring: the header and a data area of a
    /// power of two between MIN_CAPACITY and MAX_CAPACITY.
    pub(super) fn region_len_ok(len: u64) -> bool {
        len.checked_sub(HEADER_SIZE as u64)
            .is_some_and(check_capacity)
    }

    fn map(file: &File, len: usize) -> Result<memmap2::MmapRaw, RingError> {
        // MAP_POPULATE: fault the pages in now, at device creation, instead of on the first
        // trips around the ring, on QEMU's vCPU thread.
        memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(file)
            .map_err(|e| RingError::io("mmap ring memfd", e))
    }

    #[allow(clippy::too_many_arguments)]
    fn validate_identity(
        magic: u64,
        version: u32,
        kind: u32,
        capacity: u64,
        data_offset: u64,
        max_record: u32,
        len: u64,
        expected: RingKind,
    ) -> Result<RingGeometry, RingError> {
        if magic != crate::layout::MAGIC {
            return Err(RingError::BadRegion("bad magic"));
        }
        if version != crate::layout::VERSION {
            return Err(RingError::BadRegion("unsupported ring layout version"));
        }
        let kind = RingKind::from_u32(kind).ok_or(RingError::BadRegion("unknown ring kind"))?;
        if kind != expected {
            return Err(RingError::BadRegion("ring kind is not the expected one"));
        }
        if !check_capacity(capacity) {
            return Err(RingError::BadRegion(
                "capacity is not a power of two in range",
            ));
        }
        if data_offset != HEADER_SIZE as u64 || len != HEADER_SIZE as u64 + capacity {
            return Err(RingError::BadRegion(
                "region size does not match its header",
            ));
        }
        let max_record = match kind {
            RingKind::Bytes => 0,
            RingKind::Records => {
                if max_record == 0 || u64::from(max_record) > capacity / 4 {
                    return Err(RingError::BadRegion("largest record size out of range"));
                }
                max_record
            }
        };
        Ok(RingGeometry {
            kind,
            capacity,
            max_record,
        })
    }
}

#[cfg(loom)]
impl RingMemory {
    /// Heap-backed ring for model checking: loom's atomics cannot live in a mapping.
    pub fn create_heap(kind: RingKind, capacity: u64, max_record: u32) -> Result<Self, RingError> {
        // Model checking wants tiny rings; any power of two of at least 8 bytes works.
        if !capacity.is_power_of_two() || capacity < 8 {
            return Err(RingError::BadCapacity(capacity));
        }
        let max_record = match kind {
            RingKind::Bytes => 0,
            RingKind::Records => max_record.min((capacity / 4) as u32),
        };
        let header = Box::into_raw(Box::new(RingHeader::new(kind, capacity, max_record)));
        let data = (0..capacity)
            .map(|_| loom::sync::atomic::AtomicU8::new(0))
            .collect();
        Ok(RingMemory {
            // SAFETY: Box::into_raw never returns null.
            header: unsafe { NonNull::new_unchecked(header) },
            geometry: RingGeometry {
                kind,
                capacity,
                max_record,
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

/// A hostile peer for the unit tests: a function run on the target word just before each
/// compare-and-swap of this thread.
#[cfg(all(test, not(loom)))]
pub(crate) mod interference {
    use std::cell::RefCell;

    use crate::sync::AtomicU64;

    /// What the interfering peer does to a word.
    pub(crate) type Peer = Box<dyn FnMut(&AtomicU64)>;

    thread_local! {
        static PEER: RefCell<Option<Peer>> = RefCell::new(None);
    }

    /// Installs `f` for this thread (None removes it).
    pub(crate) fn set(f: Option<Peer>) {
        PEER.with(|p| *p.borrow_mut() = f);
    }

    pub(super) fn before_attempt(word: &AtomicU64) {
        PEER.with(|p| {
            if let Some(f) = p.borrow_mut().as_mut() {
                f(word);
            }
        });
    }
}
