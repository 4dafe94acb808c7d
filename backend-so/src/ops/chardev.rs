//! The character device entry points (`QbpChardevOps`).

use std::ffi::{c_char, c_int};

use super::{close, instance, open, with_instance};
use crate::abi::{
    QbpChardev, QbpChardevFrontend, QbpChardevOps, QbpInstanceInfo, QbpTableHeader,
    QBP_CHARDEV_FLAG_FLOW_CONTROL,
};
use crate::console;
use crate::ffi::{guard, libc_eio};
use crate::instance::Instance;
use crate::tables;

unsafe extern "C" fn chr_open(
    info: *const QbpInstanceInfo,
    frontend: *const QbpChardevFrontend,
    err: *mut c_char,
    err_len: usize,
) -> *mut QbpChardev {
    let create = |host, id, opts| {
        // SAFETY: QEMU passes a frontend table valid for the call (its functions and opaque
        // stay valid until close); it is copied, not kept.
        let fe = unsafe { tables::copy_table(frontend) }?;
        let fe = console::Frontend::from_table(&fe)?;
        Instance::open_console(host, id, opts, fe)
    };
    // SAFETY: QEMU passes a valid info and an error buffer of err_len bytes.
    unsafe { open(info, err, err_len, create) }
}

unsafe extern "C" fn chr_close(chr: *mut QbpChardev) {
    // SAFETY: the pointer came from chr_open; QEMU closes it once.
    unsafe { close(chr) }
}

unsafe extern "C" fn chr_write(chr: *mut QbpChardev, buf: *const u8, len: usize) -> c_int {
    guard(-libc_eio(), || {
        // SAFETY: a live instance (ABI contract).
        let Some(inst) = (unsafe { instance(chr) }) else {
            return -libc_eio();
        };
        if len == 0 {
            return 0;
        }
        if buf.is_null() {
            return -libc_eio();
        }
        // SAFETY: QEMU passes `len` readable bytes at `buf`.
        let data = unsafe { std::slice::from_raw_parts(buf, len) };
        let n = len.min(c_int::MAX as usize);
        inst.guarded(
            || inst.chr_write(data),
            || {
                inst.discard(n as u64);
                n as c_int
            },
        )
    })
}

unsafe extern "C" fn chr_write_ready(chr: *mut QbpChardev) -> bool {
    // On an internal error say "ready": QEMU then retries the write, which is safe.
    guard(true, || {
        // SAFETY: a live instance (ABI contract).
        unsafe { instance(chr) }.is_none_or(|i| i.guarded(|| i.chr_write_ready(), || true))
    })
}

unsafe extern "C" fn chr_write_wait_fd(chr: *mut QbpChardev) -> c_int {
    guard(-1, || {
        // SAFETY: a live instance (ABI contract).
        unsafe { instance(chr) }.map_or(-1, |i| i.guarded(|| i.chr_write_wait_fd(), || -1))
    })
}

unsafe extern "C" fn chr_accept_input(chr: *mut QbpChardev) {
    // SAFETY: a live instance (ABI contract).
    unsafe { with_instance(chr, Instance::pump_input) }
}

unsafe extern "C" fn chr_set_fe_open(_chr: *mut QbpChardev, _fe_open: c_int) {}

pub(crate) static CHARDEV_OPS: QbpChardevOps = QbpChardevOps {
    header: QbpTableHeader::for_table::<QbpChardevOps>(),
    open: Some(chr_open),
    close: Some(chr_close),
    write: Some(chr_write),
    write_ready: Some(chr_write_ready),
    write_wait_fd: Some(chr_write_wait_fd),
    accept_input: Some(chr_accept_input),
    set_fe_open: Some(chr_set_fe_open),
    // The ring pushes back only while ringcastd is attached; without it the console is a
    // flight recorder that overwrites its oldest output, so virtconsole may wait for it.
    flags: QBP_CHARDEV_FLAG_FLOW_CONTROL,
};
