//! The backend plugin driven through its C ABI by the fake-QEMU harness, against the test
//! consumer: the loss policy of docs/loss-policy.md, case by case.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

use ringcast_backend::abi::{QbpAudioFormat, QBP_FMT_F32, QBP_FMT_U16, QBP_FMT_U8};
use testbed::consumer::TestConsumer;
use testbed::harness::{MainLoop, Plugin, S16_STEREO_44100};
use testbed::kit::bins;
use testbed::stream::GuestStream;

const T: Duration = Duration::from_secs(30);

fn plugin() -> Plugin {
    Plugin::load(&bins::plugin()).expect("load libringcast_backend.so")
}

fn sock_opts(path: &Path, extra: &str) -> String {
    format!("socket={}{extra}", path.display())
}

fn wait_attached(lp: &MainLoop) {
    assert!(
        lp.run_until(T, || lp.logged("streaming to the daemon")),
        "the plugin never attached; logs: {:?}",
        lp.logs()
    );
}

/// Writes into the ring memory of a consumer-side handle as a hostile peer would.
fn scribble(fd: OwnedFd, offset: usize, value: u64) {
    let file = std::fs::File::from(fd);
    let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
    // SAFETY: offset + 8 lies in the ring header of a live mapping; hostile writes are the
    // point of the test.
    unsafe {
        map.as_mut_ptr()
            .add(offset)
            .cast::<u64>()
            .write_volatile(value)
    };
}

#[test]
fn console_bytes_in_equal_bytes_out() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), ":ring=64K");
    let total = 4 << 20;
    let reader = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        assert_eq!(c.desc.device_id, "serial0");
        assert_eq!(c.desc.vm_name, "vm1");
        let mut got = Vec::new();
        c.read_until(&mut got, total, Duration::ZERO, T).unwrap();
        (got, c.lost)
    });
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm1", "serial0", &opts).unwrap();
    wait_attached(&lp);
    let data = GuestStream::bytes(7, total);
    // Byte-at-a-time like the 16550 for a while, then larger writes like virtio.
    let (serial_like, bulk) = data.split_at(10_000);
    for b in serial_like.chunks(1) {
        chr.write_all(&lp, b, T).unwrap();
    }
    let mut stats = Vec::new();
    for c in bulk.chunks(3000) {
        stats.push(chr.write_all(&lp, c, T).unwrap());
    }
    let (got, lost) = reader.join().unwrap();
    assert_eq!(lost, 0);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "console bytes differ");
    assert!(stats.iter().all(|s| s.spurious_ready == 0));
}

#[test]
fn full_ring_gives_backpressure_then_resumes_with_nothing_lost() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), ":ring=4K");
    let total = 256 << 10;
    let reader = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        // A deliberately slow consumer: pause after every read.
        c.read_until(&mut got, total, Duration::from_millis(1), T)
            .unwrap();
        (got, c.lost)
    });
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "hvc0", &opts).unwrap();
    wait_attached(&lp);
    let data = GuestStream::bytes(3, total);
    let mut waits = 0;
    for c in data.chunks(1000) {
        let s = chr.write_all(&lp, c, T).unwrap();
        assert_eq!(s.spurious_ready, 0, "the watch fired without space");
        waits += s.waits;
    }
    let (got, lost) = reader.join().unwrap();
    assert!(waits > 0, "a 4 KiB ring and a slow reader must push back");
    assert_eq!(lost, 0);
    assert!(got == data, "bytes differ after backpressure");
}

