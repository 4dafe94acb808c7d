//! The operation tables QEMU calls for `-chardev plugin` and `-audiodev plugin`, and what
//! their entry points share: reading the instance description, creating and closing an
//! instance, and reaching a live one.
//!
//! Every entry point runs under [`guard`] and, on an instance, under `Instance::guarded`.

mod audio;
mod chardev;

pub(crate) use audio::AUDIO_OPS;
pub(crate) use chardev::CHARDEV_OPS;

use std::ffi::c_char;

use crate::abi::QbpInstanceInfo;
use crate::ffi::{c_str, guard, set_err};
use crate::host::{self, Host};
use crate::instance::{Identity, Instance};
use crate::{opts, tables};

/// Reads the instance description QEMU passes to `open`.
///
/// # Safety
/// `info` is NULL or points to a valid QbpInstanceInfo whose strings live during the call.
unsafe fn identity(info: *const QbpInstanceInfo) -> Result<(Identity, opts::Options), String> {
    // SAFETY: guaranteed by the caller.
    let info = unsafe { tables::copy_table(info) }?;
    // SAFETY: the strings are valid during this call (header contract).
    let (device, vm_name, vm_uuid, opts) = unsafe {
        (
            c_str(info.id),
            c_str(info.vm_name),
            c_str(info.vm_uuid),
            c_str(info.config),
        )
    };
    if device.is_empty() || device.len() > shm_ring::handover::MAX_NAME {
        return Err("the device id must be 1 to 255 bytes".into());
    }
    let opts = opts::parse(&opts)?;
    let vm_name = truncate(vm_name);
    Ok((
        Identity {
            vm_name,
            vm_uuid: truncate(vm_uuid),
            device,
        },
        opts,
    ))
}

fn truncate(mut s: String) -> String {
    let max = shm_ring::handover::MAX_NAME;
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// An `open` entry point: `create` makes the instance from the host and QEMU's description
/// `info`; a failure (or a panic) leaves its message in QEMU's error buffer and returns NULL.
///
/// # Safety
/// `info` as for [`identity`]; `err` is NULL or valid for `err_len` bytes.
unsafe fn open<T>(
    info: *const QbpInstanceInfo,
    err: *mut c_char,
    err_len: usize,
    create: impl FnOnce(Host, Identity, opts::Options) -> Result<Box<Instance>, String>,
) -> *mut T {
    let r = guard(Err("internal error".to_string()), || {
        let host = host::get().ok_or("plugin not initialised")?;
        // SAFETY: QEMU passes a valid info for the duration of the call.
        let (id, opts) = unsafe { identity(info) }?;
        create(host, id, opts)
    });
    match r {
        Ok(inst) => Box::into_raw(inst).cast(),
        Err(msg) => {
            // SAFETY: QEMU passes an error buffer of err_len bytes.
            unsafe { set_err(err, err_len, &msg) };
            std::ptr::null_mut()
        }
    }
}

/// A `close` entry point: frees what [`open`] returned and logs the device's summary.
///
/// # Safety
/// `p` is NULL or a pointer [`open`] returned, which QEMU closes once.
unsafe fn close<T>(p: *mut T) {
    guard((), || {
        if p.is_null() {
            return;
        }
        // SAFETY: the pointer came from Box::into_raw in `open`; QEMU closes it once.
        let inst = unsafe { Box::from_raw(p.cast::<Instance>()) };
        inst.log_summary();
    })
}

/// The instance behind a device pointer; NULL is tolerated.
///
/// # Safety
/// `p` is NULL or a pointer [`open`] returned that QEMU has not closed.
unsafe fn instance<'a, T>(p: *mut T) -> Option<&'a Instance> {
    // SAFETY: guaranteed by the caller.
    unsafe { p.cast::<Instance>().as_ref() }
}

/// Runs `f` on the live instance behind `p`; nothing when it is NULL or broken.
///
/// # Safety
/// As for [`instance`].
unsafe fn with_instance<T>(p: *mut T, f: impl FnOnce(&Instance)) {
    guard((), || {
        // SAFETY: guaranteed by the caller.
        if let Some(i) = unsafe { instance(p) } {
            i.guarded(|| f(i), || ());
        }
    })
}
