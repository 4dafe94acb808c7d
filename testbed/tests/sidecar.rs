//! The real plugin library (driven by the fake-QEMU harness) registering with a real
//! ringcastd: bytes through to subscribers and the spool, a daemon restart in the middle
//! of a stream, input, and audio.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use sidecar::{Config, Daemon, DeviceKey, Handle, Item, StartAt};
use testbed::harness::{MainLoop, Plugin, S16_STEREO_44100};
use testbed::kit::bins::plugin;
use testbed::stream::GuestStream;

const T: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> Config {
    let socket = dir.join("run/ringcastd.sock");
    Config {
        control_socket: sidecar::control_socket_for(&socket),
        socket,
        state_dir: dir.join("state"),
        ..Config::default()
    }
}

fn opts(cfg: &Config, extra: &str) -> String {
    format!("socket={}{extra}", cfg.socket.display())
}

/// Reads a console journal from `from` until `len` bytes (gaps are an error).
fn read_journal(h: &Handle, key: &DeviceKey, from: u64, len: usize) -> Vec<u8> {
    let mut sub = h.subscribe(key, StartAt::Offset(from)).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    while got.len() < len {
        assert!(
            Instant::now() < deadline,
            "only {} of {len} bytes",
            got.len()
        );
        match sub.next_blocking(Duration::from_millis(200)).unwrap() {
            Some(Item::Chunk(c)) => {
                assert_eq!(c.offset, from + got.len() as u64);
                got.extend_from_slice(&c.bytes);
            }
            Some(Item::Gap(g)) => panic!("unexpected gap {g:?}"),
            None => {}
        }
    }
    got
}

