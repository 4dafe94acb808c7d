//! A stand-in for QEMU: loads `libringcast_backend.so` with libloading and drives it through
//! the same C ABI the QEMU patches use, with a small poll(2) main loop that provides the
//! host table's fd watches, timers, clock and log.
//!
//! The loop is per thread (like QEMU's main loop, everything runs on one thread): create the
//! [`MainLoop`] and the devices on the thread that drives them.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::time::{Duration, Instant};

use ringcast_backend::abi::*;

struct WatchEntry {
    id: usize,
    fd: c_int,
    events: u32,
    cb: QbpFdCallback,
    opaque: *mut c_void,
}

struct TimerEntry {
    id: usize,
    deadline: Option<u64>,
    cb: QbpTimerCallback,
    opaque: *mut c_void,
}

#[derive(Default)]
struct LoopState {
    next_id: usize,
    watches: Vec<WatchEntry>,
    timers: Vec<TimerEntry>,
    logs: Vec<String>,
}

thread_local! {
    static STATE: RefCell<LoopState> = RefCell::new(LoopState { next_id: 1, ..Default::default() });
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

unsafe extern "C" fn host_log(level: c_int, msg: *const c_char) {
    // SAFETY: the plugin passes a NUL-terminated string valid during the call.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    let level = match level {
        QBP_LOG_ERROR => "error",
        QBP_LOG_WARNING => "warning",
        QBP_LOG_INFO => "info",
        _ => "debug",
    };
    if std::env::var_os("RINGCAST_HARNESS_QUIET").is_none() {
        eprintln!("[plugin {level}] {text}");
    }
    STATE.with(|s| s.borrow_mut().logs.push(format!("{level}: {text}")));
}

unsafe extern "C" fn host_clock_ns(_clock: c_int) -> u64 {
    monotonic_ns()
}

unsafe extern "C" fn host_watch_add(
    fd: c_int,
    events: u32,
    cb: QbpFdCallback,
    opaque: *mut c_void,
) -> *mut QbpFdWatch {
    if fd < 0 || cb.is_none() {
        return std::ptr::null_mut();
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.watches.push(WatchEntry {
            id,
            fd,
            events,
            cb,
            opaque,
        });
        id as *mut QbpFdWatch
    })
}

unsafe extern "C" fn host_watch_remove(w: *mut QbpFdWatch) {
    let id = w as usize;
    STATE.with(|s| s.borrow_mut().watches.retain(|e| e.id != id));
}

unsafe extern "C" fn host_timer_new(
    _clock: c_int,
    cb: QbpTimerCallback,
    opaque: *mut c_void,
) -> *mut QbpTimer {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.timers.push(TimerEntry {
            id,
            deadline: None,
            cb,
            opaque,
        });
        id as *mut QbpTimer
    })
}

unsafe extern "C" fn host_timer_mod(t: *mut QbpTimer, expire_ns: u64) {
    let id = t as usize;
    STATE.with(|s| {
        if let Some(e) = s.borrow_mut().timers.iter_mut().find(|e| e.id == id) {
            e.deadline = Some(expire_ns);
        }
    });
}

unsafe extern "C" fn host_timer_free(t: *mut QbpTimer) {
    let id = t as usize;
    STATE.with(|s| s.borrow_mut().timers.retain(|e| e.id != id));
}

static HOST: QbpHost = QbpHost {
    header: QbpTableHeader::for_table::<QbpHost>(),
    log: Some(host_log),
    clock_ns: Some(host_clock_ns),
    fd_watch_add: Some(host_watch_add),
    fd_watch_remove: Some(host_watch_remove),
    timer_new: Some(host_timer_new),
    timer_mod: Some(host_timer_mod),
    timer_free: Some(host_timer_free),
};

/// The loaded plugin and its operation tables.
#[derive(Debug)]
pub struct Plugin {
    _lib: Option<libloading::Library>,
    chardev: &'static QbpChardevOps,
    audio: &'static QbpAudioOps,
}

