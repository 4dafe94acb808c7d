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

/// Why a host table was refused.
pub(crate) fn check_host(table: &QbpHost) -> Result<(), String> {
    if table.header.abi_major != abi::QBP_ABI_MAJOR {
        return Err(format!(
            "host ABI {}.{} is not supported (this plugin speaks {}.x)",
            table.header.abi_major,
            table.header.abi_minor,
            abi::QBP_ABI_MAJOR
        ));
    }
    if (table.header.struct_size as usize) < std::mem::size_of::<QbpHost>() {
        return Err(format!(
            "host table has {} bytes, this plugin needs {}",
            table.header.struct_size,
            std::mem::size_of::<QbpHost>()
        ));
    }
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

/// Installs the host table (first call wins; QEMU hands the same table every time).
pub(crate) fn install(table: &'static QbpHost) -> Host {
    *HOST.get_or_init(|| Host { table })
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
