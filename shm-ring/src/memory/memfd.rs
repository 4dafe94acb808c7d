//! Ring regions in sealed memfds: creation, and validated mapping of a peer's memfd.

use std::fs::File;
use std::mem::offset_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, MemfdFlags, SealFlags};

use super::{Backing, RingGeometry, RingMemory};
use crate::error::RingError;
use crate::fence::FenceMode;
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
        #[cfg(miri)]
        {
            let _ = name;
            return Ok(super::miri_heap::create(kind, capacity, max_record));
        }
        #[allow(unreachable_code)]
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .map_err(|e| RingError::io("memfd_create", e))?;
        let len = HEADER_SIZE as u64 + capacity;
        ftruncate(&fd, len).map_err(|e| RingError::io("ftruncate ring memfd", e))?;
        fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::SEAL)
            .map_err(|e| RingError::io("seal ring memfd", e))?;
        let file = File::from(fd);
        let map = map(&file, len as usize)?;
        let header = map.as_mut_ptr().cast::<RingHeader>();
        let fence = FenceMode::of_this_process();
        // SAFETY: the mapping is `len >= HEADER_SIZE` bytes, page aligned (so 64-byte
        // aligned), freshly created and not yet shared with anyone: writing a whole
        // initialised header is the first and only access.
        unsafe { header.write(RingHeader::new(kind, capacity, max_record, fence as u32)) };
        let geometry = RingGeometry {
            kind,
            capacity,
            max_record,
            fence,
        };
        Ok(Self::from_map(map, file, geometry))
    }

    /// Maps a ring region received from a peer, checking everything before use: seals,
    /// size, magic, version, kind, geometry and fence mode. `expected` is the kind this side
    /// needs.
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
        let identity = Identity {
            magic: u64_at(offset_of!(RingHeader, magic)),
            version: u32_at(offset_of!(RingHeader, version)),
            kind: u32_at(offset_of!(RingHeader, kind)),
            capacity: u64_at(offset_of!(RingHeader, capacity)),
            data_offset: u64_at(offset_of!(RingHeader, data_offset)),
            max_record: u32_at(offset_of!(RingHeader, max_record)),
            fence: u32_at(offset_of!(RingHeader, fence)),
        };
        let geometry = identity.validate(len, expected)?;
        Ok(Self::from_map(map, file, geometry))
    }

    /// The memfd behind this ring, to hand to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.backing {
            Backing::Memfd { file, .. } => file.as_fd(),
            #[cfg(miri)]
            Backing::MiriHeap(_) => panic!("a heap-backed ring (under Miri) has no descriptor"),
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

/// The identity line of a peer's region, as copied out.
struct Identity {
    magic: u64,
    version: u32,
    kind: u32,
    capacity: u64,
    data_offset: u64,
    max_record: u32,
    fence: u32,
}

impl Identity {
    fn validate(self, len: u64, expected: RingKind) -> Result<RingGeometry, RingError> {
        if self.magic != crate::layout::MAGIC {
            return Err(RingError::BadRegion("bad magic"));
        }
        // The version comes right after the magic in every layout, so a region from another
        // release is told apart from garbage, and the error says which side to upgrade.
        if self.version != crate::layout::VERSION {
            return Err(RingError::LayoutVersion {
                found: self.version,
                ours: crate::layout::VERSION,
            });
        }
        let kind =
            RingKind::from_u32(self.kind).ok_or(RingError::BadRegion("unknown ring kind"))?;
        if kind != expected {
            return Err(RingError::BadRegion("ring kind is not the expected one"));
        }
        let capacity = self.capacity;
        if !check_capacity(capacity) {
            return Err(RingError::BadRegion(
                "capacity is not a power of two in range",
            ));
        }
        if self.data_offset != HEADER_SIZE as u64 || len != HEADER_SIZE as u64 + capacity {
            return Err(RingError::BadRegion(
                "region size does not match its header",
            ));
        }
        let max_record = match kind {
            RingKind::Bytes => 0,
            RingKind::Records => {
                if self.max_record == 0 || u64::from(self.max_record) > capacity / 4 {
                    return Err(RingError::BadRegion("largest record size out of range"));
                }
                self.max_record
            }
        };
        let fence = FenceMode::from_u32(self.fence)
            .ok_or(RingError::BadRegion("unknown fence mode"))?
            .check_attach()?;
        Ok(RingGeometry {
            kind,
            capacity,
            max_record,
            fence,
        })
    }
}