#[test]
fn flight_recorder_drops_the_oldest_bytes_and_counts_them_exactly() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let lp = MainLoop::new();
    // No daemon yet: the guest must never wait.
    let chr = p
        .open_chardev("vm", "serial0", &sock_opts(&path, ":ring=16K"))
        .unwrap();
    assert!(lp.logged("flight recorder"), "logs: {:?}", lp.logs());
    let before = GuestStream::bytes(11, 100_000);
    for c in before.chunks(777) {
        assert_eq!(
            chr.write(c),
            c.len() as i32,
            "flight recorder accepts everything"
        );
        assert!(chr.write_ready());
    }
    let consumer = TestConsumer::bind(&path).unwrap();
    let after = GuestStream::bytes(12, 50_000);
    let reader = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, 16 * 1024 + 50_000, Duration::ZERO, T)
            .unwrap();
        (got, c.lost + c.start_position)
    });
    wait_attached(&lp);
    assert!(
        lp.logged("83616 older console bytes were dropped"),
        "{:?}",
        lp.logs()
    );
    for c in after.chunks(1000) {
        chr.write_all(&lp, c, T).unwrap();
    }
    let (got, lost) = reader.join().unwrap();
    assert_eq!(lost, 100_000 - 16 * 1024, "every dropped byte is counted");
    assert_eq!(&got[..16 * 1024], &before[100_000 - 16 * 1024..]);
    assert_eq!(&got[16 * 1024..], &after[..]);
}

#[test]
fn daemon_restart_delivers_what_the_ring_held_and_continues() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let lp = MainLoop::new();
    let consumer = TestConsumer::bind(&path).unwrap();
    let first = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, 1000, Duration::ZERO, T).unwrap();
        (got, c.desc.session, consumer)
        // `c` drops here: the connection closes, as when the daemon dies.
    });
    let chr = p
        .open_chardev("vm", "con", &sock_opts(&path, ":ring=64K"))
        .unwrap();
    wait_attached(&lp);
    let data = GuestStream::bytes(5, 31_000);
    chr.write_all(&lp, &data[..1000], T).unwrap();
    let (got1, session1, consumer) = first.join().unwrap();
    assert!(
        lp.run_until(T, || lp.logged("lost the daemon")),
        "{:?}",
        lp.logs()
    );
    // While it is away: within the ring's room, nothing may be lost.
    chr.write_all(&lp, &data[1000..21_000], T).unwrap();
    let second = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, 30_000, Duration::ZERO, T).unwrap();
        (got, c.desc.session, c.lost)
    });
    lp.clear_logs();
    wait_attached(&lp);
    chr.write_all(&lp, &data[21_000..], T).unwrap();
    let (got2, session2, lost) = second.join().unwrap();
    assert_eq!(session1, session2, "same rings, same session");
    assert_eq!(lost, 0);
    assert_eq!(got1, &data[..1000]);
    assert_eq!(got2, &data[1000..]);
}

#[test]
fn input_reaches_the_guest_never_beyond_can_write() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), ":input-ring=4K");
    let input = GuestStream::bytes(9, 20_000);
    let to_send = input.clone();
    let writer = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut off = 0;
        let mut waited = 0;
        while off < to_send.len() {
            let n = c.send_input(&to_send[off..]).unwrap();
            off += n;
            if n == 0 {
                // The ring is full: wait for the plugin to make room.
                waited += 1;
                c.input_space_doorbell().wait(1000);
                c.input_space_doorbell().drain();
            }
        }
        (waited, c)
    });
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "serial0", &opts).unwrap();
    wait_attached(&lp);
    // The guest takes nothing yet: nothing may be delivered.
    lp.run_until(Duration::from_millis(200), || false);
    assert!(chr.frontend.received.borrow().is_empty());
    // Now it reads like a 16550 with a FIFO: up to 14 bytes at a time.
    let deadline = std::time::Instant::now() + T;
    while chr.frontend.received.borrow().len() < input.len() && std::time::Instant::now() < deadline
    {
        if chr.frontend.room.get() == 0 {
            chr.frontend.room.set(14);
            chr.accept_input();
        }
        lp.run_once(Duration::from_millis(1), &[]);
    }
    let done = chr.frontend.received.borrow().len() == input.len();
    assert!(
        done,
        "only {} bytes arrived",
        chr.frontend.received.borrow().len()
    );
    let (waited, _c) = writer.join().unwrap();
    assert!(!chr.frontend.overflowed.get(), "input exceeded can_write");
    assert!(*chr.frontend.received.borrow() == input);
    assert!(
        waited > 0,
        "a 4 KiB input ring must have made the sender wait"
    );
}