#[test]
fn plugin_bytes_reach_subscribers_and_the_spool_exactly() {
    let p = Plugin::load(&plugin()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let lp = MainLoop::new();
    let chr = p
        .open_chardev("vmA", "serial0", &opts(&cfg, ":ring=64K"))
        .unwrap();
    assert!(lp.run_until(T, || lp.logged("streaming to the daemon")));
    let data = GuestStream::bytes(77, 3 << 20);
    let key = DeviceKey::new("vmA", "serial0");
    let reader = {
        let h = h.clone();
        let key = key.clone();
        let len = data.len();
        thread::spawn(move || read_journal(&h, &key, 0, len))
    };
    for c in data.chunks(4096) {
        chr.write_all(&lp, c, T).unwrap();
    }
    assert!(reader.join().unwrap() == data, "subscriber bytes differ");
    let spool = dir.path().join("state/vmA/serial0/current.log");
    assert!(lp.run_until(T, || std::fs::metadata(&spool)
        .map(|m| m.len())
        .unwrap_or(0)
        == data.len() as u64));
    assert!(std::fs::read(&spool).unwrap() == data, "spool bytes differ");
    let stats = h.device_stats(&key).unwrap();
    assert_eq!(stats.dropped_flight_recorder, 0);
    drop(chr);
    daemon.shutdown();
}

#[test]
fn daemon_restart_mid_stream_loses_no_byte_the_ring_could_hold() {
    let p = Plugin::load(&plugin()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let lp = MainLoop::new();
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let chr = p
        .open_chardev("vmB", "hvc0", &opts(&cfg, ":ring=1M"))
        .unwrap();
    assert!(lp.run_until(T, || lp.logged("streaming to the daemon")));
    let data = GuestStream::bytes(78, 1_500_000);
    chr.write_all(&lp, &data[..500_000], T).unwrap();
    // Let the daemon drain what it has, then stop it while the guest keeps writing.
    let key = DeviceKey::new("vmB", "hvc0");
    read_journal(&daemon.handle(), &key, 0, 500_000);
    daemon.shutdown();
    assert!(lp.run_until(T, || lp.logged("lost the daemon")));
    chr.write_all(&lp, &data[500_000..1_000_000], T).unwrap();
    lp.clear_logs();
    let daemon = Daemon::start(cfg.clone()).unwrap();
    assert!(lp.run_until(T, || lp.logged("streaming to the daemon")));
    chr.write_all(&lp, &data[1_000_000..], T).unwrap();
    let got = read_journal(&daemon.handle(), &key, 0, data.len());
    assert!(got == data, "bytes differ across the restart");
    assert_eq!(
        daemon
            .handle()
            .device_stats(&key)
            .unwrap()
            .dropped_flight_recorder,
        0
    );
    drop(chr);
    daemon.shutdown();
}

#[test]
fn input_written_through_the_daemon_reaches_the_guest() {
    let p = Plugin::load(&plugin()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let lp = MainLoop::new();
    let chr = p.open_chardev("vmC", "serial0", &opts(&cfg, "")).unwrap();
    assert!(lp.run_until(T, || lp.logged("streaming to the daemon")));
    chr.frontend.room.set(1 << 20);
    let key = DeviceKey::new("vmC", "serial0");
    assert_eq!(h.write_input(&key, b"root\n").unwrap(), 5);
    assert!(lp.run_until(T, || chr.frontend.received.borrow().as_slice() == b"root\n"));
    drop(chr);
    daemon.shutdown();
}

#[test]
fn audio_from_the_plugin_reaches_an_audio_subscriber_in_order() {
    let p = Plugin::load(&plugin()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let lp = MainLoop::new();
    let audio = p.open_audio("vmD", "snd0", &opts(&cfg, "")).unwrap();
    assert_eq!(audio.out_open(&S16_STEREO_44100), 0);
    assert!(lp.run_until(T, || lp.logged("streaming to the daemon")));
    let key = DeviceKey::new("vmD", "snd0");
    let mut sub = h.subscribe_audio(&key, 0).unwrap();
    let period = |i: usize| GuestStream::bytes(i as u64 + 100, 1764);
    audio.play_paced(&lp, 30, Duration::from_millis(10), period);
    let mut got = Vec::new();
    while got.len() < 30 {
        match sub.next_blocking(T).unwrap() {
            Some(p) => got.push(p),
            None => panic!("audio stopped after {} periods", got.len()),
        }
    }
    let first = got[0].seq;
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.seq, first + i as u64);
        assert_eq!(p.skipped_before, 0);
        assert_eq!(&p.pcm[..], &period(p.seq as usize)[..]);
    }
    // The VM goes away: the live subscription ends instead of waiting forever.
    drop(audio);
    let ended = loop {
        match sub.next_blocking(T) {
            Ok(Some(_)) => continue,
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(
        matches!(ended, Some(sidecar::Error::NotAttached(_))),
        "{ended:?}"
    );
    daemon.shutdown();
}

#[test]
fn several_qemu_processes_stream_into_one_daemon_exactly() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let h = daemon.handle();
    let so = plugin();
    let procs: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_fake-qemu"))
                .env("RINGCAST_BACKEND_SO", &so)
                .env("RINGCAST_HARNESS_QUIET", "1")
                .args([
                    "--vm",
                    &format!("vm{i}"),
                    "--opts",
                    &opts(&cfg, ":ring=64K"),
                ])
                .arg(format!("serial0={}:{}", 10 + i, 2 << 20))
                .arg(format!("hvc0={}:{}", 20 + i, 3 << 20))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reported = Vec::new();
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "a fake QEMU failed");
        reported.push(String::from_utf8(out.stdout).unwrap());
    }
    for (i, report) in reported.iter().enumerate() {
        for (dev, len) in [("serial0", 2usize << 20), ("hvc0", 3 << 20)] {
            let key = DeviceKey::new(format!("vm{i}"), dev);
            let got = read_journal(&h, &key, 0, len);
            let sum = format!("{dev} sha256={:x} bytes={len}", Sha256::digest(&got));
            assert!(
                report.lines().any(|l| l == sum),
                "vm{i}/{dev}: {sum} not in {report}"
            );
            let spool = dir.path().join(format!("state/vm{i}/{dev}/current.log"));
            assert!(
                std::fs::read(&spool).unwrap() == got,
                "vm{i}/{dev}: spool differs"
            );
        }
    }
    daemon.shutdown();
}
