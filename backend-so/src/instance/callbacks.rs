//! The callbacks QEMU's main loop calls (retry timer, fd watches). Each runs guarded: a
//! panic latches the instance broken instead of unwinding into QEMU.

use std::ffi::{c_int, c_void};

use super::Instance;

/// # Safety
/// `opaque` is the address of a live `Instance`: watches and timers are removed when the
/// instance drops, so QEMU never calls these for a freed one.
unsafe fn instance<'a>(opaque: *mut c_void) -> &'a Instance {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &*(opaque as *const Instance) }
}

pub(super) unsafe extern "C" fn on_retry_timer(opaque: *mut c_void) {
    crate::ffi::guard((), || {
        // SAFETY: registered with this instance's address in `start`.
        let inst = unsafe { instance(opaque) };
        inst.guarded(|| inst.on_retry(), || ())
    })
}

pub(super) unsafe extern "C" fn on_link_fd(opaque: *mut c_void, _fd: c_int, _revents: u32) {
    crate::ffi::guard((), || {
        // SAFETY: registered with this instance's address in `try_connect`.
        let inst = unsafe { instance(opaque) };
        inst.guarded(|| inst.on_link_readable(), || ())
    })
}

pub(super) unsafe extern "C" fn on_input_fd(opaque: *mut c_void, _fd: c_int, _revents: u32) {
    crate::ffi::guard((), || {
        // SAFETY: registered with this instance's address in `watch_input`.
        let inst = unsafe { instance(opaque) };
        inst.guarded(|| inst.pump_input(), || ())
    })
}