#[test]
fn audio_periods_arrive_stamped_and_in_order() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let periods = 60;
    let period_bytes = 441 * 4; // 10 ms of 44.1 kHz stereo s16
    let reader = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().audio();
        let f = a.desc.audio.unwrap();
        assert_eq!((f.frequency, f.channels, f.sample_format), (44100, 2, 3));
        let mut got = Vec::new();
        while got.len() < periods {
            got.extend(a.pop_all().unwrap());
            a.wait(Duration::from_millis(200)).unwrap();
        }
        got
    });
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    audio.out_enable(true);
    wait_attached(&lp);
    let period = |i: usize| GuestStream::bytes(i as u64 + 1, period_bytes);
    audio.play_paced(&lp, periods, Duration::from_millis(10), period);
    let got = reader.join().unwrap();
    for (i, (meta, pcm)) in got.iter().enumerate() {
        assert_eq!(meta.seq, i as u64, "periods in order, none missing");
        assert_eq!(meta.frames, 441);
        assert_eq!(pcm, &period(i));
        if i > 0 {
            let gap = meta.timestamp_ns - got[i - 1].0.timestamp_ns;
            assert!(gap > 0, "timestamps increase");
        }
    }
    let span = got[periods - 1].0.timestamp_ns - got[0].0.timestamp_ns;
    // Stamped when handed over: 59 periods of 10 ms apart (never earlier than that).
    assert!(span >= 590_000_000 - 1_000_000, "span {span} ns");
}

#[test]
fn audio_overflow_drops_the_newest_periods_and_counts_them() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().audio();
        // Stall until the producer has overrun the ring, then take what is there.
        rx.recv().unwrap();
        (a.pop_all().unwrap(), a.rx.producer_dropped())
    });
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    wait_attached(&lp);
    // 10 s of audio at once into a ring of about 2 s: QEMU must never be pushed back.
    let total = 1000;
    for i in 0..total {
        assert_eq!(audio.out_write(&[i as u8; 1764]), 1764);
    }
    tx.send(()).unwrap();
    let (got, dropped) = reader.join().unwrap();
    assert!(dropped > 0);
    assert_eq!(
        got.len() as u64 + dropped,
        total as u64,
        "stored + dropped = handed over"
    );
    // Drop-newest: what is kept is the oldest, in order, without holes.
    for (i, (meta, pcm)) in got.iter().enumerate() {
        assert_eq!(meta.seq, i as u64);
        assert_eq!(pcm[0], i as u8);
    }
}

#[test]
fn audio_records_lost_with_a_ring_the_daemon_broke_are_counted() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    let mut a = consumer.accept(T).unwrap().audio();
    wait_attached(&lp);
    // 44.1 kHz stereo s16 gets a 512 KiB ring; a 1764-byte period is a 1800-byte record,
    // so 291 fit.
    let period = [5u8; 1764];
    for _ in 0..291 {
        audio.out_write(&period);
    }
    let mut payload = Vec::new();
    for seq in 0..3 {
        assert_eq!(a.rx.pop(&mut payload).unwrap().unwrap().meta.seq, seq);
    }
    // The next record does not fit the plugin's last look: it sees the 3 taken records.
    audio.out_write(&period);
    // The "daemon" moves the read position far past the write position.
    scribble(
        a.rx.memory().fd().try_clone_to_owned().unwrap(),
        128,
        1 << 40,
    );
    // Two more fit the space it knows of; the third makes it look, and find the ring broken.
    for _ in 0..3 {
        assert_eq!(
            audio.out_write(&period),
            period.len(),
            "QEMU is never pushed back"
        );
    }
    assert!(lp.logged("corrupted the shared ring"), "{:?}", lp.logs());
    // 294 stored, 3 taken: 291 lost in the ring, and the period that found it broken.
    let want = "291 audio records it had not taken are lost";
    assert!(lp.logged(want), "expected {want:?} in {:?}", lp.logs());
    drop(audio);
    let want = "292 lost with rings the daemon broke";
    assert!(lp.logged(want), "expected {want:?} in {:?}", lp.logs());
}

