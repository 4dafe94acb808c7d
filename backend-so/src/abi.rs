//! The Rust mirror of `qemu-patches/include/qemu/backend-plugin.h`.
//!
//! The header is the source of truth; `tests/abi_layout.rs` compiles it with the system C
//! compiler and checks every size and offset below against it.

#![allow(missing_docs, missing_debug_implementations)]

use std::ffi::{c_char, c_int, c_void};

pub const QBP_ABI_MAJOR: u16 = 1;
pub const QBP_ABI_MINOR: u16 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QbpTableHeader {
    pub abi_major: u16,
    pub abi_minor: u16,
    pub struct_size: u32,
}

impl QbpTableHeader {
    pub const fn for_table<T>() -> Self {
        QbpTableHeader {
            abi_major: QBP_ABI_MAJOR,
            abi_minor: QBP_ABI_MINOR,
            struct_size: std::mem::size_of::<T>() as u32,
        }
    }
}

pub const QBP_LOG_ERROR: c_int = 0;
pub const QBP_LOG_WARNING: c_int = 1;
pub const QBP_LOG_INFO: c_int = 2;
pub const QBP_LOG_DEBUG: c_int = 3;

pub const QBP_CLOCK_HOST_MONOTONIC: c_int = 0;
pub const QBP_CLOCK_VIRTUAL: c_int = 1;

pub const QBP_EVENT_IN: u32 = 0x001;
pub const QBP_EVENT_OUT: u32 = 0x004;
pub const QBP_EVENT_ERR: u32 = 0x008;
pub const QBP_EVENT_HUP: u32 = 0x010;

/// Opaque handles owned by the host.
#[repr(C)]
#[derive(Debug)]
pub struct QbpFdWatch {
    _private: [u8; 0],
}
#[repr(C)]
#[derive(Debug)]
pub struct QbpTimer {
    _private: [u8; 0],
}

pub type QbpFdCallback = Option<unsafe extern "C" fn(opaque: *mut c_void, fd: c_int, revents: u32)>;
pub type QbpTimerCallback = Option<unsafe extern "C" fn(opaque: *mut c_void)>;

pub type QbpLogFn = Option<unsafe extern "C" fn(level: c_int, message: *const c_char)>;

#[repr(C)]
#[derive(Debug)]
pub struct QbpHost {
    pub header: QbpTableHeader,
    pub log: QbpLogFn,
    pub clock_ns: Option<unsafe extern "C" fn(clock: c_int) -> u64>,
    pub fd_watch_add: Option<
        unsafe extern "C" fn(
            fd: c_int,
            events: u32,
            cb: QbpFdCallback,
            opaque: *mut c_void,
        ) -> *mut QbpFdWatch,
    >,
    pub fd_watch_remove: Option<unsafe extern "C" fn(watch: *mut QbpFdWatch)>,
    pub timer_new: Option<
        unsafe extern "C" fn(
            clock: c_int,
            cb: QbpTimerCallback,
            opaque: *mut c_void,
        ) -> *mut QbpTimer,
    >,
    pub timer_mod: Option<unsafe extern "C" fn(timer: *mut QbpTimer, expire_ns: u64)>,
    pub timer_free: Option<unsafe extern "C" fn(timer: *mut QbpTimer)>,
}

#[repr(C)]
#[derive(Debug)]
pub struct QbpInstanceInfo {
    pub header: QbpTableHeader,
    pub id: *const c_char,
    pub vm_name: *const c_char,
    pub vm_uuid: *const c_char,
    pub config: *const c_char,
}

/// Opaque instance types handed to the host.
#[repr(C)]
#[derive(Debug)]
pub struct QbpChardev {
    _private: [u8; 0],
}
#[repr(C)]
#[derive(Debug)]
pub struct QbpAudio {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Debug)]
pub struct QbpChardevFrontend {
    pub header: QbpTableHeader,
    pub opaque: *mut c_void,
    pub can_write: Option<unsafe extern "C" fn(opaque: *mut c_void) -> usize>,
    pub write: Option<unsafe extern "C" fn(opaque: *mut c_void, buf: *const u8, len: usize)>,
}

