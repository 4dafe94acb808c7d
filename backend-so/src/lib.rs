//! `libringcast_backend.so`: the part of ringcast that runs inside QEMU.
//!
//! QEMU (with the patches in `qemu-patches/`) loads this library for
//! `-chardev plugin,id=ID,path=libringcast_backend.so[,config=...]` and
//! `-audiodev plugin,id=ID,path=libringcast_backend.so[,config=...]`. For each device the
//! library creates shared-memory rings (`shm-ring`), hands them to `ringcastd` over a unix
//! socket, and from then on only copies bytes into them: no threads, no blocking, no
//! allocation on the write path, no syscall except a doorbell when the daemon sleeps.
//!
//! When a daemon that was attached goes away (killed, upgraded, restarted), a console keeps
//! lossless backpressure for a grace period (`grace=`, 5 s by default) so that a restart
//! loses nothing. Otherwise, while no daemon is attached (not started yet, not back within
//! the grace, refused), console output goes to a flight recorder that keeps the newest bytes
//! and counts the dropped ones, and audio periods are dropped and counted: the guest never
//! waits longer than the grace for a daemon that is not there. The library retries the
//! connection from QEMU's main loop and re-registers by itself.
//!
//! Audio input voices (a sound card's line-in and microphone) get silence, counted: there is
//! no capture path yet, and offering the voices keeps QEMU from failing to create them.
//!
//! Every entry point catches panics (`guard`, and `Instance::guarded`, which latches the
//! instance broken) and reports failure through its return value; nothing unwinds into QEMU.
//!
//! The C ABI is `qemu-patches/include/qemu/backend-plugin.h`; `abi` mirrors it, `ops` holds
//! the entry points QEMU calls, `ffi` what they share at the C boundary.

pub mod abi;
mod audio;
mod audio_input;
mod console;
mod ffi;
mod host;
mod instance;
mod link;
mod ops;
mod opts;
mod reconnect;
mod tables;

use std::sync::atomic::{AtomicU64, Ordering};

use abi::{QbpHost, QbpPluginInfo, QbpTableHeader};
use ffi::guard;
use host::{Host, Level};

/// A value that differs between ring sets of this process and between processes.
pub(crate) fn new_session_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let mix = (t.tv_sec as u64)
        .wrapping_mul(1_000_000_007)
        .wrapping_add(t.tv_nsec as u64)
        ^ (u64::from(std::process::id()) << 40);
    mix.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

struct Tables(QbpPluginInfo);
// SAFETY: the tables are immutable statics holding pointers to other statics.
unsafe impl Sync for Tables {}

static PLUGIN: Tables = Tables(QbpPluginInfo {
    header: QbpTableHeader::for_table::<QbpPluginInfo>(),
    name: c"ringcast".as_ptr(),
    chardev: &ops::CHARDEV_OPS,
    audio: &ops::AUDIO_OPS,
});

/// Decides how this process fences its rings, at load (registering for membarrier here, on
/// QEMU's main thread, never on a write path), and says once in QEMU's log when it must
/// fall back to a full fence on every write.
fn fence_once(host: &Host) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let status = shm_ring::fence::init();
    if status.fallback.is_some() && !SAID.swap(true, Ordering::Relaxed) {
        host.log(
            Level::Warning,
            &format!(
                "ringcast backend: ring fence: {status}; the rings work, each console and \
                 audio write costs a little more (allow QEMU the membarrier system call to avoid it)"
            ),
        );
    }
}

/// The one exported symbol: QEMU hands its host table and gets the operation tables.
///
/// # Safety
/// `host` is NULL or a host table valid for the rest of the process (ABI contract).
#[no_mangle]
pub unsafe extern "C" fn qbp_plugin_query(host: *const QbpHost) -> *const QbpPluginInfo {
    guard(std::ptr::null(), || {
        // SAFETY: guaranteed by the caller: NULL or a table of header.struct_size bytes.
        let table = match unsafe { tables::copy_table(host) } {
            Ok(t) => t,
            Err(why) => {
                // SAFETY: as above.
                unsafe { host::log_early(host, &why) };
                return std::ptr::null();
            }
        };
        if let Err(why) = host::check_host(&table) {
            if let Some(log) = table.log {
                let msg =
                    std::ffi::CString::new(format!("ringcast backend: {why}")).unwrap_or_default();
                // SAFETY: the host's log function takes a C string valid during the call.
                unsafe { log(abi::QBP_LOG_ERROR, msg.as_ptr()) };
            }
            return std::ptr::null();
        }
        let host: Host = host::install(table);
        fence_once(&host);
        &PLUGIN.0 as *const QbpPluginInfo
    })
}
