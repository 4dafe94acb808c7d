//! The instance: its panic latch (with a minimal host table that records the log), and the
//! label it logs under.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

use super::Instance;
use crate::abi::{QbpFdCallback, QbpFdWatch, QbpHost, QbpTableHeader, QbpTimer, QbpTimerCallback};
use crate::host::{self, Host};
use crate::instance::Identity;

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn log(_level: c_int, msg: *const c_char) {
    // SAFETY: the plugin passes a NUL-terminated string.
    let m = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    LOG.lock().unwrap().push(m);
}
unsafe extern "C" fn clock_ns(_clock: c_int) -> u64 {
    0
}
unsafe extern "C" fn watch_add(
    _fd: c_int,
    _events: u32,
    _cb: QbpFdCallback,
    _opaque: *mut c_void,
) -> *mut QbpFdWatch {
    std::ptr::NonNull::dangling().as_ptr()
}
unsafe extern "C" fn watch_remove(_w: *mut QbpFdWatch) {}
unsafe extern "C" fn timer_new(
    _clock: c_int,
    _cb: QbpTimerCallback,
    _opaque: *mut c_void,
) -> *mut QbpTimer {
    std::ptr::NonNull::dangling().as_ptr()
}
unsafe extern "C" fn timer_mod(_t: *mut QbpTimer, _expire_ns: u64) {}
unsafe extern "C" fn timer_free(_t: *mut QbpTimer) {}

fn test_host() -> Host {
    host::install(QbpHost {
        header: QbpTableHeader::for_table::<QbpHost>(),
        log: Some(log),
        clock_ns: Some(clock_ns),
        fd_watch_add: Some(watch_add),
        fd_watch_remove: Some(watch_remove),
        timer_new: Some(timer_new),
        timer_mod: Some(timer_mod),
        timer_free: Some(timer_free),
    })
}

fn lines_with(needle: &str) -> usize {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn a_panic_latches_the_instance_broken_with_one_log_line_and_then_only_counts() {
    let inst = Instance::open_audio(
        test_host(),
        Identity {
            vm_name: "vm".into(),
            vm_uuid: String::new(),
            device: "latch0".into(),
        },
        crate::opts::parse("").unwrap(),
    )
    .unwrap();
    let mut ran = 0;
    for _ in 0..3 {
        let v = inst.guarded(
            || {
                ran += 1;
                panic!("deliberate test panic")
            },
            || {
                inst.discard(1);
                7
            },
        );
        assert_eq!(v, 7);
    }
    assert_eq!(ran, 1, "a broken instance never runs the operation again");
    assert_eq!(lines_with("vm/latch0: internal error"), 1);
    assert_eq!(lines_with("(deliberate test panic)"), 1);
    inst.log_summary();
    assert_eq!(
        lines_with("vm/latch0: 3 audio periods discarded after the internal error"),
        1
    );
}

#[test]
fn a_label_in_qemus_log_cannot_carry_terminal_controls() {
    let id = Identity {
        vm_name: "prod\u{1b}]0;owned\u{7}\u{1b}[31m".into(),
        vm_uuid: String::new(),
        device: "serial\r0".into(),
    };
    let label = id.label(None);
    assert!(!label.chars().any(|c| c.is_control()), "{label:?}");
    assert_eq!(label, "prod\\u{1b}]0;owned\\u{7}\\u{1b}[31m/serial\\r0");
    assert_eq!(
        id.label(Some("ttyS0")),
        "prod\\u{1b}]0;owned\\u{7}\\u{1b}[31m/ttyS0"
    );
}
