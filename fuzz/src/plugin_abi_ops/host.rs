//! The QEMU-like host the plugin is given: its table (log, clock, fd watches, timers), the
//! state behind it, the plugin's tables, and one turn of its main loop.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

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
    armed: bool,
    cb: QbpTimerCallback,
    opaque: *mut c_void,
}

#[derive(Default)]
struct HostState {
    next_id: usize,
    watches: Vec<WatchEntry>,
    timers: Vec<TimerEntry>,
    /// Broken contracts seen inside callbacks (reported after the call returns: a panic
    /// cannot cross the C boundary).
    violations: Vec<String>,
}

thread_local! {
    static STATE: RefCell<HostState> = RefCell::new(HostState { next_id: 1, ..Default::default() });
}

impl HostState {
    fn new_id(&mut self) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Removes the entry `id` (watches and timers share one id space): false when there was none.
fn remove_by_id<T>(entries: &mut Vec<T>, id: usize, entry_id: fn(&T) -> usize) -> bool {
    let before = entries.len();
    entries.retain(|e| entry_id(e) != id);
    entries.len() < before
}

pub(super) fn violation(msg: String) {
    STATE.with(|s| s.borrow_mut().violations.push(msg));
}

unsafe extern "C" fn host_log(level: c_int, msg: *const c_char) {
    if msg.is_null() {
        violation("log with a NULL message".into());
        return;
    }
    // SAFETY: the plugin passes a NUL-terminated string valid during the call.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
    if text.contains("internal error") {
        violation(format!("the plugin caught a panic: {text}"));
    }
    if std::env::var_os("RINGCAST_FUZZ_LOG").is_some() {
        eprintln!("[plugin {level}] {text}");
    }
}

unsafe extern "C" fn host_clock_ns(_clock: c_int) -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

unsafe extern "C" fn host_watch_add(
    fd: c_int,
    events: u32,
    cb: QbpFdCallback,
    opaque: *mut c_void,
) -> *mut QbpFdWatch {
    if fd < 0 || cb.is_none() {
        violation(format!("fd watch on fd {fd} (callback {})", cb.is_some()));
        return std::ptr::null_mut();
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.new_id();
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
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !remove_by_id(&mut s.watches, id, |e| e.id) {
            s.violations
                .push(format!("removal of an unknown fd watch {id}"));
        }
    });
}

unsafe extern "C" fn host_timer_new(
    _clock: c_int,
    cb: QbpTimerCallback,
    opaque: *mut c_void,
) -> *mut QbpTimer {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.new_id();
        s.timers.push(TimerEntry {
            id,
            armed: false,
            cb,
            opaque,
        });
        id as *mut QbpTimer
    })
}

unsafe extern "C" fn host_timer_mod(t: *mut QbpTimer, _expire_ns: u64) {
    let id = t as usize;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        match s.timers.iter_mut().find(|e| e.id == id) {
            Some(e) => e.armed = true,
            None => s
                .violations
                .push(format!("timer_mod of an unknown timer {id}")),
        }
    });
}

unsafe extern "C" fn host_timer_free(t: *mut QbpTimer) {
    let id = t as usize;
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if !remove_by_id(&mut s.timers, id, |e| e.id) {
            s.violations
                .push(format!("timer_free of an unknown timer {id}"));
        }
    });
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

pub(super) struct Tables {
    pub(super) chardev: &'static QbpChardevOps,
    pub(super) audio: &'static QbpAudioOps,
}

// SAFETY: the tables are immutable statics of the plugin.
unsafe impl Sync for Tables {}
// SAFETY: as above.
unsafe impl Send for Tables {}

pub(super) fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        // SAFETY: HOST is a static table valid for the life of the process.
        let info = unsafe { ringcast_backend::qbp_plugin_query(&HOST) };
        // SAFETY: the plugin returns NULL or a pointer to its static tables.
        let info = unsafe { info.as_ref() }.expect("the plugin refused the host table");
        // SAFETY: non-null table pointers of the plugin point to statics.
        let (chardev, audio) = unsafe { (info.chardev.as_ref(), info.audio.as_ref()) };
        Tables {
            chardev: chardev.expect("no chardev table"),
            audio: audio.expect("no audio table"),
        }
    })
}