impl Plugin {
    /// Loads the library at `path` and queries it with the harness's host table.
    pub fn load(path: &Path) -> Result<Plugin, String> {
        // SAFETY: loading runs the library's initialisers; the backend has none that matter.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // SAFETY: the symbol has the QbpPluginQueryFn signature (ABI contract).
        let query: libloading::Symbol<QbpPluginQueryFn> =
            unsafe { lib.get(b"qbp_plugin_query\0") }.map_err(|e| e.to_string())?;
        let mut p = Self::query(*query)?;
        p._lib = Some(lib);
        Ok(p)
    }

    /// The plugin linked into the test binary (`ringcast_backend::qbp_plugin_query`), so that
    /// its allocations go through the test's global allocator.
    pub fn linked(query: QbpPluginQueryFn) -> Result<Plugin, String> {
        Self::query(query)
    }

    fn query(query: QbpPluginQueryFn) -> Result<Plugin, String> {
        // SAFETY: HOST is a static table valid for the life of the process.
        let info = unsafe { query(&HOST) };
        // SAFETY: the plugin returns NULL or a pointer to static tables.
        let info = unsafe { info.as_ref() }.ok_or("the plugin refused the host table")?;
        if info.header.abi_major != QBP_ABI_MAJOR {
            return Err("plugin ABI major mismatch".into());
        }
        // SAFETY: non-null table pointers of the plugin point to statics.
        let (chardev, audio) = unsafe { (info.chardev.as_ref(), info.audio.as_ref()) };
        Ok(Plugin {
            chardev: chardev.ok_or("no chardev table")?,
            audio: audio.ok_or("no audio table")?,
            _lib: None,
        })
    }

    /// Opens a character device as `-chardev plugin,id=ID,opts=OPTS` would.
    pub fn open_chardev(&self, vm: &str, id: &str, opts: &str) -> Result<Chardev, String> {
        let fe = Box::new(FakeFrontend::default());
        let fe_table = Box::new(QbpChardevFrontend {
            header: QbpTableHeader::for_table::<QbpChardevFrontend>(),
            opaque: &*fe as *const FakeFrontend as *mut c_void,
            can_write: Some(fe_can_write),
            write: Some(fe_write),
        });
        let info = Info::new(vm, id, opts);
        let mut err = [0 as c_char; 256];
        let open = self.chardev.open.ok_or("no open")?;
        // SAFETY: all pointers are valid for the call; fe_table and fe outlive the device.
        let chr = unsafe { open(&info.raw, &*fe_table, err.as_mut_ptr(), err.len()) };
        if chr.is_null() {
            // SAFETY: the plugin NUL-terminates the error buffer.
            return Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned());
        }
        Ok(Chardev {
            ops: self.chardev,
            chr,
            frontend: fe,
            _fe_table: fe_table,
        })
    }

    /// Opens an audio device as `-audiodev plugin,id=ID,opts=OPTS` would.
    pub fn open_audio(&self, vm: &str, id: &str, opts: &str) -> Result<Audio, String> {
        let info = Info::new(vm, id, opts);
        let mut err = [0 as c_char; 256];
        let open = self.audio.open.ok_or("no open")?;
        // SAFETY: valid pointers for the duration of the call.
        let a = unsafe { open(&info.raw, err.as_mut_ptr(), err.len()) };
        if a.is_null() {
            // SAFETY: the plugin NUL-terminates the error buffer.
            return Err(unsafe { CStr::from_ptr(err.as_ptr()) }
                .to_string_lossy()
                .into_owned());
        }
        Ok(Audio { ops: self.audio, a })
    }
}

/// Keeps the C strings of a QbpInstanceInfo alive.
struct Info {
    _strings: [CString; 4],
    raw: QbpInstanceInfo,
}

impl Info {
    fn new(vm: &str, id: &str, opts: &str) -> Info {
        let s = [
            CString::new(id).unwrap(),
            CString::new(vm).unwrap(),
            CString::new("").unwrap(),
            CString::new(opts).unwrap(),
        ];
        let raw = QbpInstanceInfo {
            header: QbpTableHeader::for_table::<QbpInstanceInfo>(),
            id: s[0].as_ptr(),
            vm_name: s[1].as_ptr(),
            vm_uuid: s[2].as_ptr(),
            opts: s[3].as_ptr(),
        };
        Info { _strings: s, raw }
    }
}

