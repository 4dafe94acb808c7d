//! The plugin's write paths, linked into this test binary: the guest's `chr_write` and
//! `audio_out_write` allocate nothing (a counting global allocator), and a console write
//! makes no system call but the doorbell's `write` (a seccomp filter that kills the process
//! on any other call, run in a child process).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;
use std::time::Duration;

use testbed::consumer::TestConsumer;
use testbed::harness::{MainLoop, Plugin, S16_STEREO_44100};
use testbed::stream::GuestStream;

const T: Duration = Duration::from_secs(30);

/// Counts the allocations of the thread that armed it.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // try_with: the thread-locals may be gone while a thread exits.
    let _ = ARMED.try_with(|a| {
        if a.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations (and frees) `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(|c| c.get())
}

fn plugin() -> Plugin {
    Plugin::linked(ringcast_backend::qbp_plugin_query).expect("the linked plugin")
}

fn wait_attached(lp: &MainLoop) {
    assert!(
        lp.run_until(T, || lp.logged("streaming to the daemon")),
        "the plugin never attached; logs: {:?}",
        lp.logs()
    );
}

#[test]
fn the_counting_allocator_sees_an_allocation() {
    // The check below can fail: a write path that allocates is seen.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 2);
}

#[test]
fn console_writes_allocate_nothing_attached_or_as_a_flight_recorder() {
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}:ring=1M", consumer.path().display());
    let data = GuestStream::bytes(3, 400_000);
    let total = data.len();
    let reader = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, total, Duration::ZERO, T).unwrap();
        got
    });
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "con", &opts).unwrap();
    wait_attached(&lp);
    let mut accepted = 0;
    let n = allocations(|| {
        for c in data.chunks(100) {
            accepted += chr.write(c) as usize;
            chr.write_ready();
        }
    });
    assert_eq!(accepted, total, "a 1 MiB ring takes 400 KB without waiting");
    assert_eq!(n, 0, "chr_write / write_ready allocated while attached");
    assert!(reader.join().unwrap() == data);

    // No daemon: the flight recorder overwrites, still without allocating.
    let nobody = dir.path().join("nobody.sock");
    let chr = p
        .open_chardev(
            "vm",
            "rec",
            &format!("socket={}:ring=16K", nobody.display()),
        )
        .unwrap();
    let n = allocations(|| {
        for c in data.chunks(1000) {
            assert_eq!(chr.write(c), 1000);
        }
    });
    assert_eq!(n, 0, "chr_write allocated as a flight recorder");
}

#[test]
fn audio_writes_allocate_nothing() {
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let reader = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().audio();
        let mut got = 0;
        while got < 200 {
            got += a.pop_all().unwrap().len();
            a.wait(Duration::from_millis(200)).unwrap();
        }
        got
    });
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    audio.out_enable(true);
    wait_attached(&lp);
    let period = GuestStream::bytes(1, 441 * 4);
    let n = allocations(|| {
        for _ in 0..200 {
            assert_eq!(audio.out_write(&period), period.len());
        }
    });
    assert_eq!(n, 0, "audio_out_write allocated");
    assert_eq!(reader.join().unwrap(), 200);
}

/// The child's part of the system-call tests, selected by this variable: "writes" runs the
/// console writes under the filter, "audio" the audio writes and reads, "control" makes one
/// forbidden call under it.
const CHILD: &str = "RINGCAST_HOT_PATH_CHILD";

#[cfg(target_arch = "x86_64")]
fn child(mode: &str) -> ! {
    if mode == "audio" {
        audio_child();
    }
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}:ring=1M", consumer.path().display());
    let data = GuestStream::bytes(4, 300_000);
    let total = data.len();
    // The reader sleeps on its doorbell between reads, so the writes ring it.
    let _reader = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        let _ = c.read_until(&mut got, total, Duration::from_millis(1), T);
        std::thread::sleep(T);
    });
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "con", &opts).unwrap();
    wait_attached(&lp);
    let mut accepted = 0usize;
    testbed::kit::seccomp::only_write_and_exit_from_now_on().expect("seccomp filter");
    if mode == "control" {
        // SAFETY: a plain system call, forbidden by the filter: the process must die here.
        unsafe { libc::getpid() };
    }
    for c in data.chunks(100) {
        accepted += chr.write(c) as usize;
        chr.write_ready();
    }
    let code = if accepted == total { 0 } else { 3 };
    // SAFETY: ends the process at once (no destructors: they would make other calls).
    unsafe { libc::syscall(libc::SYS_exit_group, code) };
    unreachable!()
}

/// The audio variant: periods written to the output voice and the capture voice read, under
/// the filter, while the daemon's side reads the output ring (unfiltered, another thread).
#[cfg(target_arch = "x86_64")]
fn audio_child() -> ! {
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}", consumer.path().display());
    let _reader = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().audio();
        loop {
            let _ = a.pop_all();
            let _ = a.wait(Duration::from_millis(1));
        }
    });
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert_eq!(audio.in_open(&S16_STEREO_44100), 0);
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    audio.out_enable(true);
    audio.in_enable(true);
    wait_attached(&lp);
    let period = GuestStream::bytes(1, 441 * 4);
    let mut buf = vec![0u8; 441 * 4];
    testbed::kit::seccomp::only_write_and_exit_from_now_on().expect("seccomp filter");
    let mut ok = true;
    for _ in 0..200 {
        ok &= audio.out_write(&period) == period.len();
        ok &= audio.in_read(&mut buf) <= buf.len();
    }
    // SAFETY: ends the process at once (no destructors: they would make other calls).
    unsafe { libc::syscall(libc::SYS_exit_group, if ok { 0 } else { 3 }) };
    unreachable!()
}

/// Runs this binary's console system-call test as a child in `mode` (see [`CHILD`]).
#[cfg(target_arch = "x86_64")]
fn run_child(mode: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_console_write_makes_no_system_call_but_the_doorbell",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .output()
        .unwrap()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn audio_writes_and_reads_make_no_system_call_but_the_doorbell() {
    let out = run_child("audio");
    assert!(
        out.status.success(),
        "an audio write or read made a forbidden system call: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_console_write_makes_no_system_call_but_the_doorbell() {
    use std::os::unix::process::ExitStatusExt;
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
    }
    let run = run_child;
    let control = run("control");
    assert_eq!(
        control.status.signal(),
        Some(libc::SIGSYS),
        "the filter must kill a forbidden call: {control:?}"
    );
    let writes = run("writes");
    assert!(
        writes.status.success(),
        "a console write made a forbidden system call (or lost bytes): {:?}\n{}",
        writes.status,
        String::from_utf8_lossy(&writes.stderr)
    );
}
