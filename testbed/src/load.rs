//! The load scenario shared by the client's CI test (`client/tests/load.rs`) and its soak
//! (`client/examples/soak.rs`): fake QEMU processes with many consoles each, writing continuously
//! into one ringcastd process, while many clients follow one console over QUIC and one
//! client attached to it never reads. ringcastd's RSS is sampled throughout.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{ConsoleItem, Mode, StartAt};

use crate::kit::clients::{rss_kib, RingcastdExt, Target};
use crate::kit::{sha, stream, wait_until, FakeConsole, Ringcastd};

const CHILD_ENV: &str = "RINGCAST_LOAD_PRODUCER";
/// Output ring per console.
pub const RING: u64 = 64 << 10;
/// Input ring per console (FakeConsole's).
pub const INPUT_RING: u64 = 4 << 10;
/// RAM window per console (ringcastd --journal-window).
pub const WINDOW: u64 = 64 << 10;
/// ringcastd's drain buffer per console (ingest.rs DRAIN_BYTES, capped by the ring).
pub const DRAIN: u64 = 64 << 10;
/// Console bytes a client may have unread per stream (transport_quic Limits default).
pub const CLIENT_IN_FLIGHT: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub processes: usize,
    pub devices_per_process: usize,
    pub duration: Duration,
    /// Bytes per second of every console but the followed one.
    pub rate: u64,
    /// Bytes per second of the followed console (vm `load0`, device `d0`).
    pub followed_rate: u64,
    /// Clients that follow the console and read everything.
    pub followers: usize,
    pub sample_every: Duration,
}

#[derive(Debug)]
pub struct LoadReport {
    pub rss_kib: Vec<(f64, u64)>,
    pub base_kib: u64,
    pub bound_kib: u64,
    pub followed_bytes: u64,
    pub stalled_unread_at_end: u64,
    /// Bytes the stalled client lost to the retention (0 in short runs).
    pub stalled_gap: u64,
    pub devices: usize,
}

impl LoadReport {
    /// Least-squares slope of RSS over time, in KiB per minute, from `from_s` on.
    pub fn slope_kib_per_min(&self, from_s: f64) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .rss_kib
            .iter()
            .filter(|(t, _)| *t >= from_s)
            .map(|&(t, r)| (t, r as f64))
            .collect();
        let n = pts.len() as f64;
        if n < 2.0 {
            return 0.0;
        }
        let (mt, mr) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let cov: f64 = pts.iter().map(|p| (p.0 - mt) * (p.1 - mr)).sum();
        let var: f64 = pts.iter().map(|p| (p.0 - mt).powi(2)).sum();
        if var == 0.0 {
            0.0
        } else {
            cov / var * 60.0
        }
    }
}

/// The RSS bound ringcastd must stay under, derived from its configuration: per console
/// its RAM window, its output and input rings (shared memory it maps and touches) and a
/// drain buffer; per client the bytes a stream may have unread (the stalled client uses
/// all of it; readers far less, but the bound allows it for one more) and 512 KiB of
/// connection state; plus the process's RSS before any load and 32 MiB of slack for the
/// allocator and runtime.
pub fn bound_kib(base_kib: u64, devices: usize, clients: usize) -> u64 {
    let per_device = WINDOW + RING + INPUT_RING + DRAIN;
    let bytes = devices as u64 * per_device
        + 2 * CLIENT_IN_FLIGHT
        + clients as u64 * (512 << 10)
        + (32 << 20);
    base_kib + bytes / 1024
}

/// Runs the producer side when this process was started as one; true if it was.
pub fn producer_main_if_child() -> bool {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let p: Vec<&str> = spec.split(';').collect();
    let socket = std::path::PathBuf::from(p[0]);
    let proc_ix: usize = p[1].parse().unwrap();
    let n: usize = p[2].parse().unwrap();
    let dur = Duration::from_millis(p[3].parse().unwrap());
    let rate: u64 = p[4].parse().unwrap();
    let followed_rate: u64 = p[5].parse().unwrap();
    let mut devs: Vec<(FakeConsole, u64, u64, Vec<u8>, u64)> = (0..n)
        .map(|j| {
            let mut c = FakeConsole::new(
                &socket,
                &format!("load{proc_ix}"),
                &format!("d{j}"),
                1,
                RING,
            );
            wait_until("registration", Duration::from_secs(60), || {
                c.try_connect().is_ok()
            });
            let r = if proc_ix == 0 && j == 0 {
                followed_rate
            } else {
                rate
            };
            let total = r * dur.as_millis() as u64 / 1000;
            (c, seed(proc_ix, j), total, Vec::new(), 0u64)
        })
        .collect();
    let start = Instant::now();
    let tick = Duration::from_millis(20);
    loop {
        let elapsed = start.elapsed().min(dur);
        let mut left = false;
        for (c, seed, total, pending, pos) in devs.iter_mut() {
            // Paced: what should have been written by now.
            let due = (*total as u128 * elapsed.as_millis() / dur.as_millis().max(1)) as u64;
            if pending.is_empty() && *pos < due {
                pending.extend(stream(*seed, *pos, due - *pos));
                *pos = due;
            }
            if !pending.is_empty() {
                let w = c.tx.write(pending).unwrap();
                if w.wake_consumer {
                    c.out_data.ring();
                }
                pending.drain(..w.bytes);
            }
            if *pos < *total || !pending.is_empty() {
                left = true;
            }
        }
        if !left {
            break;
        }
        std::thread::sleep(tick);
    }
    for (c, ..) in devs.iter_mut() {
        c.wait_drained();
    }
    println!("done");
    true
}