/// The emulated guest side of a character device: how much input it can take, and what it
/// received.
#[derive(Debug, Default)]
pub struct FakeFrontend {
    /// Bytes the "guest" can take now (what `can_write` answers).
    pub room: Cell<usize>,
    /// Input handed to the "guest".
    pub received: RefCell<Vec<u8>>,
    /// Set if the plugin ever wrote more than `room`.
    pub overflowed: Cell<bool>,
}

unsafe extern "C" fn fe_can_write(opaque: *mut c_void) -> usize {
    // SAFETY: opaque is the FakeFrontend boxed in the Chardev, alive while it is open.
    unsafe { &*(opaque as *const FakeFrontend) }.room.get()
}

unsafe extern "C" fn fe_write(opaque: *mut c_void, buf: *const u8, len: usize) {
    // SAFETY: as above; the plugin passes `len` readable bytes.
    let fe = unsafe { &*(opaque as *const FakeFrontend) };
    // SAFETY: as above.
    let data = unsafe { std::slice::from_raw_parts(buf, len) };
    if len > fe.room.get() {
        fe.overflowed.set(true);
    }
    fe.room.set(fe.room.get().saturating_sub(len));
    fe.received.borrow_mut().extend_from_slice(data);
}

/// How a [`Chardev::write_all`] went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Times the ring was full and the writer waited on the plugin's wait fd.
    pub waits: u64,
    /// Times `write_ready` said yes but the write then took nothing (must stay 0: QEMU's
    /// 16550 drops a byte after four such retries).
    pub spurious_ready: u64,
}

/// An open character device.
#[derive(Debug)]
pub struct Chardev {
    ops: &'static QbpChardevOps,
    chr: *mut QbpChardev,
    /// The emulated frontend.
    pub frontend: Box<FakeFrontend>,
    _fe_table: Box<QbpChardevFrontend>,
}

impl Chardev {
    /// One `chr_write` call, as a frontend makes it.
    pub fn write(&self, data: &[u8]) -> i32 {
        // SAFETY: chr is open; data is valid for its length.
        unsafe { (self.ops.write.unwrap())(self.chr, data.as_ptr(), data.len()) }
    }

    /// The readiness check QEMU's watch makes in prepare/check.
    pub fn write_ready(&self) -> bool {
        // SAFETY: chr is open.
        unsafe { (self.ops.write_ready.unwrap())(self.chr) }
    }

    /// The fd QEMU's watch polls while not ready.
    pub fn wait_fd(&self) -> i32 {
        // SAFETY: chr is open.
        unsafe { (self.ops.write_wait_fd.unwrap())(self.chr) }
    }

    /// The frontend took input and can take more.
    pub fn accept_input(&self) {
        // SAFETY: chr is open.
        unsafe { (self.ops.accept_input.unwrap())(self.chr) }
    }

    /// Writes everything the way QEMU's serial/virtio frontends do: write, and on a short
    /// write wait on a watch (prepare/check = `write_ready`, poll on `wait_fd`) before
    /// retrying, while the main loop keeps running. Fails after `timeout`.
    pub fn write_all(
        &self,
        lp: &MainLoop,
        mut data: &[u8],
        timeout: Duration,
    ) -> Result<WriteStats, String> {
        let deadline = Instant::now() + timeout;
        let mut stats = WriteStats::default();
        while !data.is_empty() {
            let n = self.write(data);
            if n < 0 {
                return Err(format!("chr_write failed: {n}"));
            }
            data = &data[n as usize..];
            if n > 0 {
                continue;
            }
            stats.waits += 1;
            loop {
                if self.write_ready() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("still full after {timeout:?}"));
                }
                lp.run_once(Duration::from_millis(100), &[self.wait_fd()]);
            }
            let n = self.write(data);
            if n <= 0 {
                stats.spurious_ready += 1;
                continue;
            }
            data = &data[n as usize..];
        }
        Ok(stats)
    }
}

