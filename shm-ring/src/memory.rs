//! Ring regions: creation in a sealed memfd, and validated mapping of a peer's memfd.
//!
//! This module and the ring modules are the only places that touch shared memory through
//! raw pointers. A region is never viewed as a Rust slice: the peer may write any byte at
//! any time, so data moves with `ptr::copy_nonoverlapping` and control words are atomics.

use std::ptr::NonNull;

#[cfg(loom)]
use crate::error::RingError;
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
}

/// One mapped ring region: header plus data area.
///
/// The region stays mapped as long as this value (and every producer or consumer holding
/// it through an `Arc`) lives.
pub struct RingMemory {
    header: NonNull<RingHeader>,
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
    #[cfg(loom)]
    Heap {
        header: *mut RingHeader,
        data: *mut [u8],
    },
}

// SAFETY: the region is shared memory accessed only through atomics and raw copies; the
// pointers stay valid for the life of the value regardless of which thread holds it.
unsafe impl Send for RingMemory {}
// SAFETY: as above: no method hands out references to non-atomic shared bytes.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// The ring's immutable geometry.
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: `header` points at a live, initialised, 64-byte aligned RingHeader for as
        // long as `self` lives (mapping or heap allocation owned by `backing`). Every field
        // the peer may write concurrently is an atomic; the plain fields are only read by
        // `open`, before the value exists.
        unsafe { self.header.as_ref() }
    }

    pub(crate) fn write_pos(&self) -> &AtomicU64 {
        &self.header().write_pos
    }

    pub(crate) fn read_pos(&self) -> &AtomicU64 {
        &self.header().read_pos
    }

    /// Copies `src` into the data area starting at position `pos`, wrapping around the end.
    ///
    /// # Safety
    /// The caller must own the slots `[pos, pos + src.len())` under the ring protocol
    /// (they are free space) and `src.len()` must not exceed the capacity.
    pub(crate) unsafe fn copy_in(&self, pos: u64, src: &[u8]) {
        let cap = self.geometry.capacity as usize;
        debug_assert!(src.len() <= cap);
        let start = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - start);
        // SAFETY: `start + first <= cap` and `src.len() - first <= cap`, so both copies stay
        // inside the data area of `cap` bytes; `src` is a separate Rust allocation, so the
        // ranges never overlap. The caller guarantees the slots are ours to write.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(start), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.data.as_ptr(),
                src.len() - first,
            );
        }
    }

    /// Copies bytes of the data area starting at position `pos` into `dst`, wrapping.
    /// The bytes may be concurrently overwritten by a misbehaving peer; the caller validates
    /// positions afterwards and treats the copy as garbage if they moved.
    pub(crate) fn copy_out(&self, pos: u64, dst: &mut [u8]) {
        let cap = self.geometry.capacity as usize;
        assert!(dst.len() <= cap, "copy_out larger than the ring");
        let start = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - start);
        // SAFETY: both source ranges lie inside the data area (see copy_in); `dst` is an
        // exclusive Rust buffer that cannot alias the shared mapping. Reading bytes the peer
        // writes concurrently yields unspecified values, never UB for plain bytes copied
        // through raw pointers, and the ring protocol discards such copies.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(start), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data.as_ptr(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }
}

#[cfg(not(loom))]
mod memfd {
    use std::fs::File;
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
            let len = st.st_size as u64;
            if len < HEADER_SIZE as u64 {
                return Err(RingError::BadRegion("region smaller than the ring header"));
            }
            let file = File::from(fd);
            let map = map(&file, len as usize)?;
            let base = map.as_ptr();
            // SAFETY: the mapping holds at least HEADER_SIZE bytes and is page aligned. The
            // identity fields are read once with volatile reads (the peer may change them
            // later; we keep these copies and never look again).
            let (magic, version, kind, capacity, data_offset, max_record) = unsafe {
                let h = base.cast::<RingHeader>();
                (
                    std::ptr::addr_of!((*h).magic).read_volatile(),
                    std::ptr::addr_of!((*h).version).read_volatile(),
                    std::ptr::addr_of!((*h).kind).read_volatile(),
                    std::ptr::addr_of!((*h).capacity).read_volatile(),
                    std::ptr::addr_of!((*h).data_offset).read_volatile(),
                    std::ptr::addr_of!((*h).max_record).read_volatile(),
                )
            };
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
        let data = Box::into_raw(vec![0u8; capacity as usize].into_boxed_slice());
        Ok(RingMemory {
            // SAFETY: Box::into_raw never returns null.
            header: unsafe { NonNull::new_unchecked(header) },
            // SAFETY: as above.
            data: unsafe { NonNull::new_unchecked(data.cast::<u8>()) },
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
        let Backing::Heap { header, data } = *self;
        // SAFETY: both pointers came from Box::into_raw in create_heap and are freed once.
        unsafe {
            drop(Box::from_raw(header));
            drop(Box::from_raw(data));
        }
    }
}

// Keep the identity constants referenced in loom builds too.
#[cfg(loom)]
const _: (u64, u32, usize) = (MAGIC, VERSION, HEADER_SIZE);
