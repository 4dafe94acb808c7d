//! Rings in heap memory for Miri, which cannot run memfd_create or mmap.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use super::{Backing, RingGeometry, RingMemory};
use crate::layout::{RingHeader, RingKind, HEADER_SIZE};

/// A zeroed, 64-byte aligned heap allocation holding a ring region.
pub(crate) struct Region {
    base: NonNull<u8>,
    layout: Layout,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `create` with this layout, freed once.
        unsafe { dealloc(self.base.as_ptr(), self.layout) };
    }
}

pub(super) fn create(kind: RingKind, capacity: u64, max_record: u32) -> RingMemory {
    let fence = crate::fence::FenceMode::of_this_process();
    let layout =
        Layout::from_size_align(HEADER_SIZE + capacity as usize, 64).expect("a ring layout");
    // SAFETY: the layout has a non-zero size.
    let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("heap for a ring");
    // SAFETY: the allocation holds a header and is 64-byte aligned; first access.
    unsafe {
        base.as_ptr().cast::<RingHeader>().write(RingHeader::new(
            kind,
            capacity,
            max_record,
            fence as u32,
        ))
    };
    RingMemory {
        header: base.cast(),
        // SAFETY: HEADER_SIZE is inside the allocation.
        data: unsafe { NonNull::new_unchecked(base.as_ptr().add(HEADER_SIZE)) },
        geometry: RingGeometry {
            kind,
            capacity,
            max_record,
            fence,
        },
        backing: Backing::MiriHeap(Region { base, layout }),
    }
}