impl Drop for Chardev {
    fn drop(&mut self) {
        // SAFETY: chr is open and closed exactly once.
        unsafe { (self.ops.close.unwrap())(self.chr) }
    }
}

/// An open audio device.
#[derive(Debug)]
pub struct Audio {
    ops: &'static QbpAudioOps,
    a: *mut QbpAudio,
}

/// QEMU's default audio format for a plugin audiodev (mixing engine, fixed settings).
pub const S16_STEREO_44100: QbpAudioFormat = QbpAudioFormat {
    frequency: 44100,
    channels: 2,
    sample_format: QBP_FMT_S16,
    big_endian: 0,
    reserved: [0; 7],
};

impl Audio {
    /// Opens the output voice.
    pub fn out_open(&self, format: &QbpAudioFormat) -> i32 {
        // SAFETY: `a` is open; format is valid during the call.
        unsafe { (self.ops.out_open.unwrap())(self.a, format) }
    }

    /// Enables or disables the output voice.
    pub fn out_enable(&self, on: bool) {
        // SAFETY: `a` is open.
        unsafe { (self.ops.out_enable.unwrap())(self.a, on) }
    }

    /// Whether the table offers input voices with every operation QEMU requires of them
    /// (`audio/pluginaudio.c`: in_open set means in_close, in_enable and in_read set too).
    pub fn has_input(&self) -> bool {
        let o = self.ops;
        o.in_open.is_some() && o.in_close.is_some() && o.in_enable.is_some() && o.in_read.is_some()
    }

    /// Opens the input voice (0 or -errno).
    pub fn in_open(&self, format: &QbpAudioFormat) -> i32 {
        // SAFETY: `a` is open; format is valid during the call.
        unsafe { (self.ops.in_open.unwrap())(self.a, format) }
    }

    /// Enables or disables the input voice.
    pub fn in_enable(&self, on: bool) {
        // SAFETY: `a` is open.
        unsafe { (self.ops.in_enable.unwrap())(self.a, on) }
    }

    /// Asks for up to `buf.len()` bytes of captured audio, as QEMU's audio timer does.
    pub fn in_read(&self, buf: &mut [u8]) -> usize {
        // SAFETY: `a` is open; buf is writable for its length.
        unsafe { (self.ops.in_read.unwrap())(self.a, buf.as_mut_ptr().cast(), buf.len()) }
    }

    /// Closes the input voice.
    pub fn in_close(&self) {
        // SAFETY: `a` is open.
        unsafe { (self.ops.in_close.unwrap())(self.a) }
    }

    /// Hands one period over, as QEMU's audio timer does.
    pub fn out_write(&self, data: &[u8]) -> usize {
        // SAFETY: `a` is open; data valid for its length.
        unsafe { (self.ops.out_write.unwrap())(self.a, data.as_ptr().cast(), data.len()) }
    }

    /// Plays `periods` periods of `period` length in real time, one every `every`, keeping
    /// the main loop running in between (QEMU's 10 ms audio timer).
    pub fn play_paced(
        &self,
        lp: &MainLoop,
        periods: usize,
        every: Duration,
        mut period: impl FnMut(usize) -> Vec<u8>,
    ) {
        let start = Instant::now();
        for i in 0..periods {
            let due = start + every * i as u32;
            while Instant::now() < due {
                lp.run_once(due - Instant::now(), &[]);
            }
            let data = period(i);
            assert_eq!(
                self.out_write(&data),
                data.len(),
                "audio must take everything"
            );
        }
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        // SAFETY: `a` is open and closed exactly once.
        unsafe { (self.ops.close.unwrap())(self.a) }
    }
}

/// The poll(2) main loop behind the host table, for the current thread.
#[derive(Debug, Default)]
pub struct MainLoop {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl MainLoop {
    /// The loop of this thread.
    pub fn new() -> MainLoop {
        MainLoop::default()
    }