/// What QEMU does for a sound card with capture voices (AC97 opens its line-in before its
/// output): it opens an input voice beside the output and reads a period of it on every
/// audio tick. The plugin must offer the voice (else QEMU logs "Could not create a backend
/// for voice"), hand the daemon its input ring with the registration, give the guest the
/// whole frames the daemon wrote into it (what `ringcast mic` sends), count the ticks it
/// had nothing for as silence (QEMU pads them), and leave the output alone.
#[test]
fn input_voices_deliver_what_the_daemon_writes_and_count_silence_while_the_output_streams() {
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let periods = 20;
    // The consumer writes ticks 5..15 of the capture side, 441 frames each, as the daemon
    // does for a client, and collects the output's periods.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().audio();
        let f = a.desc.audio_in.expect("no input voice in the registration");
        assert_eq!((f.frequency, f.channels, f.sample_format), (44_100, 2, 3));
        let mut input = a.input.take().unwrap();
        ready_tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut written = 0;
        while got.len() < periods {
            got.extend(a.pop_all().unwrap());
            while written < 10 && got.len() >= 5 + written {
                let pcm = GuestStream::bytes(100 + written as u64, 441 * 4);
                assert_eq!(input.write(&pcm).unwrap().bytes, pcm.len());
                written += 1;
            }
            a.wait(Duration::from_millis(200)).unwrap();
        }
        got
    });
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert!(audio.has_input(), "the plugin offers no input voice");
    // Before any input voice is open there is nothing to deliver.
    assert_eq!(audio.in_read(&mut [0u8; 16]), 0);
    assert_eq!(audio.in_open(&S16_STEREO_44100), 0);
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    audio.out_enable(true);
    audio.in_enable(true);
    wait_attached(&lp);
    ready_rx.recv_timeout(T).unwrap();
    // 441 frames of 4 bytes per 10 ms tick, plus a partial frame QEMU must not get.
    let mut recorded = Vec::new();
    let mut silent_frames = 0;
    audio.play_paced(&lp, periods, Duration::from_millis(10), |i| {
        let mut buf = vec![0x55u8; 441 * 4 + 3];
        let n = audio.in_read(&mut buf);
        assert_eq!(n % 4, 0, "whole frames");
        assert!(
            buf[n..].iter().all(|&b| b == 0x55),
            "nothing beyond what came"
        );
        recorded.extend_from_slice(&buf[..n]);
        silent_frames += 441 - n / 4;
        GuestStream::bytes(i as u64 + 1, 441 * 4)
    });
    // Whatever the consumer wrote before the last tick, in order, and nothing else.
    let mut buf = vec![0u8; 441 * 4 * 20];
    for _ in 0..50 {
        let n = audio.in_read(&mut buf);
        recorded.extend_from_slice(&buf[..n]);
        silent_frames += 441 * 20 - n / 4;
        if recorded.len() == 10 * 441 * 4 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let got = reader.join().unwrap();
    let sent: Vec<u8> = (0..10)
        .flat_map(|w| GuestStream::bytes(100 + w, 441 * 4))
        .collect();
    assert!(
        recorded == sent,
        "the guest recorded other bytes than were written"
    );
    for (i, (meta, pcm)) in got.iter().enumerate() {
        assert_eq!(meta.seq, i as u64);
        assert_eq!(pcm, &GuestStream::bytes(i as u64 + 1, 441 * 4));
    }
    assert_eq!(
        lp.logs()
            .iter()
            .filter(|l| l.contains("opened audio input") && l.contains("ringcast mic"))
            .count(),
        1,
        "{:?}",
        lp.logs()
    );
    // Other formats open (QEMU pads them with its own silence); one nobody can record is
    // refused, as QEMU expects: with an error, not a crash.
    audio.in_close();
    let format = |sample_format, big_endian| QbpAudioFormat {
        frequency: 48_000,
        channels: 2,
        sample_format,
        big_endian,
        reserved: [0; 7],
    };
    for f in [
        format(QBP_FMT_U8, 0),
        format(QBP_FMT_U16, 1),
        format(QBP_FMT_F32, 0),
    ] {
        assert_eq!(audio.in_open(&f), 0);
        audio.in_close();
    }
    assert!(audio.in_open(&format(9, 0)) < 0);
    drop(audio);
    let want = format!(
        "vm/snd0: 4410 frames of client audio and {silent_frames} frames of silence delivered \
         to the guest's audio input"
    );
    assert!(lp.logged(&want), "expected {want:?} in {:?}", lp.logs());
}

