//! Fake QEMU producers against an in-process ringcastd, through the real socket.

use std::time::Duration;

use sidecar::{Daemon, DeviceKey, DeviceState, GapReason, Item, StartAt};
use testbed::kit::*;

const WAIT: Duration = Duration::from_secs(30);

/// Reads a subscription until `end`, returning the bytes and the gaps.
fn collect(
    sub: &mut sidecar::ConsoleSubscription,
    end: u64,
) -> (Vec<(u64, Vec<u8>)>, Vec<sidecar::Gap>) {
    let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut gaps = Vec::new();
    let mut expect = sub.position();
    while sub.position() < end {
        let item = sub
            .next_blocking(WAIT)
            .unwrap()
            .expect("the journal stopped growing");
        match &item {
            Item::Chunk(c) => {
                assert_eq!(c.offset, expect);
                match chunks.last_mut() {
                    Some((o, v)) if *o + v.len() as u64 == c.offset => {
                        v.extend_from_slice(&c.bytes)
                    }
                    _ => chunks.push((c.offset, c.bytes.to_vec())),
                }
            }
            Item::Gap(g) => {
                assert_eq!(g.offset, expect);
                gaps.push(*g);
            }
        }
        expect = item.end();
    }
    (chunks, gaps)
}

#[test]
fn several_producers_deliver_exact_bytes_to_subscribers_and_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    const TOTAL: u64 = 3 << 20;
    let names: Vec<String> = (0..4).map(|i| format!("vm{i}")).collect();
    let mut consoles: Vec<FakeConsole> = names
        .iter()
        .map(|vm| {
            let mut c = FakeConsole::new(&cfg.socket, vm, "serial0", 7, 1 << 16);
            c.connect();
            c
        })
        .collect();
    let mut audio = FakeAudio::new(&cfg.socket, "vm0", "sound0");
    let subs: Vec<_> = names
        .iter()
        .map(|vm| {
            h.subscribe(&DeviceKey::new(vm.as_str(), "serial0"), StartAt::Offset(0))
                .unwrap()
        })
        .collect();
    let mut asub = h
        .subscribe_audio(&DeviceKey::new("vm0", "sound0"), 1024)
        .unwrap();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let (chunks, gaps) = collect(&mut s, TOTAL);
                assert!(gaps.is_empty(), "{gaps:?}");
                assert_eq!(chunks.len(), 1);
                sha(&chunks[0].1)
            })
        })
        .collect();
    let writers: Vec<_> = consoles
        .drain(..)
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                let mut pos = 0u64;
                let mut n = 1usize;
                while pos < TOTAL {
                    // Varying write sizes, like a guest's console.
                    n = (n * 7 + 13) % 9000 + 1;
                    let len = (n as u64).min(TOTAL - pos);
                    c.write_all(&stream(i as u64, pos, len));
                    pos += len;
                }
                c.wait_drained();
                c
            })
        })
        .collect();
    // At most 32 periods (about 32 KiB) ahead of what ringcastd took, so the 64 KiB ring
    // never refuses one however slowly the machine runs the ingest thread.
    let taken = |h: &sidecar::Handle| {
        h.stats()
            .iter()
            .find(|s| s.key.device == "sound0")
            .map_or(0, |s| s.periods)
    };
    for seq in 0..300u64 {
        if seq >= 32 {
            wait_until("ringcastd to take the audio periods", WAIT, || {
                taken(&h) >= seq - 32
            });
        }
        assert!(audio.push(seq, 240), "the ring refused period {seq}");
    }
    for seq in 0..300u64 {
        let p = asub.next_blocking(WAIT).unwrap().expect("audio period");
        assert_eq!(p.seq, seq);
        assert_eq!(p.frames, 240);
        assert_eq!(p.skipped_before, 0);
        assert_eq!(p.pcm, stream(seq, 0, 960));
    }
    let _consoles: Vec<FakeConsole> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for (i, r) in readers.into_iter().enumerate() {
        let expected = sha(&stream(i as u64, 0, TOTAL));
        assert_eq!(r.join().unwrap(), expected, "subscriber of vm{i}");
        let (spool, holes) = read_spool(&cfg.state_dir.join(format!("vm{i}")).join("serial0"));
        assert!(holes.is_empty());
        assert_eq!(sha(&spool), expected, "spool of vm{i}");
    }
    let stats = h.stats();
    for s in &stats {
        assert_eq!(s.state, DeviceState::Attached);
        assert_eq!(s.poisoned, None);
        if s.key.device == "serial0" {
            assert_eq!(s.bytes, TOTAL);
            assert_eq!(s.journal_end, TOTAL);
            assert_eq!(s.dropped_flight_recorder, 0);
        } else {
            assert_eq!(s.periods, 300);
            assert_eq!(s.dropped_audio_overflow, 0);
        }
    }
    // More segments than one: rotation by size happened and current.log follows it.
    let dev_dir = cfg.state_dir.join("vm0").join("serial0");
    let link = std::fs::read_link(dev_dir.join("current.log")).unwrap();
    let mut segments: Vec<String> = std::fs::read_dir(&dev_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.ends_with(".log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    assert_eq!(link.to_str().unwrap(), segments.last().unwrap());
    daemon.shutdown();
}

#[test]
fn a_long_absence_is_counted_exactly_as_flight_recorder_drops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    const CAP: u64 = 1 << 16;
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 42, CAP);
    c.connect();
    let (x, y, z) = (100_000u64, 5 * CAP + 1234, 50_000u64);
    c.write_all(&stream(1, 0, x));
    c.wait_drained();
    daemon.shutdown();
    wait_until("the producer to see the daemon go", WAIT, || !c.attached());
    // No daemon: the backend's flight recorder keeps the newest bytes.
    let mut pos = x;
    while pos < x + y {
        let n = 3000.min(x + y - pos);
        c.write_overwriting(&stream(1, pos, n));
        pos += n;
    }
    assert!(c.dropped > 0);
    let daemon = Daemon::start(cfg.clone()).unwrap();
    c.connect();
    c.write_all(&stream(1, x + y, z));
    c.wait_drained();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS0");
    let mut sub = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    let (chunks, gaps) = collect(&mut sub, x + y + z);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].offset, x);
    assert_eq!(gaps[0].len, c.dropped);
    assert_eq!(gaps[0].reason, GapReason::Lost);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0], (0, stream(1, 0, x)));
    let resume = x + c.dropped;
    assert_eq!(chunks[1], (resume, stream(1, resume, x + y + z - resume)));
    let s = h.device_stats(&key).unwrap();
    assert_eq!(s.dropped_flight_recorder, c.dropped);
    assert_eq!(s.journal_end, x + y + z);
    daemon.shutdown();
}

