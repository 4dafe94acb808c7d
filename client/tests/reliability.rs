//! Faults with real processes: ringcastd killed with SIGKILL under load while clients are
//! attached, a `ringcast capture` killed mid-stream, a QEMU killed mid-stream and started
//! again, and the spool's disk full. Each checks what was lost: nothing, or exactly what
//! the loss policy says and the counters report.

#[path = "../../sidecar/tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use client::{ConsoleItem, Mode, StartAt};
use common::{read_spool, sha, stream, FakeConsole};
use support::{wait_until, Ringcastd, Target};

const WAIT: Duration = Duration::from_secs(60);

/// Streams `total` bytes of `seed` into `c` like the backend: backpressure while attached,
/// flight-recorder writes into free space only while ringcastd is away (so nothing is
/// overwritten), re-registering when it comes back. Waits until everything is drained.
/// Returns the registrations after the first.
fn stream_through_restarts(c: &mut FakeConsole, seed: u64, total: u64, pace: Duration) -> u32 {
    const CHUNK: u64 = 16 << 10;
    let cap = c.out_mem.geometry().capacity as usize;
    let (mut pos, mut pending, mut reconnects, mut was_attached) = (0u64, Vec::new(), 0, true);
    while pos < total || !pending.is_empty() {
        if pending.is_empty() {
            let n = CHUNK.min(total - pos);
            pending = stream(seed, pos, n);
            pos += n;
            std::thread::sleep(pace);
        }
        if c.attached() {
            if !was_attached {
                reconnects += 1;
                was_attached = true;
            }
            let w = c.tx.write(&pending).unwrap();
            if w.wake_consumer {
                c.out_data.ring();
            }
            pending.drain(..w.bytes);
            if w.bytes == 0
                && !c
                    .tx
                    .space_or_arm(1, || {
                        c.out_space.drain();
                    })
                    .unwrap()
            {
                c.out_space.wait(20);
            }
        } else {
            was_attached = false;
            if c.free() >= pending.len() {
                c.write_overwriting(&pending);
                pending.clear();
            } else if c.try_connect().is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    wait_until("the ring to drain", WAIT, || {
        if !c.attached() {
            if c.try_connect().is_ok() && !was_attached {
                reconnects += 1;
                was_attached = true;
            }
            return false;
        }
        c.free() == cap
    });
    reconnects
}

/// A library client that follows a console from offset 0 and, whenever the connection
/// breaks, reconnects and resumes from the offset it reached, until it has `total` bytes.
async fn follow_with_resume(d: Target, vm: &str, dev: &str, total: u64) -> (Vec<u8>, u32) {
    let mut got = Vec::new();
    let mut resumes = 0;
    'outer: loop {
        let s = d.session().await;
        let mut c = match s
            .attach_console(vm, dev, Mode::Read, StartAt::Offset(got.len() as u64))
            .await
        {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while (got.len() as u64) < total {
            match tokio::time::timeout(WAIT, c.next()).await.expect("stuck") {
                Ok(Some(ConsoleItem::Chunk { offset, bytes })) => {
                    assert_eq!(offset, got.len() as u64);
                    got.extend_from_slice(&bytes);
                }
                Ok(Some(ConsoleItem::Gap {
                    offset,
                    len,
                    reason,
                })) => {
                    panic!("gap at {offset}: {len} bytes ({reason:?})")
                }
                Ok(None) | Err(_) => {
                    resumes += 1;
                    continue 'outer;
                }
            }
        }
        return (got, resumes);
    }
}

fn interrupt(child: &Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::INT,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcastd_killed_and_restarted_under_load_loses_nothing_for_attached_clients() {
    const TOTAL: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Ringcastd::start(
        dir.path(),
        &dir.path().join("state"),
        &["--journal-window", "256K", "--segment-size", "1M"],
    );
    let sock = d.socket();
    let producers: Vec<_> = (0..2u64)
        .map(|i| {
            let mut c = FakeConsole::new(&sock, &format!("vmr{i}"), "serial0", 50 + i, 1 << 20);
            c.connect();
            std::thread::spawn(move || {
                stream_through_restarts(&mut c, 40 + i, TOTAL, Duration::from_millis(2))
            })
        })
        .collect();
    // The CLI client: capture --resume --follow, started again whenever it exits.
    let file = dir.path().join("vmr1.log");
    let capture = |d: &Ringcastd| {
        d.ringcast()
            .args(["capture", "vmr1/serial0", "--resume", "--follow", "-o"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Library clients on both devices, resuming after every break.
    let followers: Vec<_> = (0..2u64)
        .map(|i| {
            let t = d.target();
            tokio::spawn(async move {
                follow_with_resume(t, &format!("vmr{i}"), "serial0", TOTAL).await
            })
        })
        .collect();
    let mut cli = capture(&d);
    let mut cli_runs = 1;
    let dev_dir = |i: u64| dir.path().join(format!("state/vmr{i}/serial0"));
    wait_until("2 MiB in each spool", WAIT, || {
        (0..2).all(|i| read_spool(&dev_dir(i)).0.len() >= 2 << 20)
    });
    d.kill9();
    let at_kill = read_spool(&dev_dir(0)).0.len() as u64;
    assert!(at_kill < TOTAL, "the stream ended before the kill");
    // The CLI client notices the loss and exits; nothing restarts it until ringcastd is back.
    let status = tokio::task::spawn_blocking(move || cli.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "capture --follow survived its server");
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.spawn();
    cli = capture(&d);
    cli_runs += 1;
    let reconnects: Vec<u32> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(reconnects, vec![1, 1], "each QEMU re-registered once");
    for (i, f) in followers.into_iter().enumerate() {
        let (got, resumes) = f.await.unwrap();
        assert!(resumes >= 1, "client {i} never lost its connection");
        assert_eq!(got.len() as u64, TOTAL);
        assert_eq!(
            sha(&got),
            sha(&stream(40 + i as u64, 0, TOTAL)),
            "client {i}"
        );
    }
    // The restarted capture follows past the restart (it writes through a 1 MiB buffer);
    // interrupted, it flushes and stops, and `capture --resume` completes the file.
    let f2 = file.clone();
    wait_until("the capture to follow past the restart", WAIT, || {
        std::fs::metadata(&f2).map(|m| m.len()).unwrap_or(0) >= TOTAL - (1 << 20)
    });
    assert!(
        cli.try_wait().unwrap().is_none(),
        "capture --follow stopped"
    );
    interrupt(&cli);
    cli.wait().unwrap();
    let out = d
        .ringcast()
        .args(["capture", "vmr1/serial0", "--resume", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let captured = std::fs::read(&file).unwrap();
    assert_eq!(captured.len() as u64, TOTAL, "after {cli_runs} follow runs");
    assert_eq!(sha(&captured), sha(&stream(41, 0, TOTAL)));
    for i in 0..2 {
        let (spool, holes) = read_spool(&dev_dir(i));
        assert!(holes.is_empty(), "{holes:?}");
        assert_eq!(sha(&spool), sha(&stream(40 + i, 0, TOTAL)));
        assert_eq!(
            d.stat(&format!("vmr{i}/serial0"), "LOST:FLIGHT").as_deref(),
            Some("0")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_ringcastd_learns_of_it_from_the_restarted_one_by_a_stateless_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let mut qemu = FakeConsole::new(&d.socket(), "vms", "serial0", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(b"before\r\n");
    let s = d.session().await;
    let mut c = s
        .attach_console("vms", "serial0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    assert!(matches!(
        c.next().await,
        Ok(Some(ConsoleItem::Chunk { .. }))
    ));
    d.kill9();
    d.spawn();
    // The client's next keep-alive reaches the new process, whose reset (keyed by the
    // persistent server identity) the client can verify: not an idle timeout.
    let e = tokio::time::timeout(Duration::from_secs(25), c.next())
        .await
        .expect("the client noticed only by its idle timeout")
        .unwrap_err();
    assert!(e.to_string().contains("reset by peer"), "{e}");
}
