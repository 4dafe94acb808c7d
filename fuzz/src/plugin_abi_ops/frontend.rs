//! A fake chardev frontend: it takes console input up to the budget it announced, and
//! reports a plugin that hands it more.

use std::cell::Cell;
use std::ffi::c_void;

use super::host::violation;

#[derive(Debug, Default)]
pub(super) struct Frontend {
    pub(super) budget: Cell<usize>,
    pub(super) received: Cell<u64>,
}

pub(super) unsafe extern "C" fn fe_can_write(opaque: *mut c_void) -> usize {
    // SAFETY: opaque is the Frontend box of a live chardev.
    unsafe { &*(opaque as *const Frontend) }.budget.get()
}

pub(super) unsafe extern "C" fn fe_write(opaque: *mut c_void, buf: *const u8, len: usize) {
    // SAFETY: opaque is the Frontend box of a live chardev.
    let fe = unsafe { &*(opaque as *const Frontend) };
    if buf.is_null() && len > 0 {
        violation("frontend write from NULL".into());
        return;
    }
    if len > fe.budget.get() {
        violation(format!(
            "frontend handed {len} bytes after saying it could take {}",
            fe.budget.get()
        ));
        return;
    }
    fe.budget.set(fe.budget.get() - len);
    fe.received.set(fe.received.get() + len as u64);
}