    /// One iteration: waits up to `timeout` for a watched fd, an `extra` fd or a timer,
    /// then dispatches. Returns the `extra` fds that are readable.
    pub fn run_once(&self, timeout: Duration, extra: &[i32]) -> Vec<i32> {
        let now = monotonic_ns();
        let (mut pfds, ids, next_timer) = STATE.with(|s| {
            let s = s.borrow();
            let mut pfds = Vec::new();
            let mut ids = Vec::new();
            for w in &s.watches {
                let mut ev = 0;
                if w.events & QBP_EVENT_IN != 0 {
                    ev |= libc::POLLIN;
                }
                if w.events & QBP_EVENT_OUT != 0 {
                    ev |= libc::POLLOUT;
                }
                pfds.push(libc::pollfd {
                    fd: w.fd,
                    events: ev,
                    revents: 0,
                });
                ids.push(w.id);
            }
            let next = s.timers.iter().filter_map(|t| t.deadline).min();
            (pfds, ids, next)
        });
        for &fd in extra {
            pfds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let mut wait_ns = timeout.as_nanos().min(u64::MAX as u128) as u64;
        if let Some(t) = next_timer {
            wait_ns = wait_ns.min(t.saturating_sub(now));
        }
        let ms = wait_ns.div_ceil(1_000_000).min(i32::MAX as u64) as c_int;
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        let mut ready_extra = Vec::new();
        if n > 0 {
            for (i, p) in pfds.iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                if i >= ids.len() {
                    ready_extra.push(p.fd);
                    continue;
                }
                let mut rev = 0;
                if p.revents & libc::POLLIN != 0 {
                    rev |= QBP_EVENT_IN;
                }
                if p.revents & libc::POLLOUT != 0 {
                    rev |= QBP_EVENT_OUT;
                }
                if p.revents & libc::POLLHUP != 0 {
                    rev |= QBP_EVENT_HUP | QBP_EVENT_IN;
                }
                if p.revents & libc::POLLERR != 0 {
                    rev |= QBP_EVENT_ERR | QBP_EVENT_IN;
                }
                // Look the watch up again: an earlier callback may have removed it.
                let entry = STATE.with(|s| {
                    s.borrow()
                        .watches
                        .iter()
                        .find(|w| w.id == ids[i])
                        .map(|w| (w.cb, w.opaque, w.fd))
                });
                if let Some((Some(cb), opaque, fd)) = entry {
                    // SAFETY: the plugin registered this callback with this opaque.
                    unsafe { cb(opaque, fd, rev) };
                }
            }
        }
        let now = monotonic_ns();
        let due: Vec<usize> = STATE.with(|s| {
            s.borrow()
                .timers
                .iter()
                .filter(|t| t.deadline.is_some_and(|d| d <= now))
                .map(|t| t.id)
                .collect()
        });
        for id in due {
            let entry = STATE.with(|s| {
                let mut s = s.borrow_mut();
                s.timers.iter_mut().find(|t| t.id == id).and_then(|t| {
                    t.deadline = None;
                    t.cb.map(|cb| (cb, t.opaque))
                })
            });
            if let Some((cb, opaque)) = entry {
                // SAFETY: the plugin registered this callback with this opaque.
                unsafe { cb(opaque) };
            }
        }
        ready_extra
    }

    /// Runs the loop until `done()` or `timeout`; returns whether `done()` became true.
    pub fn run_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.run_once((deadline - now).min(Duration::from_millis(20)), &[]);
        }
        true
    }

    /// Everything the plugin logged on this thread so far.
    pub fn logs(&self) -> Vec<String> {
        STATE.with(|s| s.borrow().logs.clone())
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        STATE.with(|s| s.borrow().logs.iter().any(|l| l.contains(needle)))
    }

    /// Forgets the logs so far.
    pub fn clear_logs(&self) {
        STATE.with(|s| s.borrow_mut().logs.clear());
    }

    /// Number of live fd watches and armed timers (to check nothing leaks or spins).
    pub fn registrations(&self) -> (usize, usize) {
        STATE.with(|s| {
            let s = s.borrow();
            (
                s.watches.len(),
                s.timers.iter().filter(|t| t.deadline.is_some()).count(),
            )
        })
    }
}
