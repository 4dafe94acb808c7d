//! Safe access to the services QEMU lends the plugin: log, clocks, fd watches, timers.
//!
//! The host table is handed over once in `qbp_plugin_query` and lives for the rest of the
//! process. All its functions must be called from QEMU's main loop with the big lock held,
//! which is where every plugin entry point runs.

use std::ffi::{c_int, c_void, CString};
use std::os::fd::RawFd;
use std::sync::OnceLock;

use crate::abi::{self, QbpFdWatch, QbpHost, QbpTimer};

/// The validated host table.
#[derive(Clone, Copy)]
pub(crate) struct Host {
    table: &'static QbpHost,
}

// SAFETY: the table is immutable after the query call and valid for the life of the
// process; its functions are only called under QEMU's big lock.
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

static HOST: OnceLock<Host> = OnceLock::new();

/// Why a host table (already copied by `tables::copy_table`, so of a supported version)
/// was refused.
pub(crate) fn check_host(table: &QbpHost) -> Result<(), String> {
    let complete = table.log.is_some()
        && table.clock_ns.is_some()
        && table.fd_watch_add.is_some()
        && table.fd_watch_remove.is_some()
        && table.timer_new.is_some()
        && table.timer_mod.is_some()
        && table.timer_free.is_some();
    if !complete {
        return Err("host table lacks a required function".into());
    }
    Ok(())
}

/// The plugin's copy of the host table, made once.
static TABLE: OnceLock<QbpHost> = OnceLock::new();

/// Installs the host table (first call wins; QEMU hands the same table every time).
pub(crate) fn install(table: QbpHost) -> Host {
    let table: &'static QbpHost = TABLE.get_or_init(|| table);
    *HOST.get_or_init(|| Host { table })
}

/// Logs why a host table was refused before it could be copied, through the table's own
/// log function when the table is of this ABI and large enough to hold it.
///
/// # Safety
/// `host` is NULL or readable for its header's `struct_size` bytes.
pub(crate) unsafe fn log_early(host: *const QbpHost, why: &str) {
    if host.is_null() {
        return;
    }
    // SAFETY: every table starts with its header (caller); no reference is formed.
    let header = unsafe { host.cast::<abi::QbpTableHeader>().read_unaligned() };
    let end = std::mem::offset_of!(QbpHost, log) + std::mem::size_of::<abi::QbpLogFn>();
    if header.abi_major != abi::QBP_ABI_MAJOR || (header.struct_size as usize) < end {
        return;
    }
    // SAFETY: the member lies inside struct_size bytes (checked), read without a reference.
    let log = unsafe { std::ptr::addr_of!((*host).log).read_unaligned() };
    if let Some(log) = log {
        let msg = CString::new(format!("ringcast backend: {why}")).unwrap_or_default();
        // SAFETY: the host's log function takes a C string valid during the call.
        unsafe { log(abi::QBP_LOG_ERROR, msg.as_ptr()) };
    }
}

/// The installed host, if `qbp_plugin_query` succeeded.
pub(crate) fn get() -> Option<Host> {
    HOST.get().copied()
}

/// Log levels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Error,
    Warning,
    Info,
}

impl Host {
    pub(crate) fn log(&self, level: Level, msg: &str) {
        let level = match level {
            Level::Error => abi::QBP_LOG_ERROR,
            Level::Warning => abi::QBP_LOG_WARNING,
            Level::Info => abi::QBP_LOG_INFO,
        };
        let text = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        if let Some(log) = self.table.log {
            // SAFETY: a valid NUL-terminated string that outlives the call; check_host
            // verified the function exists.
            unsafe { log(level, text.as_ptr()) };
        }
    }

    /// Watches `fd` for `events`; the callback gets `opaque`. None when QEMU refused.
    pub(crate) fn watch(
        &self,
        fd: RawFd,
        events: u32,
        cb: unsafe extern "C" fn(*mut c_void, c_int, u32),
        opaque: *mut c_void,
    ) -> Option<Watch> {
        let add = self.table.fd_watch_add?;
        // SAFETY: fd is open and owned by the caller for as long as the Watch lives; the
        // caller keeps `opaque` valid until the Watch is dropped (which removes it).
        let w = unsafe { add(fd, events, Some(cb), opaque) };
        (!w.is_null()).then_some(Watch { host: *self, w })
    }

    /// A one-shot timer on the host's monotonic clock.
    pub(crate) fn timer(
        &self,
        cb: unsafe extern "C" fn(*mut c_void),
        opaque: *mut c_void,
    ) -> Option<Timer> {
        let new = self.table.timer_new?;
        // SAFETY: the caller keeps `opaque` valid until the Timer is dropped (which frees
        // it, so the callback cannot run afterwards).
        let t = unsafe { new(abi::QBP_CLOCK_HOST_MONOTONIC, Some(cb), opaque) };
        (!t.is_null()).then_some(Timer { host: *self, t })
    }

    pub(crate) fn now_ns(&self) -> u64 {
        match self.table.clock_ns {
            // SAFETY: check_host verified the function exists; it takes a plain integer.
            Some(f) => unsafe { f(abi::QBP_CLOCK_HOST_MONOTONIC) },
            None => 0,
        }
    }
}

/// An fd watch on QEMU's main loop; removed on drop.
pub(crate) struct Watch {
    host: Host,
    w: *mut QbpFdWatch,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(remove) = self.host.table.fd_watch_remove {
            // SAFETY: `w` came from fd_watch_add and is removed exactly once.
            unsafe { remove(self.w) };
        }
    }
}

/// A timer on QEMU's main loop; freed on drop.
pub(crate) struct Timer {
    host: Host,
    t: *mut QbpTimer,
}

impl Timer {
    /// Fires once, `delay_ms` from now.
    pub(crate) fn arm_in(&self, delay_ms: u64) {
        let when = self.host.now_ns().saturating_add(delay_ms * 1_000_000);
        if let Some(m) = self.host.table.timer_mod {
            // SAFETY: `t` came from timer_new and has not been freed.
            unsafe { m(self.t, when) };
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(free) = self.host.table.timer_free {
            // SAFETY: `t` came from timer_new and is freed exactly once.
            unsafe { free(self.t) };
        }
    }
}
