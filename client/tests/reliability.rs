//! Faults with real processes: ringcastd killed with SIGKILL under load while clients are
//! attached, a `ringcast capture` killed mid-stream, a QEMU killed mid-stream and started
//! again, and the spool's disk full. Each checks what was lost: nothing, or exactly what
//! the loss policy says and the counters report.

use std::process::{Child, Stdio};
use std::time::Duration;

use client::{ConsoleItem, Mode, StartAt};
use testbed::kit::clients::{rss_kib, RingcastdExt, Target};
use testbed::kit::Tmpfs;
use testbed::kit::{read_spool, sha, stream, FakeConsole};
use testbed::kit::{wait_until, Ringcastd};

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
    d.wait_until("2 MiB in each spool", WAIT, || {
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
    d.wait_until("the capture to follow past the restart", WAIT, || {
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

/// A small tmpfs mounted for the test's life (root only).
/// Items of a console stream until `end`: (offset, bytes) chunks and (offset, len, reason)
/// gaps.
type Items = (Vec<(u64, Vec<u8>)>, Vec<(u64, u64, client::GapReason)>);

async fn collect(c: &mut client::ConsoleStream, end: u64) -> Items {
    let (mut chunks, mut gaps) = (Vec::new(), Vec::new());
    while c.offset() < end {
        match tokio::time::timeout(WAIT, c.next()).await.unwrap().unwrap() {
            Some(ConsoleItem::Chunk { offset, bytes }) => chunks.push((offset, bytes.to_vec())),
            Some(ConsoleItem::Gap {
                offset,
                len,
                reason,
            }) => gaps.push((offset, len, reason)),
            None => panic!("the stream ended at {}", c.offset()),
        }
    }
    (chunks, gaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_is_reported_the_console_flows_from_ram_and_every_dropped_byte_is_counted(
) {
    const TOTAL: u64 = 5 << 20;
    const SEED: u64 = 77;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "2m");
    let d = Ringcastd::start(
        dir.path(),
        &state,
        &["--journal-window", "1M", "--segment-size", "1M"],
    );
    let mut qemu = FakeConsole::new(&d.socket(), "vmf", "serial0", 1, 1 << 16);
    qemu.connect();
    let s = d.session().await;
    let mut live = s
        .attach_console("vmf", "serial0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    let producer = std::thread::spawn(move || {
        for off in (0..TOTAL).step_by(64 << 10) {
            qemu.write_all(&stream(SEED, off, (64 << 10).min(TOTAL - off)));
            std::thread::sleep(Duration::from_millis(30));
        }
        qemu.wait_drained();
        qemu
    });
    let (live_chunks, live_gaps) = collect(&mut live, TOTAL).await;
    let _qemu = producer.join().unwrap();
    // A subscriber that comes late reads the spool, then one gap, then the RAM window.
    let mut late = s
        .attach_console("vmf", "serial0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    let (late_chunks, late_gaps) = collect(&mut late, TOTAL).await;

    let log = d.log();
    assert!(
        log.contains("spool write failed; this device's journal continues in RAM only")
            || log.contains("cannot start a spool segment; keeping bytes in RAM only"),
        "{log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
    let spool_errors: u64 = d.stat("vmf/serial0", "SPOOL-ERR").unwrap().parse().unwrap();
    assert!(spool_errors >= 1);
    let lost: u64 = d
        .stat("vmf/serial0", "LOST:NO-SPOOL")
        .unwrap()
        .parse()
        .unwrap();
    let (spool, holes) = read_spool(&state.join("vmf/serial0"));
    assert!(holes.is_empty());
    let on_disk = spool.len() as u64;
    assert!(
        on_disk > 0 && on_disk < 2 << 20,
        "{on_disk} bytes on the 2 MiB disk"
    );
    assert_eq!(sha(&spool), sha(&stream(SEED, 0, on_disk)));
    // Nothing beyond the RAM window was kept, and exactly that much is reported lost.
    assert!(
        lost > 0 && lost <= TOTAL - on_disk - (1 << 20) + (64 << 10),
        "lost {lost}"
    );
    assert_eq!(
        late_gaps,
        vec![(on_disk, lost, client::GapReason::Retention)]
    );
    for (off, bytes) in late_chunks.iter().chain(live_chunks.iter()) {
        assert_eq!(
            sha(bytes),
            sha(&stream(SEED, *off, bytes.len() as u64)),
            "at {off}"
        );
    }
    // The live follower kept receiving past the disk's end, from RAM.
    let live_end = live_chunks.last().map(|(o, b)| o + b.len() as u64).unwrap();
    assert_eq!(live_end, TOTAL);
    assert!(live_chunks.iter().any(|(o, _)| *o > on_disk));
    let live_lost: u64 = live_gaps.iter().map(|g| g.1).sum();
    let stats = s.stats().await.unwrap();
    let e = stats.iter().find(|e| e.device.vm == "vmf").unwrap();
    assert_eq!(e.subscriber_gap_bytes, lost + live_lost);
    assert_eq!(e.spool_errors, spool_errors);
    // The network client gets the same LOST:NO-SPOOL as `ringcastd stats`.
    assert_eq!(e.dropped_no_spool, lost);
    assert_eq!(e.device.journal_end, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_on_a_full_spool_disk_is_served_from_ram_and_every_dropped_byte_is_counted() {
    const TOTAL: u64 = 3 << 20;
    const SEED: u64 = 79;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = Tmpfs::mount(&state, "1m");
    let d = Ringcastd::start(
        dir.path(),
        &state,
        &["--journal-window", "1M", "--segment-size", "1M"],
    );
    // Fill the disk before the device exists.
    disk.fill("filler");
    let mut qemu = FakeConsole::new(&d.socket(), "vmn", "serial0", 1, 1 << 16);
    qemu.connect(); // registration succeeds: the console is not refused for the disk
    let s = d.session().await;
    let mut live = s
        .attach_console("vmn", "serial0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    let producer = std::thread::spawn(move || {
        for off in (0..TOTAL).step_by(64 << 10) {
            qemu.write_all(&stream(SEED, off, (64 << 10).min(TOTAL - off)));
            std::thread::sleep(Duration::from_millis(30));
        }
        qemu.wait_drained();
        qemu
    });
    let (live_chunks, live_gaps) = collect(&mut live, TOTAL).await;
    let _qemu = producer.join().unwrap();
    let mut late = s
        .attach_console("vmn", "serial0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    let (late_chunks, late_gaps) = collect(&mut late, TOTAL).await;

    let log = d.log();
    assert!(
        log.contains("this device's journal is kept in RAM only")
            || log.contains("spool write failed; this device's journal continues in RAM only")
            || log.contains("cannot start a spool segment; keeping bytes in RAM only"),
        "{log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
    let spool_errors: u64 = d.stat("vmn/serial0", "SPOOL-ERR").unwrap().parse().unwrap();
    assert!(spool_errors >= 1);
    let lost: u64 = d
        .stat("vmn/serial0", "LOST:NO-SPOOL")
        .unwrap()
        .parse()
        .unwrap();
    // Nothing reached the disk; RAM kept the last window; exactly the rest is counted lost.
    let (spool, _) = read_spool(&state.join("vmn/serial0"));
    assert!(spool.is_empty(), "{} bytes on a full disk", spool.len());
    assert!(
        (TOTAL - (1 << 20) - (64 << 10)..=TOTAL - (1 << 20) + (64 << 10)).contains(&lost),
        "lost {lost}"
    );
    assert_eq!(late_gaps, vec![(0, lost, client::GapReason::Retention)]);
    for (off, bytes) in late_chunks.iter().chain(live_chunks.iter()) {
        assert_eq!(
            sha(bytes),
            sha(&stream(SEED, *off, bytes.len() as u64)),
            "at {off}"
        );
    }
    // The live follower got the stream from RAM.
    let live_end = live_chunks.last().map(|(o, b)| o + b.len() as u64).unwrap();
    assert_eq!(live_end, TOTAL);
    let live_lost: u64 = live_gaps.iter().map(|g| g.1).sum();
    let stats = s.stats().await.unwrap();
    let e = stats.iter().find(|e| e.device.vm == "vmn").unwrap();
    assert_eq!(e.subscriber_gap_bytes, lost + live_lost);
    assert_eq!(e.spool_errors, spool_errors);
    // The network client gets the same LOST:NO-SPOOL as `ringcastd stats`.
    assert_eq!(e.dropped_no_spool, lost);
    assert_eq!(e.device.journal_end, TOTAL);
    eprintln!("new device on a full disk: {lost} bytes lost (RAM window 1 MiB of {TOTAL}), live follower gaps {live_lost}, spool errors {spool_errors}");
}

const QEMU_ENV: &str = "RINGCAST_TEST_QEMU";

/// A fake QEMU process: one console, written with backpressure. `seed;total`: writes
/// `total` bytes and exits once they are drained (0: writes until killed).
fn fake_qemu_process(socket: &std::path::Path, spec: &str) -> Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_qemu_killed_mid_stream_keeps_its_journal_shows_gone_and_its_successor_appends_after_a_marker",
            "--nocapture",
        ])
        .env(QEMU_ENV, format!("{};{spec}", socket.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn fake_qemu_main(spec: &str) {
    let p: Vec<&str> = spec.split(';').collect();
    let (seed, total, session): (u64, u64, u64) = (
        p[1].parse().unwrap(),
        p[2].parse().unwrap(),
        p[3].parse().unwrap(),
    );
    let mut c = FakeConsole::new(
        std::path::Path::new(p[0]),
        "vmq",
        "serial0",
        session,
        1 << 16,
    );
    c.connect();
    let mut pos = 0;
    while total == 0 || pos < total {
        let n = (16 << 10).min(if total == 0 { u64::MAX } else { total - pos });
        c.write_all(&stream(seed, pos, n));
        pos += n;
    }
    c.wait_drained();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_killed_mid_stream_keeps_its_journal_shows_gone_and_its_successor_appends_after_a_marker(
) {
    if let Ok(spec) = std::env::var(QEMU_ENV) {
        return fake_qemu_main(&spec);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(
        dir.path(),
        &dir.path().join("state"),
        &["--segment-size", "1M"],
    );
    let dev_dir = dir.path().join("state/vmq/serial0");
    let mut first = fake_qemu_process(&d.socket(), "5;0;1");
    d.wait_until("1 MiB in the spool", WAIT, || {
        dev_dir.exists() && read_spool(&dev_dir).0.len() >= 1 << 20
    });
    first.kill().unwrap(); // SIGKILL mid-stream
    first.wait().unwrap();
    d.wait_until("the device to show as gone", WAIT, || {
        d.stat("vmq/serial0", "STATE").as_deref() == Some("gone")
    });
    let list = d.ringcast().arg("list").output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    let row = text.lines().find(|l| l.starts_with("vmq/serial0")).unwrap();
    assert!(row.split_whitespace().any(|w| w == "gone"), "{text}");
    // The journal keeps every byte that arrived, including what the ring still held.
    let (kept, holes) = read_spool(&dev_dir);
    assert!(holes.is_empty());
    let kept_len = kept.len() as u64;
    assert_eq!(sha(&kept), sha(&stream(5, 0, kept_len)));
    // A new QEMU process for the same VM and device (a new session) appends after a marker.
    const SECOND: u64 = 300_000;
    let mut second = fake_qemu_process(&d.socket(), &format!("6;{SECOND};2"));
    assert!(second.wait().unwrap().success());
    let s = d.session().await;
    let e = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.vm == "vmq")
        .unwrap();
    let marker_len = e.journal_end - kept_len - SECOND;
    let mut c = s
        .attach_console("vmq", "serial0", Mode::Read, StartAt::Offset(kept_len))
        .await
        .unwrap();
    let (chunks, gaps) = collect(&mut c, e.journal_end).await;
    assert!(gaps.is_empty(), "{gaps:?}");
    let after: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
    let marker = String::from_utf8_lossy(&after[..marker_len as usize]).into_owned();
    assert!(
        marker.starts_with("\r\n--- ringcast: vmq/serial0 restarted at ")
            && marker.ends_with(" ---\r\n"),
        "{marker:?}"
    );
    assert_eq!(
        sha(&after[marker_len as usize..]),
        sha(&stream(6, 0, SECOND))
    );
    let (spool, _) = read_spool(&dev_dir);
    assert_eq!(&spool[..kept_len as usize], &kept[..]);
    assert_eq!(spool.len() as u64, e.journal_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_killed_mid_stream_is_cleaned_up_others_carry_on_and_a_resumed_capture_completes_the_file(
) {
    const TOTAL: u64 = 6 << 20;
    const SEED: u64 = 88;
    let dir = tempfile::tempdir().unwrap();
    // A short idle timeout, so the dead client is noticed in seconds instead of 30.
    let d = Ringcastd::start(
        dir.path(),
        &dir.path().join("state"),
        &["--idle-timeout", "3s"],
    );
    let mut qemu = FakeConsole::new(&d.socket(), "vmc", "serial0", 1, 1 << 16);
    qemu.connect();
    let rss_idle = rss_kib(d.pid());
    let producer = std::thread::spawn(move || {
        for off in (0..TOTAL).step_by(64 << 10) {
            qemu.write_all(&stream(SEED, off, (64 << 10).min(TOTAL - off)));
            std::thread::sleep(Duration::from_millis(40));
        }
        qemu.wait_drained();
        qemu
    });
    // The other client follows the whole stream on one connection; `seen` is its progress.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let other = {
        let (t, seen) = (d.target(), seen.clone());
        tokio::spawn(async move {
            let s = t.session().await;
            let mut c = s
                .attach_console("vmc", "serial0", Mode::Read, StartAt::Offset(0))
                .await
                .unwrap();
            let mut got = Vec::new();
            while (got.len() as u64) < TOTAL {
                match tokio::time::timeout(WAIT, c.next()).await.expect("stuck") {
                    Ok(Some(ConsoleItem::Chunk { bytes, .. })) => {
                        got.extend_from_slice(&bytes);
                        seen.store(got.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => panic!("the other client got {other:?}"),
                }
            }
            // Still attached: the subscription count below stays at 1 for it.
            (got, c, s)
        })
    };
    let file = dir.path().join("capture.log");
    let mut cli = d
        .ringcast()
        .args(["capture", "vmc/serial0", "--follow", "-o"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = d.session().await;
    d.wait_until("the capture to be mid-stream", WAIT, || {
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) >= 1 << 20
    });
    assert_eq!(subscribers(&s, "vmc").await, 2);
    cli.kill().unwrap(); // SIGKILL
    cli.wait().unwrap();
    let killed = std::time::Instant::now();
    let seen_at_kill = seen.load(std::sync::atomic::Ordering::Relaxed);
    let mut rss_dead = rss_kib(d.pid());
    // The server notices the dead client by the idle timeout and drops its subscription;
    // meanwhile the other client keeps receiving.
    while subscribers(&s, "vmc").await > 1 {
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "the dead client's subscription outlived a 3 s idle timeout: {}",
            d.log()
        );
        rss_dead = rss_dead.max(rss_kib(d.pid()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let freed_after = killed.elapsed();
    let seen_at_free = seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        seen_at_free > seen_at_kill || seen_at_kill == TOTAL,
        "the other client stalled while the dead one was held ({seen_at_kill} bytes)"
    );
    let _q = producer.join().unwrap();
    let (got, other_stream, other_session) = other.await.unwrap();
    assert_eq!(sha(&got), sha(&stream(SEED, 0, TOTAL)));
    assert_eq!(subscribers(&s, "vmc").await, 1);
    other_stream.detach().await;
    other_session.close().await;
    let rss_after = rss_kib(d.pid());
    eprintln!(
        "killed capture: freed after {freed_after:?}; the other client went {seen_at_kill} -> \
         {seen_at_free} bytes meanwhile; ringcastd RSS idle {rss_idle} KiB, max while the dead \
         client was held {rss_dead} KiB, after {rss_after} KiB"
    );
    let out = d
        .ringcast()
        .args(["capture", "vmc/serial0", "--resume", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha(&std::fs::read(&file).unwrap()),
        sha(&stream(SEED, 0, TOTAL))
    );
    s.close().await;
    let check = d.session().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let n = subscribers(&check, "vmc").await;
        if n == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for vmc's subscriptions to be freed: {n} left \
             (leaked); the end of ringcastd's log:\n{}",
            d.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(d.stat("vmc/serial0", "SUBS").as_deref(), Some("0"));
}

async fn subscribers(s: &client::Session, vm: &str) -> u64 {
    s.list()
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.vm == vm)
        .map_or(0, |e| u64::from(e.subscribers))
}