pub fn seed(proc_ix: usize, dev: usize) -> u64 {
    (proc_ix * 1000 + dev) as u64 + 7
}

/// Runs the scenario against a fresh ringcastd; panics when a follower misses a byte or
/// ringcastd's RSS goes past the bound.
pub async fn run(cfg: LoadConfig, test_args: &[&str]) -> LoadReport {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(
        dir.path(),
        &dir.path().join("state"),
        &[
            "--journal-window",
            "64K",
            "--segment-size",
            "4M",
            "--retention",
            "64M",
        ],
    );
    let pid = d.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(pid);
    let devices = cfg.processes * cfg.devices_per_process;
    let clients = cfg.followers + 1;
    let bound = bound_kib(base, devices, clients);
    let children: Vec<Child> = (0..cfg.processes)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(test_args)
                .env(
                    CHILD_ENV,
                    format!(
                        "{};{i};{};{};{};{}",
                        d.socket().display(),
                        cfg.devices_per_process,
                        cfg.duration.as_millis(),
                        cfg.rate,
                        cfg.followed_rate
                    ),
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let total = cfg.followed_rate * cfg.duration.as_millis() as u64 / 1000;
    let t = d.target();
    let sessions_up = {
        let t = t.clone();
        async move {
            loop {
                let s = t.session().await;
                if s.list()
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.vm == "load0" && e.device == "d0")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), sessions_up)
        .await
        .expect("the followed console never appeared");
    // The stalled client: attached from offset 0, never reads.
    let stalled_session = t.session().await;
    let stalled = stalled_session
        .attach_console("load0", "d0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    let followers: Vec<_> = (0..cfg.followers)
        .map(|_| {
            let t: Target = t.clone();
            tokio::spawn(async move {
                let s = t.session().await;
                let mut c = s
                    .attach_console("load0", "d0", Mode::Read, StartAt::Offset(0))
                    .await
                    .unwrap();
                let mut h = sha2::Sha256::default();
                let mut n = 0u64;
                while n < total {
                    match tokio::time::timeout(Duration::from_secs(120), c.next())
                        .await
                        .expect("a follower stalled")
                        .unwrap()
                    {
                        Some(ConsoleItem::Chunk { bytes, .. }) => {
                            sha2::Digest::update(&mut h, &bytes);
                            n += bytes.len() as u64;
                        }
                        other => panic!("follower got {other:?}"),
                    }
                }
                s.close().await;
                format!("{:x}", sha2::Digest::finalize(h))
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = vec![(0.0, rss_kib(pid))];
    let mut children = children;
    let mut next = started + cfg.sample_every;
    let mut sampler = tokio::time::interval(Duration::from_millis(200));
    loop {
        sampler.tick().await;
        if Instant::now() >= next {
            next += cfg.sample_every;
            let r = rss_kib(pid);
            samples.push((started.elapsed().as_secs_f64(), r));
            eprintln!(
                "load: t={:.0}s ringcastd rss={} KiB (bound {} KiB)",
                started.elapsed().as_secs_f64(),
                r,
                bound
            );
        }
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            break;
        }
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "a producer failed");
    }
    let expected = sha(&stream(seed(0, 0), 0, total));
    for (i, f) in followers.into_iter().enumerate() {
        assert_eq!(f.await.unwrap(), expected, "follower {i}");
    }
    samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
    for &(t, r) in &samples {
        assert!(
            r <= bound,
            "ringcastd RSS {r} KiB at {t:.0} s is over the bound {bound} KiB"
        );
    }
    // The stalled client held at most its in-flight allowance; now it reads everything
    // (from the spool), byte for byte.
    let stats = stalled_session.list().await.unwrap();
    let d0 = stats
        .iter()
        .find(|e| e.vm == "load0" && e.device == "d0")
        .unwrap();
    assert_eq!(d0.journal_end, total);
    // Behind the retention (long runs), it gets what its connection had buffered, then one
    // gap of exactly what the journal deleted (counted in the stats), then the rest byte
    // for byte.
    let mut stalled = stalled;
    let mut got = Vec::new();
    let mut gap = None;
    while stalled.offset() < total {
        match tokio::time::timeout(Duration::from_secs(60), stalled.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(ConsoleItem::Chunk { bytes, .. }) => got.extend_from_slice(&bytes),
            Some(ConsoleItem::Gap {
                offset,
                len,
                reason,
            }) if gap.is_none() => {
                assert_eq!(reason, client::GapReason::Retention);
                assert_eq!(
                    offset + len,
                    d0.journal_start,
                    "the gap ends where the journal starts"
                );
                gap = Some((offset, len));
            }
            other => panic!("stalled client got {other:?}"),
        }
    }
    let expected_got = match gap {
        None => stream(seed(0, 0), 0, total),
        Some((at, len)) => {
            let mut v = stream(seed(0, 0), 0, at);
            v.extend(stream(seed(0, 0), at + len, total - at - len));
            v
        }
    };
    assert_eq!(sha(&got), sha(&expected_got), "the stalled client");
    let stalled_gap = gap.map_or(0, |g| g.1);
    LoadReport {
        rss_kib: samples,
        base_kib: base,
        bound_kib: bound,
        followed_bytes: total,
        stalled_unread_at_end: total,
        stalled_gap,
        devices,
    }
}