#[repr(C)]
#[derive(Debug)]
pub struct QbpChardevOps {
    pub header: QbpTableHeader,
    pub open: Option<
        unsafe extern "C" fn(
            info: *const QbpInstanceInfo,
            frontend: *const QbpChardevFrontend,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut QbpChardev,
    >,
    pub close: Option<unsafe extern "C" fn(chr: *mut QbpChardev)>,
    pub write:
        Option<unsafe extern "C" fn(chr: *mut QbpChardev, buf: *const u8, len: usize) -> c_int>,
    pub write_ready: Option<unsafe extern "C" fn(chr: *mut QbpChardev) -> bool>,
    pub write_wait_fd: Option<unsafe extern "C" fn(chr: *mut QbpChardev) -> c_int>,
    pub accept_input: Option<unsafe extern "C" fn(chr: *mut QbpChardev)>,
    pub set_fe_open: Option<unsafe extern "C" fn(chr: *mut QbpChardev, fe_open: c_int)>,
    /// Since ABI 1.1: `QBP_CHARDEV_FLAG_*`.
    pub flags: u64,
}

/// The plugin only reports a short write while it will make room again by itself, so QEMU
/// lets virtconsole wait for it instead of dropping output (ABI 1.1).
pub const QBP_CHARDEV_FLAG_FLOW_CONTROL: u64 = 1 << 0;

pub const QBP_FMT_U8: u16 = 0;
pub const QBP_FMT_S8: u16 = 1;
pub const QBP_FMT_U16: u16 = 2;
pub const QBP_FMT_S16: u16 = 3;
pub const QBP_FMT_U32: u16 = 4;
pub const QBP_FMT_S32: u16 = 5;
pub const QBP_FMT_F32: u16 = 6;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QbpAudioFormat {
    pub frequency: u32,
    pub channels: u16,
    pub sample_format: u16,
    pub big_endian: u8,
    pub reserved: [u8; 7],
}

#[repr(C)]
#[derive(Debug)]
pub struct QbpAudioOps {
    pub header: QbpTableHeader,
    pub open: Option<
        unsafe extern "C" fn(
            info: *const QbpInstanceInfo,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut QbpAudio,
    >,
    pub close: Option<unsafe extern "C" fn(audio: *mut QbpAudio)>,
    pub out_open:
        Option<unsafe extern "C" fn(audio: *mut QbpAudio, format: *const QbpAudioFormat) -> c_int>,
    pub out_close: Option<unsafe extern "C" fn(audio: *mut QbpAudio)>,
    pub out_enable: Option<unsafe extern "C" fn(audio: *mut QbpAudio, enable: bool)>,
    pub out_write:
        Option<unsafe extern "C" fn(audio: *mut QbpAudio, buf: *const c_void, len: usize) -> usize>,
    pub in_open:
        Option<unsafe extern "C" fn(audio: *mut QbpAudio, format: *const QbpAudioFormat) -> c_int>,
    pub in_close: Option<unsafe extern "C" fn(audio: *mut QbpAudio)>,
    pub in_enable: Option<unsafe extern "C" fn(audio: *mut QbpAudio, enable: bool)>,
    pub in_read:
        Option<unsafe extern "C" fn(audio: *mut QbpAudio, buf: *mut c_void, len: usize) -> usize>,
}

#[repr(C)]
#[derive(Debug)]
pub struct QbpPluginInfo {
    pub header: QbpTableHeader,
    pub name: *const c_char,
    pub chardev: *const QbpChardevOps,
    pub audio: *const QbpAudioOps,
}

pub type QbpPluginQueryFn = unsafe extern "C" fn(host: *const QbpHost) -> *const QbpPluginInfo;