/// Fails the run if an fd watch or a timer is left (after every instance closed).
pub(super) fn check_nothing_left() {
    STATE.with(|s| {
        let s = s.borrow();
        assert!(
            s.watches.is_empty(),
            "{} fd watches left after close",
            s.watches.len()
        );
        assert!(
            s.timers.is_empty(),
            "{} timers left after close",
            s.timers.len()
        );
    });
}

/// Fails the run if a callback saw a broken contract.
pub(super) fn check_violations(after: &str) {
    let v = STATE.with(|s| std::mem::take(&mut s.borrow_mut().violations));
    assert!(v.is_empty(), "after {after}: {v:?}");
}

// ---- the main loop ----------------------------------------------------------------------

/// One turn of the host's main loop: fd callbacks for ready watches.
pub(super) fn poll_watches() {
    let ready: Vec<(usize, c_int, u32)> = STATE.with(|s| {
        let s = s.borrow();
        let mut fds: Vec<rustix::event::PollFd<'_>> = Vec::new();
        // SAFETY: the plugin keeps every watched fd open until it removes the watch.
        let borrowed: Vec<_> = s
            .watches
            .iter()
            .map(|w| unsafe { std::os::fd::BorrowedFd::borrow_raw(w.fd) })
            .collect();
        for (w, fd) in s.watches.iter().zip(&borrowed) {
            let mut flags = rustix::event::PollFlags::empty();
            if w.events & QBP_EVENT_IN != 0 {
                flags |= rustix::event::PollFlags::IN;
            }
            if w.events & QBP_EVENT_OUT != 0 {
                flags |= rustix::event::PollFlags::OUT;
            }
            fds.push(rustix::event::PollFd::from_borrowed_fd(*fd, flags));
        }
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if rustix::event::poll(&mut fds, Some(&zero)).is_err() {
            return Vec::new();
        }
        s.watches
            .iter()
            .zip(&fds)
            .filter(|(_, p)| !p.revents().is_empty())
            .map(|(w, p)| {
                let r = p.revents();
                let mut ev = 0;
                if r.contains(rustix::event::PollFlags::IN) {
                    ev |= QBP_EVENT_IN;
                }
                if r.contains(rustix::event::PollFlags::OUT) {
                    ev |= QBP_EVENT_OUT;
                }
                if r.contains(rustix::event::PollFlags::HUP) {
                    ev |= QBP_EVENT_HUP;
                }
                if r.contains(rustix::event::PollFlags::ERR) {
                    ev |= QBP_EVENT_ERR;
                }
                (w.id, w.fd, ev)
            })
            .collect()
    });
    for (id, fd, ev) in ready {
        // A callback may have removed a later watch (and freed what it pointed at).
        let entry = STATE.with(|s| {
            s.borrow()
                .watches
                .iter()
                .find(|w| w.id == id)
                .map(|w| (w.cb, w.opaque))
        });
        if let Some((Some(cb), opaque)) = entry {
            // SAFETY: the watch is still registered, so its opaque is live (ABI contract).
            unsafe { cb(opaque, fd, ev) };
        }
    }
}

/// Fires every armed timer once (time is not simulated: "later" is now).
pub(super) fn fire_timers() {
    let armed: Vec<usize> = STATE.with(|s| {
        s.borrow()
            .timers
            .iter()
            .filter(|t| t.armed)
            .map(|t| t.id)
            .collect()
    });
    for id in armed {
        let entry = STATE.with(|s| {
            let mut s = s.borrow_mut();
            let t = s.timers.iter_mut().find(|t| t.id == id && t.armed)?;
            t.armed = false;
            Some((t.cb, t.opaque))
        });
        if let Some((Some(cb), opaque)) = entry {
            // SAFETY: the timer is still registered, so its opaque is live (ABI contract).
            unsafe { cb(opaque) };
        }
    }
}
