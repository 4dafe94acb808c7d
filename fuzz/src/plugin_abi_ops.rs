//! An operation stream against the plugin's real C ABI (`qbp_plugin_query` and the tables
//! it returns, linked from the `backend-so` crate), with a minimal QEMU-like host (log, fd
//! watches, timers, clock), fake chardev frontends and an in-process daemon that accepts
//! registrations, acknowledges or refuses them, reads and writes the rings it was handed,
//! scribbles over them like a hostile peer, and hangs up.
//!
//! Inputs: instance ids, VM names and opts strings (valid, invalid and random), writes of
//! any length, audio formats with zero or huge rates and channel counts and unknown sample
//! formats, and every entry point in any order, including on NULL instances.
//!
//! Checked: no panic inside the plugin (it catches them and logs "internal error", which
//! fails the run; under libFuzzer the panic aborts at once), return values within their
//! contract, a frontend never handed more input than it said it could take, every
//! registration the plugin sends decodes and its rings map, and after every instance is
//! closed, no fd watch or timer is left behind.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use ringcast_backend::abi::*;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack, DeviceDescription, DeviceKind};
use shm_ring::{ByteConsumer, ByteProducer, Doorbell, RecordConsumer, RingKind, RingMemory};

use crate::fill_pattern;
use crate::input::Input;
use crate::peer::Peer;

// ---- the host table ---------------------------------------------------------------------

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

