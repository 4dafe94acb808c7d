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

mod daemon;
mod frontend;
mod host;
mod inputs;

use std::ffi::{c_char, c_void};

use ringcast_backend::abi::*;
use shm_ring::handover::{self, Ack};

use crate::fill_pattern;
use crate::input::Input;
use daemon::Daemon;
use frontend::{fe_can_write, fe_write, Frontend};
use host::{check_nothing_left, check_violations, fire_timers, poll_watches, tables};
use inputs::{audio_format, c_string, opts, pick_string, Info, IDS, VM_NAMES};

struct Chardev {
    chr: *mut QbpChardev,
    fe: Box<Frontend>,
    _fe_table: Box<QbpChardevFrontend>,
}

struct Audio {
    audio: *mut QbpAudio,
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
    check_nothing_left();
    drop(daemon);
}

fn pick<'a, T>(v: &'a [T], inp: &mut Input<'_>) -> Option<&'a T> {
    if v.is_empty() {
        return None;
    }
    Some(&v[inp.u8() as usize % v.len()])
}