#[test]
fn corrupted_ring_from_the_consumer_side_is_survived_and_replaced() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), ":ring=4K");
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "serial0", &opts).unwrap();
    let c = consumer.accept(T).unwrap().console();
    wait_attached(&lp);
    chr.write_all(&lp, b"hello", T).unwrap();
    // The "daemon" moves the output ring's read position far past the write position.
    scribble(
        c.out.memory().fd().try_clone_to_owned().unwrap(),
        128,
        1 << 40,
    );
    // The plugin looks at the read position again when its cached copy says the 4 KiB ring
    // is full: write more than that.
    for _ in 0..500 {
        assert!(chr.write(b"more output") >= 0, "writes never fail hard");
        chr.write_ready();
    }
    assert!(lp.logged("corrupted the shared ring"), "{:?}", lp.logs());
    // The plugin starts over with fresh rings and registers them again.
    let old_session = c.desc.session;
    drop(c);
    let again = thread::spawn(move || consumer.accept(T).map(|r| r.console().desc.session));
    lp.clear_logs();
    wait_attached(&lp);
    let new_session = again.join().unwrap().unwrap();
    assert_ne!(new_session, old_session);
}

#[test]
fn bad_options_are_refused_with_a_message_that_says_what_is_accepted() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let e = p.open_chardev("vm", "c", "ring=1000").unwrap_err();
    assert!(e.contains("power of two"), "{e}");
    let e = p.open_chardev("vm", "c", "colour=blue").unwrap_err();
    assert!(e.contains("unknown") && e.contains("socket=PATH"), "{e}");
    let e = p.open_audio("vm", "a", "ring=banana").unwrap_err();
    assert!(e.contains("power of two"), "{e}");
}

#[test]
fn refused_device_is_offered_again_later() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let daemon = thread::spawn(move || {
        consumer.refuse(T, "not today").unwrap();
        consumer.accept(T).map(|r| r.console().desc.device_id)
    });
    let lp = MainLoop::new();
    let _chr = p.open_chardev("vm", "serial9", &opts).unwrap();
    assert!(lp.run_until(T, || lp.logged("refused the device: not today")));
    wait_attached(&lp);
    assert_eq!(daemon.join().unwrap().unwrap(), "serial9");
}