#[test]
fn a_hostile_ring_is_poisoned_while_other_devices_keep_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let mut good: Vec<FakeConsole> = (0..2)
        .map(|i| {
            let mut c = FakeConsole::new(&cfg.socket, &format!("good{i}"), "con", 1, 1 << 14);
            c.connect();
            c
        })
        .collect();
    let mut bad = FakeConsole::new(&cfg.socket, "bad", "con", 1, 1 << 14);
    bad.connect();
    bad.write_all(b"fine so far\n");
    bad.wait_drained();
    // Scribble the write position (header offset 64) far past the capacity.
    rustix::io::pwrite(bad.out_mem.fd(), &(1u64 << 40).to_le_bytes(), 64).unwrap();
    bad.out_data.ring();
    let bad_key = DeviceKey::new("bad", "con");
    wait_until("the hostile ring to be poisoned", WAIT, || {
        h.device_stats(&bad_key).unwrap().poisoned.is_some()
    });
    let s = h.device_stats(&bad_key).unwrap();
    assert_eq!(s.state, DeviceState::Poisoned);
    assert_eq!(s.journal_end, 12, "the journal keeps what came before");
    const N: u64 = 1 << 20;
    for (i, c) in good.iter_mut().enumerate() {
        c.write_all(&stream(10 + i as u64, 0, N));
    }
    for (i, c) in good.iter_mut().enumerate() {
        c.wait_drained();
        let key = DeviceKey::new(format!("good{i}"), "con");
        let mut sub = h.subscribe(&key, StartAt::Offset(0)).unwrap();
        let (chunks, gaps) = collect(&mut sub, N);
        assert!(gaps.is_empty());
        assert_eq!(sha(&chunks[0].1), sha(&stream(10 + i as u64, 0, N)));
        assert_eq!(h.device_stats(&key).unwrap().state, DeviceState::Attached);
    }
    let mut sub = h.subscribe(&bad_key, StartAt::Offset(0)).unwrap();
    match sub.next_blocking(WAIT).unwrap() {
        Some(Item::Chunk(c)) => assert_eq!(&c.bytes[..], b"fine so far\n"),
        other => panic!("unexpected {other:?}"),
    }
    daemon.shutdown();
}

