//! Reading the tables QEMU hands the plugin, whatever their version.
//!
//! The versioning rule of the ABI: every table starts with a `QbpTableHeader` whose
//! `struct_size` is the size of the table as the host built it. It must be at least the
//! table's frozen 1.0 size; a newer host may append members (a larger table), an older
//! plugin does not know them; members beyond `struct_size` are absent. So a table is never
//! used in place: its header is read first, then `min(struct_size, sizeof)` bytes are copied
//! into a zeroed local (absent members read as NULL / zero), and only the copy is used.

use std::mem::{size_of, MaybeUninit};

use crate::abi::{self, QbpChardevFrontend, QbpHost, QbpInstanceInfo, QbpTableHeader};

/// A table that starts with a `QbpTableHeader` and is valid when all-zero (its members
/// are integers, raw pointers and optional function pointers).
///
/// # Safety
/// Implementors are `#[repr(C)]`, begin with a `QbpTableHeader`, and every member is valid
/// as all-zero bytes.
pub(crate) unsafe trait AbiTable: Sized {
    /// What the table is called in error messages.
    const NAME: &'static str;
    /// The table's size in ABI 1.0, frozen: a host table smaller than this is refused.
    const SIZE_1_0: usize;
}

// SAFETY: all four are #[repr(C)] tables of integers, raw pointers and Option<fn> that start
// with their header (pinned against the C header by tests/abi_layout.rs). Their 1.0 sizes
// are today's sizes: any member added later goes after them.
unsafe impl AbiTable for QbpHost {
    const NAME: &'static str = "host table";
    const SIZE_1_0: usize = size_of::<QbpHost>();
}
// SAFETY: as above.
unsafe impl AbiTable for QbpInstanceInfo {
    const NAME: &'static str = "instance info";
    const SIZE_1_0: usize = size_of::<QbpInstanceInfo>();
}
// SAFETY: as above.
unsafe impl AbiTable for QbpChardevFrontend {
    const NAME: &'static str = "chardev frontend table";
    const SIZE_1_0: usize = size_of::<QbpChardevFrontend>();
}

/// Copies the table at `p` into a zeroed local after checking its header.
///
/// # Safety
/// `p` is NULL or points to a readable table that starts with a `QbpTableHeader` and is
/// readable for `header.struct_size` bytes (the ABI's contract for every table).
pub(crate) unsafe fn copy_table<T: AbiTable>(p: *const T) -> Result<T, String> {
    if p.is_null() {
        return Err(format!("no {}", T::NAME));
    }
    // SAFETY: every table starts with its header (caller); read_unaligned needs no
    // alignment and forms no reference to the host's memory.
    let header = unsafe { p.cast::<QbpTableHeader>().read_unaligned() };
    if header.abi_major != abi::QBP_ABI_MAJOR {
        return Err(format!(
            "{} of ABI {}.{} is not supported (this plugin speaks {}.x)",
            T::NAME,
            header.abi_major,
            header.abi_minor,
            abi::QBP_ABI_MAJOR
        ));
    }
    let size = header.struct_size as usize;
    if size < T::SIZE_1_0 {
        return Err(format!(
            "{} has {size} bytes, less than the {} bytes of ABI {}.0",
            T::NAME,
            T::SIZE_1_0,
            abi::QBP_ABI_MAJOR
        ));
    }
    let mut local = MaybeUninit::<T>::zeroed();
    // SAFETY: the host's table is readable for `size` bytes (caller) and the local for
    // size_of::<T>(); the copy takes the smaller of the two, into a separate allocation.
    unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            local.as_mut_ptr().cast::<u8>(),
            size.min(size_of::<T>()),
        )
    };
    // SAFETY: all-zero is a valid T (AbiTable), and the copied prefix holds the host's
    // valid values for the members it has.
    Ok(unsafe { local.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_int;

    /// The host table as a future ABI 1.1 might define it: one member appended.
    #[repr(C)]
    struct HostV1_1 {
        base: QbpHost,
        added: Option<unsafe extern "C" fn() -> c_int>,
    }

    // SAFETY: repr(C), starts with QbpHost (so with its header), all members zero-valid.
    unsafe impl AbiTable for HostV1_1 {
        const NAME: &'static str = "host table";
        const SIZE_1_0: usize = size_of::<QbpHost>();
    }

    unsafe extern "C" fn log(_level: c_int, _msg: *const std::ffi::c_char) {}
    unsafe extern "C" fn added() -> c_int {
        11
    }

    fn host(struct_size: usize) -> QbpHost {
        QbpHost {
            header: QbpTableHeader {
                abi_major: abi::QBP_ABI_MAJOR,
                abi_minor: 0,
                struct_size: struct_size as u32,
            },
            log: Some(log),
            clock_ns: None,
            fd_watch_add: None,
            fd_watch_remove: None,
            timer_new: None,
            timer_mod: None,
            timer_free: None,
        }
    }

    #[test]
    fn an_older_smaller_table_reads_its_members_and_the_newer_ones_as_absent() {
        // A 1.0 host (smaller than this "1.1 plugin's" table), in an allocation of exactly
        // its own size: reading past it would be out of bounds (Miri and ASan see it).
        let h = Box::new(host(size_of::<QbpHost>()));
        // SAFETY: a valid table of struct_size bytes.
        let t = unsafe { copy_table::<HostV1_1>((&*h as *const QbpHost).cast()) }.unwrap();
        assert!(t.base.log.is_some());
        assert!(t.added.is_none());
    }

    #[test]
    fn a_newer_larger_table_is_read_up_to_what_this_plugin_knows() {
        let h = HostV1_1 {
            base: host(size_of::<HostV1_1>()),
            added: Some(added),
        };
        // SAFETY: a valid table of struct_size bytes.
        let t = unsafe { copy_table::<QbpHost>((&h as *const HostV1_1).cast()) }.unwrap();
        assert!(t.log.is_some());
        assert_eq!(t.header.struct_size as usize, size_of::<HostV1_1>());
        // And a 1.1 plugin sees the appended member.
        // SAFETY: as above.
        let t = unsafe { copy_table::<HostV1_1>(&h) }.unwrap();
        // SAFETY: a function of this test.
        assert_eq!(unsafe { t.added.unwrap()() }, 11);
    }

    #[test]
    fn a_table_smaller_than_1_0_or_of_another_major_is_refused_with_the_reason() {
        let h = host(size_of::<QbpHost>() - 8);
        // SAFETY: the allocation is larger than the struct_size claimed.
        let e = unsafe { copy_table::<QbpHost>(&h) }.err().unwrap();
        assert!(e.contains("less than the"), "{e}");
        let mut h = host(size_of::<QbpHost>());
        h.header.abi_major = 2;
        // SAFETY: a valid table.
        let e = unsafe { copy_table::<QbpHost>(&h) }.err().unwrap();
        assert!(e.contains("ABI 2.0 is not supported"), "{e}");
        // SAFETY: NULL is allowed.
        let e = unsafe { copy_table::<QbpHost>(std::ptr::null()) }
            .err()
            .unwrap();
        assert_eq!(e, "no host table");
    }
}
