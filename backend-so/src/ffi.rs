//! The C boundary: panics are caught at every entry point, strings and error messages
//! cross in QEMU's conventions.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::host::{self, Level};

/// Runs `f`, turning a panic into `fallback` (and a log line) instead of unwinding into C.
pub(crate) fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let what = panic_message(&*e);
            if let Some(h) = host::get() {
                h.log(
                    Level::Error,
                    &format!("ringcast backend: internal error: {what}"),
                );
            }
            fallback
        }
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

/// Reads a C string from the host; NULL reads as "".
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string for the duration of the call.
pub(crate) unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Copies `msg` into the host's error buffer, truncated and NUL-terminated.
///
/// # Safety
/// `err` is NULL or valid for `len` bytes.
pub(crate) unsafe fn set_err(err: *mut c_char, len: usize, msg: &str) {
    if err.is_null() || len == 0 {
        return;
    }
    let n = msg.len().min(len - 1);
    // SAFETY: `n + 1 <= len` bytes are written into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// `EIO` as QEMU's callbacks return it (negated by the caller).
pub(crate) fn libc_eio() -> c_int {
    rustix::io::Errno::IO.raw_os_error()
}