#[test]
fn a_stalled_subscriber_changes_nothing_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.journal.window = 64 << 10;
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "hvc0");
    let mut c = FakeConsole::new(&cfg.socket, "vm", "hvc0", 3, 1 << 16);
    c.connect();
    let mut stalled = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    let mut live = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    const N: u64 = 4 << 20;
    let reader = std::thread::spawn(move || {
        let (chunks, gaps) = collect(&mut live, N);
        assert!(gaps.is_empty());
        sha(&chunks[0].1)
    });
    let mut audio = FakeAudio::new(&cfg.socket, "vm", "snd");
    let akey = DeviceKey::new("vm", "snd");
    let _stalled_audio = h.subscribe_audio(&akey, 4).unwrap();
    let mut live_audio = h.subscribe_audio(&akey, 1000).unwrap();
    // The producer is never held back: it finishes while one subscriber reads nothing.
    c.write_all(&stream(5, 0, N));
    c.wait_drained();
    for seq in 0..100 {
        assert!(audio.push(seq, 120));
    }
    assert_eq!(reader.join().unwrap(), sha(&stream(5, 0, N)));
    for seq in 0..100 {
        let p = live_audio.next_blocking(WAIT).unwrap().unwrap();
        assert_eq!((p.seq, p.skipped_before), (seq, 0));
    }
    let s = h.device_stats(&akey).unwrap();
    assert_eq!(s.subscriber_dropped_periods, 96);
    assert_eq!(s.subscribers, 2);
    // The stalled reader still gets every byte, now from the spool.
    assert_eq!(stalled.position(), 0);
    let (chunks, gaps) = collect(&mut stalled, N);
    assert!(gaps.is_empty());
    assert_eq!(sha(&chunks[0].1), sha(&stream(5, 0, N)));
    assert_eq!(h.device_stats(&key).unwrap().subscriber_gap_bytes, 0);
    daemon.shutdown();
}

#[test]
fn a_subscriber_behind_the_retention_gets_a_retention_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.journal.window = 64 << 10;
    cfg.journal.segment_size = 256 << 10;
    cfg.journal.retention = 512 << 10;
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS1");
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS1", 3, 1 << 16);
    c.connect();
    let mut slow = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    const N: u64 = 4 << 20;
    c.write_all(&stream(6, 0, N));
    c.wait_drained();
    let first = slow.next_blocking(WAIT).unwrap().unwrap();
    let Item::Gap(g) = first else {
        panic!("expected a gap, got {first:?}")
    };
    assert_eq!((g.offset, g.reason), (0, GapReason::Retention));
    assert!(g.len > 0 && g.len < N);
    let (chunks, gaps) = collect(&mut slow, N);
    assert!(gaps.is_empty());
    assert_eq!(chunks[0].1, stream(6, g.len, N - g.len));
    assert_eq!(h.device_stats(&key).unwrap().subscriber_gap_bytes, g.len);
    // Tail and now start where they say.
    let mut tail = h.subscribe(&key, StartAt::TailBytes(10)).unwrap();
    assert_eq!(tail.position(), N - 10);
    let (chunks, _) = collect(&mut tail, N);
    assert_eq!(chunks[0].1, stream(6, N - 10, 10));
    let now = h.subscribe(&key, StartAt::Now).unwrap();
    assert_eq!(now.position(), N);
    daemon.shutdown();
}

#[test]
fn a_restarted_vm_appends_after_a_marker_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS0");
    let mut first = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 1, 1 << 14);
    first.connect();
    first.write_all(b"first boot\n");
    first.wait_drained();
    drop(first);
    wait_until("the device to be gone", WAIT, || {
        h.device_stats(&key).unwrap().state == DeviceState::Gone
    });
    let mut second = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 2, 1 << 14);
    second.connect();
    second.write_all(b"second boot\n");
    second.wait_drained();
    let mut sub = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    let end = h.device_stats(&key).unwrap().journal_end;
    let (chunks, gaps) = collect(&mut sub, end);
    assert!(gaps.is_empty());
    let text = String::from_utf8(chunks[0].1.clone()).unwrap();
    assert!(
        text.starts_with("first boot\n\r\n--- ringcast: vm/ttyS0 restarted at "),
        "{text:?}"
    );
    assert!(text.ends_with(" ---\r\nsecond boot\n"), "{text:?}");
    let (spool, _) = read_spool(&cfg.state_dir.join("vm").join("ttyS0"));
    assert_eq!(spool, chunks[0].1);
    daemon.shutdown();
}