#[test]
fn two_devices_of_one_process_stream_independently() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), ":ring=4K");
    let reader = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().console();
        let mut b = consumer.accept(T).unwrap().console();
        let (mut ga, mut gb) = (Vec::new(), Vec::new());
        while ga.len() < 100_000 || gb.len() < 100_000 {
            a.read_until(&mut ga, 100_000, Duration::ZERO, Duration::from_millis(50))
                .ok();
            b.read_until(&mut gb, 100_000, Duration::ZERO, Duration::from_millis(50))
                .ok();
        }
        let mut m = std::collections::HashMap::new();
        m.insert(a.desc.device_id.clone(), ga);
        m.insert(b.desc.device_id.clone(), gb);
        m
    });
    let lp = MainLoop::new();
    let one = p.open_chardev("vm", "one", &opts).unwrap();
    let two = p.open_chardev("vm", "two", &opts).unwrap();
    assert!(lp.run_until(T, || lp
        .logs()
        .iter()
        .filter(|l| l.contains("streaming"))
        .count()
        == 2));
    let (d1, d2) = (
        GuestStream::bytes(1, 100_000),
        GuestStream::bytes(2, 100_000),
    );
    for (c1, c2) in d1.chunks(1000).zip(d2.chunks(1000)) {
        one.write_all(&lp, c1, T).unwrap();
        two.write_all(&lp, c2, T).unwrap();
    }
    let got = reader.join().unwrap();
    assert!(!lp.logged("lost the daemon"), "{:?}", lp.logs());
    assert!(got["one"] == d1 && got["two"] == d2);
}

#[test]
fn first_input_wakes_the_plugin_without_any_help_from_the_frontend() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let lp = MainLoop::new();
    let chr = p.open_chardev("vm", "serial0", &opts).unwrap();
    chr.frontend.room.set(4096);
    let mut c = consumer.accept(T).unwrap().console();
    wait_attached(&lp);
    assert_eq!(c.send_input(b"login\n").unwrap(), 6);
    // Only the doorbell can deliver this: nobody calls accept_input.
    assert!(lp.run_until(T, || chr.frontend.received.borrow().as_slice()
        == b"login\n"));
}

#[test]
fn a_daemon_restarted_within_the_grace_gets_every_byte_the_guest_wrote_meanwhile() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let lp = MainLoop::new();
    let consumer = TestConsumer::bind(&path).unwrap();
    let first = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, 1000, Duration::ZERO, T).unwrap();
        (got, consumer)
        // `c` drops here: the connection closes, as when the daemon is killed.
    });
    // A 16 KiB ring and 200 KB written while the daemon is away: without the grace the
    // flight recorder would overwrite most of it.
    let chr = p
        .open_chardev("vm", "con", &sock_opts(&path, ":ring=16K:grace=60"))
        .unwrap();
    wait_attached(&lp);
    let data = GuestStream::bytes(8, 201_000);
    chr.write_all(&lp, &data[..1000], T).unwrap();
    let (got1, consumer) = first.join().unwrap();
    assert!(
        lp.run_until(T, || lp.logged("lost the daemon")),
        "{:?}",
        lp.logs()
    );
    assert!(lp.logged("restart grace"), "{:?}", lp.logs());
    // The "restarted daemon" comes back while the guest is blocked on a full ring.
    let second = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, 200_000, Duration::ZERO, T).unwrap();
        (got, c.lost)
    });
    let stats = chr.write_all(&lp, &data[1000..], T).unwrap();
    assert!(stats.waits > 0, "the guest must have waited for the daemon");
    let (got2, lost) = second.join().unwrap();
    assert_eq!(lost, 0);
    assert_eq!(got1, &data[..1000]);
    assert!(got2 == data[1000..], "bytes differ across the restart");
    assert!(!lp.logged("did not come back"), "{:?}", lp.logs());
}