fn violation(msg: String) {
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
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let before = s.watches.len();
        s.watches.retain(|e| e.id != id);
        if s.watches.len() == before {
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
        let id = s.next_id;
        s.next_id += 1;
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
        let before = s.timers.len();
        s.timers.retain(|e| e.id != id);
        if s.timers.len() == before {
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

struct Tables {
    chardev: &'static QbpChardevOps,
    audio: &'static QbpAudioOps,
}

// SAFETY: the tables are immutable statics of the plugin.
unsafe impl Sync for Tables {}
// SAFETY: as above.
unsafe impl Send for Tables {}

fn tables() -> &'static Tables {
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

/// Fails the run if a callback saw a broken contract.
fn check_violations(after: &str) {
    let v = STATE.with(|s| std::mem::take(&mut s.borrow_mut().violations));
    assert!(v.is_empty(), "after {after}: {v:?}");
}

// ---- fake frontends -----------------------------------------------------------------------

#[derive(Debug, Default)]
struct Frontend {
    budget: Cell<usize>,
    received: Cell<u64>,
}

unsafe extern "C" fn fe_can_write(opaque: *mut c_void) -> usize {
    // SAFETY: opaque is the Frontend box of a live chardev.
    unsafe { &*(opaque as *const Frontend) }.budget.get()
}

unsafe extern "C" fn fe_write(opaque: *mut c_void, buf: *const u8, len: usize) {
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

struct Chardev {
    chr: *mut QbpChardev,
    fe: Box<Frontend>,
    _fe_table: Box<QbpChardevFrontend>,
}

struct Audio {
    audio: *mut QbpAudio,
}

struct Info {
    raw: QbpInstanceInfo,
    _strings: [CString; 4],
}

impl Info {
    fn new(id: CString, vm_name: CString, vm_uuid: CString, opts: CString) -> Info {
        let raw = QbpInstanceInfo {
            header: QbpTableHeader::for_table::<QbpInstanceInfo>(),
            id: id.as_ptr(),
            vm_name: vm_name.as_ptr(),
            vm_uuid: vm_uuid.as_ptr(),
            config: opts.as_ptr(),
        };
        Info {
            raw,
            _strings: [id, vm_name, vm_uuid, opts],
        }
    }
}

// ---- the fake daemon -------------------------------------------------------------------

struct Conn {
    sock: Option<OwnedFd>,
    peers: Vec<Peer>,
    bells: Vec<Doorbell>,
    out: Option<ByteConsumer>,
    input: Option<ByteProducer>,
    audio: Option<RecordConsumer>,
}

struct Daemon {
    dir: PathBuf,
    path: PathBuf,
    listener: OwnedFd,
    conns: Vec<Conn>,
}

impl Daemon {
    fn new() -> Daemon {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringcast-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        rustix::net::listen(&listener, 16).unwrap();
        Daemon {
            dir,
            path,
            listener,
            conns: Vec::new(),
        }
    }

    /// Takes pending registrations; every one must be well formed.
    fn accept(&mut self) {
        while let Ok(sock) =
            rustix::net::accept_with(&self.listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
        {
            let Ok(Some((msg, fds))) = handover::recv_with_fds(&sock) else {
                continue;
            };
            let desc = DeviceDescription::decode(&msg)
                .unwrap_or_else(|e| panic!("the plugin sent a bad registration: {e}"));
            assert_eq!(fds.len(), desc.fd_count(), "{desc:?}");
            let mut fds = fds.into_iter().map(Some).collect::<Vec<_>>();
            let mut take = |i: usize| fds[i].take().unwrap();
            let mut conn = Conn {
                sock: Some(sock),
                peers: Vec::new(),
                bells: Vec::new(),
                out: None,
                input: None,
                audio: None,
            };
            let open = |fd: OwnedFd, kind| {
                RingMemory::open(fd, kind)
                    .unwrap_or_else(|e| panic!("the plugin handed a bad ring: {e}"))
            };
            match desc.kind {
                DeviceKind::Console => {
                    let out = std::sync::Arc::new(open(take(0), RingKind::Bytes));
                    let inp = std::sync::Arc::new(open(take(3), RingKind::Bytes));
                    conn.peers.push(Peer::map(&out));
                    conn.peers.push(Peer::map(&inp));
                    conn.out = ByteConsumer::new(out).ok();
                    conn.input = ByteProducer::new(inp).ok();
                    for i in [1, 2, 4, 5] {
                        conn.bells.push(Doorbell::from_fd(take(i)).unwrap());
                    }
                }
                DeviceKind::Audio => {
                    assert!(desc.audio.is_some());
                    let mem = std::sync::Arc::new(open(take(0), RingKind::Records));
                    conn.peers.push(Peer::map(&mem));
                    conn.audio = RecordConsumer::new(mem).ok();
                    conn.bells.push(Doorbell::from_fd(take(1)).unwrap());
                }
            }
            self.conns.push(conn);
            if self.conns.len() > 8 {
                self.conns.remove(0);
            }
        }
    }

    fn pick(&mut self, inp: &mut Input<'_>) -> Option<&mut Conn> {
        if self.conns.is_empty() {
            return None;
        }
        let i = inp.u8() as usize % self.conns.len();
        Some(&mut self.conns[i])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- inputs -----------------------------------------------------------------------------

fn c_string(bytes: &[u8]) -> CString {
    CString::new(
        bytes
            .iter()
            .copied()
            .filter(|&b| b != 0)
            .collect::<Vec<u8>>(),
    )
    .unwrap()
}

fn pick_string(inp: &mut Input<'_>, pool: &[&str]) -> CString {
    let sel = inp.u8() as usize;
    if sel < pool.len() * 24 {
        c_string(pool[sel % pool.len()].as_bytes())
    } else {
        let n = inp.u8() as usize % 40;
        c_string(inp.bytes(n))
    }
}

const IDS: &[&str] = &["serial0", "con", "", "mon-é", "x"];
const VM_NAMES: &[&str] = &["", "vm1", "a/b", "日本語の名前"];
const OPTS: &[&str] = &[
    "",
    "ring=4K",
    "ring=4K:input-ring=4K",
    "ring=8K:input-ring=4096:name=console",
    "name=other",
    "ring=1000",
    "ring=2G",
    "input-ring=",
    "bogus=1",
    "novalue",
    ":::",
    "socket=",
    "ring=18446744073709551615K",
    "name=",
];

/// A size the way the plugin parses `ring=`; used to keep rings small enough to fuzz fast.
fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn opts(inp: &mut Input<'_>, daemon: &Daemon) -> Option<CString> {
    let mut s = pick_string(inp, OPTS).into_bytes();
    // Keep the (otherwise valid) ring sizes at the default or below: a 1 GiB ring per
    // instance measures the page allocator, not the plugin.
    for item in String::from_utf8_lossy(&s).split(':') {
        if let Some((k, v)) = item.split_once('=') {
            if (k == "ring" || k == "input-ring") && parse_size(v).is_some_and(|n| n > 1 << 20) {
                return None;
            }
        }
    }
    // Always name the socket last (the last one wins), so no run reaches a real daemon.
    let socket = match inp.u8() % 8 {
        0..=4 => daemon.path.display().to_string(),
        5 => "/nonexistent-ringcast-fuzz/d.sock".into(),
        6 => format!("/{}", "a".repeat(200)),
        _ => daemon.dir.display().to_string(),
    };
    if !s.is_empty() {
        s.push(b':');
    }
    s.extend_from_slice(b"socket=");
    s.extend_from_slice(socket.as_bytes());
    Some(c_string(&s))
}

fn audio_format(inp: &mut Input<'_>) -> QbpAudioFormat {
    let frequency = match inp.u8() % 8 {
        0 => 0,
        1 => 8000,
        2 => 44100,
        3 => 48000,
        4 => 768_000,
        5 => u32::MAX,
        _ => inp.u32(),
    };
    let channels = match inp.u8() % 6 {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 64,
        4 => u16::MAX,
        _ => inp.u16(),
    };
    QbpAudioFormat {
        frequency,
        channels,
        sample_format: inp.u8() as u16 % 10,
        big_endian: inp.u8(),
        reserved: [0; 7],
    }
}

// ---- the main loop ----------------------------------------------------------------------

/// One turn of the host's main loop: fd callbacks for ready watches.
fn poll_watches() {
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
fn fire_timers() {
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

// ---- the operation stream ---------------------------------------------------------------

const MAX_INSTANCES: usize = 4;

/// Runs one operation stream.
pub fn run(data: &[u8]) {
    let t = tables();
    let ops = t.chardev;
    let aops = t.audio;
    let mut inp = Input::new(data);
    let mut daemon = Daemon::new();
    let mut chardevs: Vec<Chardev> = Vec::new();
    let mut audios: Vec<Audio> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let eio = -rustix::io::Errno::IO.raw_os_error();
    let einval = -rustix::io::Errno::INVAL.raw_os_error();

    while let Some(op) = inp.op() {
        let what = op % 22;
        match what {
            0 => {
                let id = pick_string(&mut inp, IDS);
                let vm = pick_string(&mut inp, VM_NAMES);
                let uuid = pick_string(&mut inp, &["", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"]);
                let Some(o) = opts(&mut inp, &daemon) else {
                    continue;
                };
                if chardevs.len() >= MAX_INSTANCES {
                    continue;
                }
                let info = Info::new(id, vm, uuid, o);
                let fe = Box::new(Frontend::default());
                let fe_table = Box::new(QbpChardevFrontend {
                    header: QbpTableHeader::for_table::<QbpChardevFrontend>(),
                    opaque: &*fe as *const Frontend as *mut c_void,
                    can_write: Some(fe_can_write),
                    write: Some(fe_write),
                });
                let mut err = [0 as c_char; 128];
                // Sometimes a buffer too small for the message, or none at all.
                let err_len = [128, 1, 0, 7][inp.u8() as usize % 4];
                let open = ops.open.unwrap();
                // SAFETY: every pointer is valid for the call; the frontend table and its
                // opaque live in the Chardev until after close.
                let chr = unsafe { open(&info.raw, &*fe_table, err.as_mut_ptr(), err_len) };
                if chr.is_null() {
                    if err_len > 0 {
                        assert!(err[..err_len].contains(&0), "error not NUL-terminated");
                    }
                } else {
                    chardevs.push(Chardev {
                        chr,
                        fe,
                        _fe_table: fe_table,
                    });
                }
            }
            1 => {
                let id = pick_string(&mut inp, IDS);
                let vm = pick_string(&mut inp, VM_NAMES);
                let Some(o) = opts(&mut inp, &daemon) else {
                    continue;
                };
                if audios.len() >= MAX_INSTANCES {
                    continue;
                }
                let info = Info::new(id, vm, c_string(b""), o);
                let mut err = [0 as c_char; 128];
                let open = aops.open.unwrap();
                // SAFETY: every pointer is valid for the call.
                let audio = unsafe { open(&info.raw, err.as_mut_ptr(), err.len()) };
                if !audio.is_null() {
                    audios.push(Audio { audio });
                }
            }
            2 => {
                if !chardevs.is_empty() {
                    let c = chardevs.remove(inp.u8() as usize % chardevs.len());
                    // SAFETY: a live instance, closed once.
                    unsafe { ops.close.unwrap()(c.chr) };
                }
            }
            3 => {
                if !audios.is_empty() {
                    let a = audios.remove(inp.u8() as usize % audios.len());
                    // SAFETY: a live instance, closed once.
                    unsafe { aops.close.unwrap()(a.audio) };
                }
            }
            4 => {
                let n = inp.len(buf.len());
                fill_pattern(&mut buf[..n], n as u64);
                let (chr, p) = match chardevs.len() {
                    0 => (std::ptr::null_mut(), buf.as_ptr()),
                    l => (
                        chardevs[inp.u8() as usize % l].chr,
                        if n == 0 && inp.u8() & 1 == 0 {
                            std::ptr::null()
                        } else {
                            buf.as_ptr()
                        },
                    ),
                };
                // SAFETY: NULL or a live instance; `p` is valid for `n` bytes (or n is 0).
                let r = unsafe { ops.write.unwrap()(chr, p, n) };
                assert!(r == eio || (r >= 0 && r as usize <= n), "write of {n}: {r}");
                if chr.is_null() {
                    assert_eq!(r, eio, "write on a NULL instance");
                }
            }
            5 => {
                if let Some(c) = pick(&chardevs, &mut inp) {
                    // SAFETY: a live instance.
                    let _ = unsafe { ops.write_ready.unwrap()(c.chr) };
                }
            }
            6 => {
                if let Some(c) = pick(&chardevs, &mut inp) {
                    // SAFETY: a live instance.
                    let fd = unsafe { ops.write_wait_fd.unwrap()(c.chr) };
                    if fd >= 0 {
                        // SAFETY: only queried, not kept.
                        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                        assert!(rustix::io::fcntl_getfd(b).is_ok(), "wait fd {fd} is closed");
                    }
                } else {
                    // SAFETY: NULL is tolerated by the plugin.
                    let fd = unsafe { ops.write_wait_fd.unwrap()(std::ptr::null_mut()) };
                    assert_eq!(fd, -1);
                }
            }
            7 => {
                if let Some(c) = pick(&chardevs, &mut inp) {
                    // SAFETY: a live instance.
                    unsafe { ops.accept_input.unwrap()(c.chr) };
                }
            }
            8 => {
                let budget = inp.len(2048);
                if let Some(c) = pick(&chardevs, &mut inp) {
                    c.fe.budget.set(budget);
                }
            }
            9 => {
                let f = audio_format(&mut inp);
                if let Some(a) = pick(&audios, &mut inp) {
                    // SAFETY: a live instance and a valid format.
                    let r = unsafe { aops.out_open.unwrap()(a.audio, &f) };
                    assert!(r == 0 || r == einval || r == eio, "out_open: {r}");
                }
            }
            10 => {
                let n = inp.len(buf.len());
                if let Some(a) = pick(&audios, &mut inp) {
                    // SAFETY: a live instance; `buf` holds n bytes.
                    let r = unsafe { aops.out_write.unwrap()(a.audio, buf.as_ptr().cast(), n) };
                    assert_eq!(r, n, "out_write must take everything");
                }
            }
            11 => {
                let on = inp.u8() & 1 == 1;
                if let Some(a) = pick(&audios, &mut inp) {
                    // SAFETY: a live instance.
                    unsafe { aops.out_enable.unwrap()(a.audio, on) };
                }
            }
            12 => {
                if let Some(a) = pick(&audios, &mut inp) {
                    // SAFETY: a live instance.
                    unsafe { aops.out_close.unwrap()(a.audio) };
                }
            }
            13 => poll_watches(),
            14 => fire_timers(),
            15 => daemon.accept(),
            16 => {
                let sel = inp.u8() % 4;
                let n = inp.u16() as usize % 600;
                let text = inp.bytes(n).to_vec();
                if let Some(c) = daemon.pick(&mut inp) {
                    let msg = match sel {
                        0 | 1 => Ack {
                            accepted: true,
                            message: String::new(),
                        }
                        .encode(),
                        2 => Ack {
                            accepted: false,
                            message: String::from_utf8_lossy(&text).into_owned(),
                        }
                        .encode(),
                        _ => text,
                    };
                    if let Some(sock) = &c.sock {
                        let _ = handover::send_with_fds(sock, &msg, &[]);
                    }
                }
            }
            17 => {
                if let Some(c) = daemon.pick(&mut inp) {
                    let mut out = [0u8; 4096];
                    if let Some(rx) = &mut c.out {
                        if let Ok(r) = rx.read(&mut out) {
                            if r.wake_producer {
                                c.bells[1].ring();
                            }
                        }
                    }
                    if let Some(rx) = &mut c.audio {
                        let mut payload = Vec::new();
                        for _ in 0..4 {
                            if !matches!(rx.pop(&mut payload), Ok(Some(_))) {
                                break;
                            }
                        }
                    }
                }
            }
            18 => {
                let n = inp.len(5000);
                fill_pattern(&mut buf[..n], 0);
                if let Some(c) = daemon.pick(&mut inp) {
                    if let Some(tx) = &mut c.input {
                        if let Ok(w) = tx.write(&buf[..n]) {
                            if w.wake_consumer {
                                c.bells[2].ring();
                            }
                        }
                    }
                }
            }
            19 | 20 => {
                if let Some(c) = daemon.pick(&mut inp) {
                    let j = inp.u8() as usize % c.peers.len();
                    let peer = &c.peers[j];
                    let cap = (peer.len() - crate::peer::HEADER) as u64;
                    if what == 19 {
                        peer.scribble_header(&mut inp, cap);
                    } else {
                        peer.scribble_data(&mut inp);
                    }
                    // Ring the doorbells too, so the plugin looks at the damage now.
                    let b = inp.u8() as usize % c.bells.len();
                    c.bells[b].ring();
                }
            }
            _ => {
                if let Some(c) = daemon.pick(&mut inp) {
                    c.sock = None;
                }
            }
        }
        check_violations(&format!("operation {what}"));
    }

    for c in chardevs.drain(..) {
        // SAFETY: a live instance, closed once.
        unsafe { ops.close.unwrap()(c.chr) };
    }
    for a in audios.drain(..) {
        // SAFETY: a live instance, closed once.
        unsafe { aops.close.unwrap()(a.audio) };
    }
    check_violations("closing every instance");
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
    drop(daemon);
}

fn pick<'a, T>(v: &'a [T], inp: &mut Input<'_>) -> Option<&'a T> {
    if v.is_empty() {
        return None;
    }
    Some(&v[inp.u8() as usize % v.len()])
}