#[test]
fn console_input_reaches_the_input_ring_with_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS0");
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 1, 1 << 14);
    c.connect();
    const N: u64 = 100_000; // far more than the 4 KiB input ring
    let input = stream(9, 0, N);
    // The fake QEMU reads input slowly, releasing space and ringing the space doorbell.
    let qemu = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 700];
        while (got.len() as u64) < N {
            let r = c.rx.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..r.bytes]);
            if r.wake_producer {
                c.in_space.ring();
            }
            if r.bytes == 0 && c.rx.prepare_sleep().unwrap() {
                c.in_data.wait(100);
                c.in_data.drain();
            }
        }
        got
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut short_writes = 0;
    rt.block_on(async {
        let mut off = 0;
        while off < input.len() {
            let n = h.write_input(&key, &input[off..]).unwrap();
            if n < input.len() - off {
                short_writes += 1;
            }
            off += n;
            if off < input.len() {
                tokio::time::timeout(WAIT, h.input_ready(&key))
                    .await
                    .expect("input space never came")
                    .unwrap();
            }
        }
    });
    assert!(short_writes > 0, "the ring never filled");
    assert_eq!(qemu.join().unwrap(), input);
    assert_eq!(h.device_stats(&key).unwrap().input_bytes, N);
    daemon.shutdown();
}

/// A waker that counts its wakes, for polling a future by hand.
#[derive(Default)]
struct CountingWaker {
    wakes: std::sync::Mutex<u32>,
    woken: std::sync::Condvar,
}

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        *self.wakes.lock().unwrap() += 1;
        self.woken.notify_all();
    }
}

impl CountingWaker {
    fn wakes(&self) -> u32 {
        *self.wakes.lock().unwrap()
    }

    /// Waits until the count exceeds `seen` or `timeout` passes; returns the count.
    fn wait_past(&self, seen: u32, timeout: Duration) -> u32 {
        let (n, _) = self
            .woken
            .wait_timeout_while(self.wakes.lock().unwrap(), timeout, |n| *n <= seen)
            .unwrap();
        *n
    }
}

/// An async subscriber waiting for bytes is woken when they arrive. The future is polled
/// by hand, only after its waker was called: nothing else polls it (no runtime, no timer
/// that would poll it again and find the bytes anyway), so a missing wake fails the test.
#[test]
fn async_subscribers_wake_on_new_bytes() {
    use std::future::Future;
    use std::task::{Context, Poll};
    /// How long the wake may take after the bytes are in the ring.
    const WAKE_WITHIN: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS0");
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 1, 1 << 14);
    c.connect();
    let mut sub = h.subscribe(&key, StartAt::Now).unwrap();
    let waker = std::sync::Arc::new(CountingWaker::default());
    let task_waker = std::task::Waker::from(waker.clone());
    let mut cx = Context::from_waker(&task_waker);
    let mut next = std::pin::pin!(sub.next());
    // Nothing written yet: the subscriber waits, with its waker registered.
    assert!(next.as_mut().poll(&mut cx).is_pending());
    let mut seen = waker.wakes();
    c.write_all(b"late hello");
    let written = std::time::Instant::now();
    // Polled again only when woken; a wake that finds nothing new (a registration's
    // notification) is followed by another wait. `seen` is read before each poll, so a
    // wake during the poll is not missed.
    let item = loop {
        let left = WAKE_WITHIN.saturating_sub(written.elapsed());
        let now = waker.wait_past(seen, left);
        assert!(
            now > seen,
            "the subscriber was not woken within {WAKE_WITHIN:?} of the bytes being written \
             ({seen} wakes before); the ring holds {} unread bytes",
            (1 << 14) - c.free()
        );
        seen = now;
        if let Poll::Ready(item) = next.as_mut().poll(&mut cx) {
            break item;
        }
    };
    eprintln!(
        "woken {} times, {:?} after the write",
        waker.wakes(),
        written.elapsed()
    );
    match item.unwrap() {
        Item::Chunk(ch) => {
            assert_eq!(ch.offset, 0);
            assert_eq!(&ch.bytes[..], b"late hello");
        }
        other => panic!("unexpected {other:?}"),
    }
    daemon.shutdown();
}