#[test]
fn after_the_grace_the_console_falls_back_to_the_flight_recorder_and_counts() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let lp = MainLoop::new();
    let consumer = TestConsumer::bind(&path).unwrap();
    let first = thread::spawn(move || {
        let mut c = consumer.accept(T).unwrap().console();
        let mut got = Vec::new();
        c.read_until(&mut got, 1000, Duration::ZERO, T).unwrap();
        drop(c);
        drop(consumer);
        got
    });
    let chr = p
        .open_chardev("vm", "con", &sock_opts(&path, ":ring=16K:grace=300ms"))
        .unwrap();
    wait_attached(&lp);
    let data = GuestStream::bytes(9, 101_000);
    chr.write_all(&lp, &data[..1000], T).unwrap();
    assert_eq!(first.join().unwrap(), &data[..1000]);
    assert!(lp.run_until(T, || lp.logged("lost the daemon")));
    // Nobody comes back: the guest waits out the grace, then writes go on (recorder).
    let stats = chr.write_all(&lp, &data[1000..], T).unwrap();
    assert!(stats.waits > 0, "the ring filled up during the grace");
    assert!(
        lp.logged("did not come back within 300 ms"),
        "{:?}",
        lp.logs()
    );
    assert!(
        chr.write_ready(),
        "the flight recorder never makes the guest wait"
    );
    assert_eq!(chr.write(b"x"), 1);
}

#[test]
fn a_grace_of_zero_switches_to_the_flight_recorder_at_once() {
    // Load (and, on a first run, build) the library before any timed wait starts.
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let lp = MainLoop::new();
    let consumer = TestConsumer::bind(&path).unwrap();
    let first = thread::spawn(move || {
        let c = consumer.accept(T).unwrap().console();
        drop(c);
        consumer
    });
    let chr = p
        .open_chardev("vm", "con", &sock_opts(&path, ":ring=16K:grace=0"))
        .unwrap();
    wait_attached(&lp);
    let _consumer = first.join().unwrap();
    assert!(lp.run_until(T, || lp.logged("lost the daemon")));
    assert!(!lp.logged("restart grace"), "{:?}", lp.logs());
    for c in GuestStream::bytes(10, 100_000).chunks(1000) {
        assert_eq!(chr.write(c), 1000, "the recorder takes everything at once");
    }
}

#[test]
fn a_second_input_voice_in_the_same_format_shares_the_ring_and_the_session() {
    let p = plugin();
    let dir = tempfile::tempdir().unwrap();
    let consumer = TestConsumer::bind(&dir.path().join("d.sock")).unwrap();
    let opts = sock_opts(consumer.path(), "");
    let (tx, rx) = std::sync::mpsc::channel();
    let daemon = thread::spawn(move || {
        let mut a = consumer.accept(T).unwrap().audio();
        let mut input = a.input.take().unwrap();
        // The pcm goes in once the guest side has opened its second voice and closed one.
        rx.recv_timeout(T).unwrap();
        let pcm = GuestStream::bytes(7, 441 * 4);
        assert_eq!(input.write(&pcm).unwrap().bytes, pcm.len());
        // No second registration: the first session goes on.
        assert!(consumer.accept(Duration::from_millis(500)).is_err());
        a
    });
    let lp = MainLoop::new();
    let audio = p.open_audio("vm", "snd0", &opts).unwrap();
    assert_eq!(audio.in_open(&S16_STEREO_44100), 0);
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    audio.out_enable(true);
    wait_attached(&lp);
    // A second voice (AC97's microphone beside its line-in), then one closes.
    assert_eq!(audio.in_open(&S16_STEREO_44100), 0);
    let other = QbpAudioFormat {
        frequency: 48_000,
        ..S16_STEREO_44100
    };
    assert!(audio.in_open(&other) < 0, "another format on the same ring");
    audio.in_close();
    audio.in_enable(true);
    tx.send(()).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 441 * 4];
    for _ in 0..100 {
        let n = audio.in_read(&mut buf);
        got.extend_from_slice(&buf[..n]);
        if got.len() >= 441 * 4 {
            break;
        }
        lp.run_once(Duration::from_millis(20), &[]);
    }
    assert!(
        got == GuestStream::bytes(7, 441 * 4),
        "the open voice lost its ring"
    );
    drop(daemon.join().unwrap());
}
