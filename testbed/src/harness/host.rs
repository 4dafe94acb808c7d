//! The host table QEMU would provide (log, clock, fd watches, timers) and the poll(2) main
//! loop that runs the watches and timers.

use super::*;

pub(super) struct WatchEntry {
    id: usize,
    fd: c_int,
    events: u32,
    cb: QbpFdCallback,
    opaque: *mut c_void,
}

pub(super) struct TimerEntry {
    id: usize,
    deadline: Option<u64>,
    cb: QbpTimerCallback,
    opaque: *mut c_void,
}

#[derive(Default)]
pub(super) struct LoopState {
    next_id: usize,
    watches: Vec<WatchEntry>,
    timers: Vec<TimerEntry>,
    logs: Vec<String>,
}

thread_local! {
    static STATE: RefCell<LoopState> = RefCell::new(LoopState { next_id: 1, ..Default::default() });
}

pub(super) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub(super) unsafe extern "C" fn host_log(level: c_int, msg: *const c_char) {
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

pub(super) unsafe extern "C" fn host_clock_ns(_clock: c_int) -> u64 {
    monotonic_ns()
}

pub(super) unsafe extern "C" fn host_watch_add(
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

pub(super) unsafe extern "C" fn host_watch_remove(w: *mut QbpFdWatch) {
    let id = w as usize;
    STATE.with(|s| s.borrow_mut().watches.retain(|e| e.id != id));
}

pub(super) unsafe extern "C" fn host_timer_new(
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

pub(super) unsafe extern "C" fn host_timer_mod(t: *mut QbpTimer, expire_ns: u64) {
    let id = t as usize;
    STATE.with(|s| {
        if let Some(e) = s.borrow_mut().timers.iter_mut().find(|e| e.id == id) {
            e.deadline = Some(expire_ns);
        }
    });
}

pub(super) unsafe extern "C" fn host_timer_free(t: *mut QbpTimer) {
    let id = t as usize;
    STATE.with(|s| s.borrow_mut().timers.retain(|e| e.id != id));
}

pub(super) static HOST: QbpHost = QbpHost {
    header: QbpTableHeader::for_table::<QbpHost>(),
    log: Some(host_log),
    clock_ns: Some(host_clock_ns),
    fd_watch_add: Some(host_watch_add),
    fd_watch_remove: Some(host_watch_remove),
    timer_new: Some(host_timer_new),
    timer_mod: Some(host_timer_mod),
    timer_free: Some(host_timer_free),
};

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
