//! A process that may not call membarrier (a seccomp filter answers EPERM): the plugin says
//! so once in QEMU's log when it is loaded and its console still delivers every byte, with
//! a SeqCst fence on each write; ringcastd says so in its log and under `ringcastd stats`.
//! Each runs under the filter in a process of its own (a filter cannot be lifted).
#![cfg(target_arch = "x86_64")]

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::Duration;

use testbed::consumer::TestConsumer;
use testbed::harness::{MainLoop, Plugin};
use testbed::kit::seccomp::deny_from_now_on;
use testbed::kit::{bins, Ringcastd};
use testbed::stream::GuestStream;

const T: Duration = Duration::from_secs(30);

/// Selects the child's part of the plugin test.
const CHILD: &str = "RINGCAST_FENCE_CHILD";

fn plugin_under_the_filter() -> ! {
    deny_from_now_on(libc::SYS_membarrier, libc::EPERM).expect("seccomp filter");
    let p = Plugin::linked(ringcast_backend::qbp_plugin_query).expect("the linked plugin");
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = format!("socket={}:ring=64K", consumer.path().display());
    let data = GuestStream::bytes(5, 300_000);
    let total = data.len();
    let reader = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, total, Duration::from_millis(1), T)
            .unwrap();
        got
    });
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "con", &opts).unwrap();
    assert!(
        lp.run_until(T, || lp.logged("streaming to the daemon")),
        "the plugin never attached; logs: {:?}",
        lp.logs()
    );
    // A second device of the same process: the fallback is not said again.
    let _other = p.open_chardev("vm", "con2", &opts).unwrap();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let n = chr.write(&rest[..rest.len().min(1000)]) as usize;
        rest = &rest[n..];
        if n == 0 {
            lp.run_until(Duration::from_millis(5), || false);
        }
    }
    assert!(
        reader.join().unwrap() == data,
        "the console lost or changed bytes"
    );
    let said: Vec<String> = lp
        .logs()
        .into_iter()
        .filter(|l| l.contains("ring fence"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    assert!(
        said[0].contains("SeqCst fence on every write")
            && said[0].contains("MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED")
            && said[0].contains("denies it"),
        "{said:?}"
    );
    std::process::exit(0);
}

#[test]
fn a_plugin_denied_membarrier_says_so_once_and_its_console_loses_nothing() {
    if std::env::var_os(CHILD).is_some() {
        plugin_under_the_filter();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_plugin_denied_membarrier_says_so_once_and_its_console_loses_nothing",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ringcastd_denied_membarrier_says_so_in_its_log_and_its_stats() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bins::binary("ringcastd");
    let launcher = Box::new(move || {
        let mut c = Command::new(&bin);
        // SAFETY: the hook only makes the prctl and seccomp calls (no allocation, no lock).
        unsafe { c.pre_exec(|| deny_from_now_on(libc::SYS_membarrier, libc::EPERM)) };
        c
    });
    let mut d = Ringcastd::with_launcher(dir.path(), &dir.path().join("state"), launcher);
    d.spawn();
    let log = d.log();
    assert!(
        log.contains("ring fence: SeqCst fence on every write")
            && log.contains("MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED"),
        "{log}"
    );
    let table = d.stats_table();
    assert!(
        table.contains("ring fence: SeqCst fence on every write (membarrier("),
        "{table}"
    );

    // Without the filter, ringcastd uses membarrier where the kernel offers it.
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let expected = match shm_ring::fence::init().fallback {
        None => "ring fence: membarrier",
        Some(_) => "ring fence: SeqCst",
    };
    assert!(d.stats_table().contains(expected), "{}", d.stats_table());
}
