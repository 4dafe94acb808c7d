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
//! The C ABI is `qemu-patches/include/qemu/backend-plugin.h`; `abi` mirrors it.

pub mod abi;
mod audio;
mod audio_input;
mod console;
mod host;
mod instance;
mod link;
mod opts;
mod reconnect;
mod tables;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use abi::{
    QbpAudio, QbpAudioFormat, QbpAudioOps, QbpChardev, QbpChardevFrontend, QbpChardevOps, QbpHost,
    QbpInstanceInfo, QbpPluginInfo, QbpTableHeader, QBP_CHARDEV_FLAG_FLOW_CONTROL,
};
use host::{Host, Level};
use instance::{Identity, Instance};
use shm_ring::handover::AudioFormat;

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

/// Reads a C string from the host; NULL reads as "".
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string for the duration of the call.
unsafe fn c_str(p: *const c_char) -> String {
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
unsafe fn set_err(err: *mut c_char, len: usize, msg: &str) {
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

/// # Safety
/// `p` is an instance pointer this library returned and QEMU has not closed.
unsafe fn chardev<'a>(p: *mut QbpChardev) -> Option<&'a Instance> {
    // SAFETY: guaranteed by the caller; NULL is tolerated.
    unsafe { p.cast::<Instance>().as_ref() }
}

/// # Safety
/// As for [`chardev`].
unsafe fn audiodev<'a>(p: *mut QbpAudio) -> Option<&'a Instance> {
    // SAFETY: guaranteed by the caller; NULL is tolerated.
    unsafe { p.cast::<Instance>().as_ref() }
}

// ---- character device entry points ----------------------------------------------------

unsafe extern "C" fn chr_open(
    info: *const QbpInstanceInfo,
    frontend: *const QbpChardevFrontend,
    err: *mut c_char,
    err_len: usize,
) -> *mut QbpChardev {
    let r = guard(Err("internal error".to_string()), || {
        let host = host::get().ok_or("plugin not initialised")?;
        // SAFETY: QEMU passes a valid info for the duration of the call.
        let (id, opts) = unsafe { identity(info) }?;
        // SAFETY: QEMU passes a frontend table valid for the call (its functions and
        // opaque stay valid until close); it is copied, not kept.
        let fe = unsafe { tables::copy_table(frontend) }?;
        let fe = console::Frontend::from_table(&fe)?;
        Instance::open_console(host, id, opts, fe)
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

unsafe extern "C" fn chr_close(chr: *mut QbpChardev) {
    guard((), || {
        if chr.is_null() {
            return;
        }
        // SAFETY: the pointer came from Box::into_raw in chr_open; QEMU closes it once.
        let inst = unsafe { Box::from_raw(chr.cast::<Instance>()) };
        inst.log_summary();
    })
}

unsafe extern "C" fn chr_write(chr: *mut QbpChardev, buf: *const u8, len: usize) -> c_int {
    guard(-libc_eio(), || {
        // SAFETY: a live instance (ABI contract).
        let Some(inst) = (unsafe { chardev(chr) }) else {
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

fn libc_eio() -> c_int {
    rustix::io::Errno::IO.raw_os_error()
}

unsafe extern "C" fn chr_write_ready(chr: *mut QbpChardev) -> bool {
    // On an internal error say "ready": QEMU then retries the write, which is safe.
    guard(true, || {
        // SAFETY: a live instance (ABI contract).
        unsafe { chardev(chr) }.is_none_or(|i| i.guarded(|| i.chr_write_ready(), || true))
    })
}

unsafe extern "C" fn chr_write_wait_fd(chr: *mut QbpChardev) -> c_int {
    guard(-1, || {
        // SAFETY: a live instance (ABI contract).
        unsafe { chardev(chr) }.map_or(-1, |i| i.guarded(|| i.chr_write_wait_fd(), || -1))
    })
}

unsafe extern "C" fn chr_accept_input(chr: *mut QbpChardev) {
    guard((), || {
        // SAFETY: a live instance (ABI contract).
        if let Some(i) = unsafe { chardev(chr) } {
            i.guarded(|| i.pump_input(), || ());
        }
    })
}

unsafe extern "C" fn chr_set_fe_open(_chr: *mut QbpChardev, _fe_open: c_int) {}

// ---- audio entry points -----------------------------------------------------------------

unsafe extern "C" fn audio_open(
    info: *const QbpInstanceInfo,
    err: *mut c_char,
    err_len: usize,
) -> *mut QbpAudio {
    let r = guard(Err("internal error".to_string()), || {
        let host = host::get().ok_or("plugin not initialised")?;
        // SAFETY: QEMU passes a valid info for the duration of the call.
        let (id, opts) = unsafe { identity(info) }?;
        Instance::open_audio(host, id, opts)
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

unsafe extern "C" fn audio_close(audio: *mut QbpAudio) {
    guard((), || {
        if audio.is_null() {
            return;
        }
        // SAFETY: the pointer came from Box::into_raw in audio_open; closed once.
        let inst = unsafe { Box::from_raw(audio.cast::<Instance>()) };
        inst.log_summary();
    })
}

unsafe extern "C" fn audio_out_open(audio: *mut QbpAudio, format: *const QbpAudioFormat) -> c_int {
    guard(-libc_eio(), || {
        // SAFETY: a live instance and a valid format (ABI contract).
        let (Some(inst), Some(f)) = (unsafe { audiodev(audio) }, unsafe { format.as_ref() }) else {
            return -libc_eio();
        };
        match inst.guarded(
            || inst.audio_out_open(audio_format(f)),
            || Err("the device is disabled after an internal error".into()),
        ) {
            Ok(()) => 0,
            Err(e) => {
                if let Some(h) = host::get() {
                    h.log(Level::Error, &format!("audio output: {e}"));
                }
                -rustix::io::Errno::INVAL.raw_os_error()
            }
        }
    })
}

unsafe extern "C" fn audio_out_close(audio: *mut QbpAudio) {
    guard((), || {
        // SAFETY: a live instance (ABI contract).
        if let Some(i) = unsafe { audiodev(audio) } {
            i.guarded(|| i.audio_out_close(), || ());
        }
    })
}

unsafe extern "C" fn audio_out_enable(audio: *mut QbpAudio, enable: bool) {
    guard((), || {
        // SAFETY: a live instance (ABI contract).
        if let Some(i) = unsafe { audiodev(audio) } {
            i.guarded(|| i.audio_out_enable(enable), || ());
        }
    })
}

unsafe extern "C" fn audio_out_write(
    audio: *mut QbpAudio,
    buf: *const c_void,
    len: usize,
) -> usize {
    guard(len, || {
        // SAFETY: a live instance (ABI contract).
        let Some(inst) = (unsafe { audiodev(audio) }) else {
            return len;
        };
        if buf.is_null() || len == 0 {
            return len;
        }
        // SAFETY: QEMU passes `len` readable bytes at `buf`.
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        inst.guarded(
            || inst.audio_out_write(data),
            || {
                inst.discard(1);
                len
            },
        )
    })
}

fn audio_format(f: &QbpAudioFormat) -> AudioFormat {
    AudioFormat {
        frequency: f.frequency,
        channels: f.channels,
        sample_format: f.sample_format,
        big_endian: f.big_endian != 0,
    }
}

unsafe extern "C" fn audio_in_open(audio: *mut QbpAudio, format: *const QbpAudioFormat) -> c_int {
    guard(-libc_eio(), || {
        // SAFETY: a live instance and a valid format (ABI contract).
        let (Some(inst), Some(f)) = (unsafe { audiodev(audio) }, unsafe { format.as_ref() }) else {
            return -libc_eio();
        };
        match inst.guarded(
            || inst.audio_in_open(audio_format(f)),
            || Err("the device is disabled after an internal error".into()),
        ) {
            Ok(()) => 0,
            Err(e) => {
                if let Some(h) = host::get() {
                    h.log(Level::Error, &format!("audio input: {e}"));
                }
                -rustix::io::Errno::INVAL.raw_os_error()
            }
        }
    })
}

unsafe extern "C" fn audio_in_close(audio: *mut QbpAudio) {
    guard((), || {
        // SAFETY: a live instance (ABI contract).
        if let Some(i) = unsafe { audiodev(audio) } {
            i.guarded(|| i.audio_in_close(), || ());
        }
    })
}

unsafe extern "C" fn audio_in_enable(audio: *mut QbpAudio, enable: bool) {
    guard((), || {
        // SAFETY: a live instance (ABI contract).
        if let Some(i) = unsafe { audiodev(audio) } {
            i.guarded(|| i.audio_in_enable(enable), || ());
        }
    })
}

unsafe extern "C" fn audio_in_read(audio: *mut QbpAudio, buf: *mut c_void, len: usize) -> usize {
    // On an internal error deliver nothing: QEMU pads the period with silence itself.
    guard(0, || {
        // SAFETY: a live instance (ABI contract).
        let Some(inst) = (unsafe { audiodev(audio) }) else {
            return 0;
        };
        if buf.is_null() || len == 0 {
            return 0;
        }
        // SAFETY: QEMU passes `len` writable bytes at `buf`, not otherwise referenced
        // during the call.
        let data = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        inst.guarded(|| inst.audio_in_read(data), || 0)
    })
}

// ---- the exported tables ----------------------------------------------------------------

struct Tables(QbpPluginInfo);
// SAFETY: the tables are immutable statics holding pointers to other statics.
unsafe impl Sync for Tables {}

static CHARDEV_OPS: QbpChardevOps = QbpChardevOps {
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

static AUDIO_OPS: QbpAudioOps = QbpAudioOps {
    header: QbpTableHeader::for_table::<QbpAudioOps>(),
    open: Some(audio_open),
    close: Some(audio_close),
    out_open: Some(audio_out_open),
    out_close: Some(audio_out_close),
    out_enable: Some(audio_out_enable),
    out_write: Some(audio_out_write),
    in_open: Some(audio_in_open),
    in_close: Some(audio_in_close),
    in_enable: Some(audio_in_enable),
    in_read: Some(audio_in_read),
};

static PLUGIN: Tables = Tables(QbpPluginInfo {
    header: QbpTableHeader::for_table::<QbpPluginInfo>(),
    name: c"ringcast".as_ptr(),
    chardev: &CHARDEV_OPS,
    audio: &AUDIO_OPS,
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