#[test]
fn bytes_already_spooled_but_not_released_are_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 5, 1 << 16);
    c.connect();
    let (x, y) = (30_000u64, 20_000u64);
    c.write_all(&stream(4, 0, x));
    c.wait_drained();
    daemon.shutdown();
    wait_until("the producer to see the daemon go", WAIT, || !c.attached());
    c.write_overwriting(&stream(4, x, y));
    assert_eq!(c.dropped, 0);
    // What a daemon killed between its spool write and the ring release leaves behind:
    // the first 7000 bytes of the ring's unread data are already in the segment.
    let dev_dir = cfg.state_dir.join("vm").join("ttyS0");
    let current = dev_dir.join(std::fs::read_link(dev_dir.join("current.log")).unwrap());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(current)
        .unwrap();
    std::io::Write::write_all(&mut f, &stream(4, x, 7000)).unwrap();
    drop(f);
    let daemon = Daemon::start(cfg.clone()).unwrap();
    c.connect();
    c.wait_drained();
    let (spool, holes) = read_spool(&dev_dir);
    assert!(holes.is_empty());
    assert_eq!(spool.len() as u64, x + y);
    assert_eq!(sha(&spool), sha(&stream(4, 0, x + y)));
    let key = DeviceKey::new("vm", "ttyS0");
    assert_eq!(
        daemon.handle().device_stats(&key).unwrap().journal_end,
        x + y
    );
    daemon.shutdown();
}

/// Runs `next_blocking` on another thread so that a subscription stuck inside `try_next`
/// fails the test instead of hanging it.
fn next_or_stuck(
    mut sub: sidecar::ConsoleSubscription,
) -> (
    sidecar::ConsoleSubscription,
    Result<Option<Item>, sidecar::Error>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = sub.next_blocking(WAIT);
        let _ = tx.send((sub, r));
    });
    rx.recv_timeout(WAIT + WAIT)
        .expect("the subscription is stuck reading the journal")
}

#[test]
fn a_segment_deleted_behind_ringcastds_back_ends_the_subscription_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.journal.window = 64 << 10;
    cfg.journal.segment_size = 256 << 10;
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS0");
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 3, 1 << 16);
    c.connect();
    const N: u64 = 1 << 20;
    c.write_all(&stream(8, 0, N));
    c.wait_drained();
    let first = cfg
        .state_dir
        .join("vm")
        .join("ttyS0")
        .join(format!("{:020}.log", 0));
    std::fs::remove_file(&first).unwrap();
    let sub = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    let (_sub, r) = next_or_stuck(sub);
    let e = r.expect_err("a deleted segment must end the subscription");
    assert!(
        matches!(&e, sidecar::Error::JournalUnreadable { offset: 0, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("deleted or truncated outside ringcastd"),
        "{msg}"
    );
    assert!(msg.contains(&first.display().to_string()), "{msg}");
    assert_eq!(h.device_stats(&key).unwrap().journal_read_errors, 1);
    // Bytes still in RAM are served as before.
    let mut tail = h.subscribe(&key, StartAt::TailBytes(10)).unwrap();
    let (chunks, gaps) = collect(&mut tail, N);
    assert!(gaps.is_empty());
    assert_eq!(chunks[0].1, stream(8, N - 10, 10));
    daemon.shutdown();
}

#[test]
fn a_segment_truncated_behind_ringcastds_back_ends_the_subscription_at_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.journal.window = 64 << 10;
    cfg.journal.segment_size = 256 << 10;
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let key = DeviceKey::new("vm", "ttyS0");
    let mut c = FakeConsole::new(&cfg.socket, "vm", "ttyS0", 3, 1 << 16);
    c.connect();
    const N: u64 = 1 << 20;
    c.write_all(&stream(9, 0, N));
    c.wait_drained();
    let first = cfg
        .state_dir
        .join("vm")
        .join("ttyS0")
        .join(format!("{:020}.log", 0));
    const CUT: u64 = 1000;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(CUT)
        .unwrap();
    let sub = h.subscribe(&key, StartAt::Offset(0)).unwrap();
    let (sub, r) = next_or_stuck(sub);
    match r {
        Ok(Some(Item::Chunk(ch))) => assert_eq!(ch.bytes, stream(9, 0, CUT)),
        other => panic!("expected the bytes before the cut, got {other:?}"),
    }
    let (_sub, r) = next_or_stuck(sub);
    let e = r.expect_err("a truncated segment must end the subscription");
    assert!(
        matches!(&e, sidecar::Error::JournalUnreadable { offset: CUT, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_eq!(h.device_stats(&key).unwrap().journal_read_errors, 1);
    daemon.shutdown();
}
