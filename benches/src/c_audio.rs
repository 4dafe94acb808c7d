//! Scenario C (BENCHMARKS.md §C): audio latency while a console floods the same connection.
//!
//! One in-process ringcastd (`sidecar::Daemon` and its QUIC server) serves two fake QEMU
//! devices registered through the real socket: an audio device whose records ring a timer
//! thread fills in real time with 10 ms periods (480 frames, 1920 B, 48 kHz stereo s16),
//! each stamped with CLOCK_MONOTONIC, and a console device a second thread floods at full
//! speed while a flood variant runs. A `client::Session` attaches the audio (and, with the
//! flood, the console, read and discarded as fast as it arrives) and records, per period,
//! arrival (CLOCK_MONOTONIC, same host) − stamp.
//!
//! Variants, interleaved within each repetition: `audio-alone` (no flood: the floor) and
//! `ringcast+flood` (audio at stream priority 10, the console bounded in flight while audio
//! is live: the server's default). Conditions: `loopback`, and `lossy` (the server in
//! namespace A, the client in B, 1% loss and 10 ms each way on testbed's LossyLink; skipped
//! with a note when the link cannot be created, e.g. without root).
//!
//! Not measured (yet): 2 ms periods, the TCP+TLS one-connection baseline, and ringcast with
//! every device on one stream (the protocol has no such mode: each attachment is its own
//! stream).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use client::{ConsoleItem, Identity, Mode, Session, StartAt, Trust};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack, AudioFormat, DeviceDescription, DeviceKind};
use shm_ring::{ByteProducer, Doorbell, RecordProducer, RingKind, RingMemory};
use sidecar::net::{NetConfig, NetServer};
use sidecar::{Config, Daemon, JournalConfig};
use testbed::lossy::{LinkSpec, LossyLink};

use crate::report::{median, Comparison, Measurement, Outcome};
use crate::scenario::{Options, Scenario};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    key: "c",
    title: "C. Audio latency under a console flood (head-of-line blocking)",
    about: "In-process ringcastd and QUIC server; a fake audio device gets 10 ms periods \
            (1920 B) stamped with CLOCK_MONOTONIC from a timer thread, a fake console is \
            flooded at full speed; a client::Session attaches both and records arrival - \
            stamp per period. Variants, interleaved: audio-alone (the floor) and \
            ringcast+flood (audio priority 10, console bounded in flight). Conditions: \
            loopback, and lossy (testbed LossyLink, 1% loss, 10 ms each way, server in \
            namespace A, client in B; needs root, skipped otherwise). 10 s per run, \
            3 repetitions (--quick: 3 s, 1), medians of p50/p99, max of max.",
    run,
};

const VM: &str = "bench";
const AUDIO_DEV: &str = "snd0";
const CONSOLE_DEV: &str = "hvc0";
const RATE: u32 = 48_000;
/// 10 ms periods.
const PERIOD: Duration = Duration::from_millis(10);
const FRAMES: u32 = 480;
/// Discarded at the start of each run (connection warm-up, flood ramp-up).
const WARMUP: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Alone,
    Flood,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Alone => "audio-alone",
            Variant::Flood => "ringcast+flood",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Loopback,
    Lossy,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Loopback => "loopback",
            Condition::Lossy => "lossy1%-10ms",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
struct RunResult {
    /// Latencies in ms of the periods received after the warm-up.
    lat_ms: Vec<f64>,
    /// Periods missing (sequence gaps and the server's `skipped_before`).
    skipped: u64,
    /// Console bytes the client read.
    flood_bytes: u64,
    secs: f64,
}

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Registers a device through the daemon's socket the way the backend does.
fn register(path: &Path, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<OwnedFd, String> {
    let addr = SocketAddrUnix::new(path).map_err(|e| e.to_string())?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| e.to_string())?;
    rustix::net::connect(&sock, &addr).map_err(|e| e.to_string())?;
    handover::send_with_fds(&sock, msg, fds).map_err(|e| e.to_string())?;
    let mut pfd = [PollFd::new(&sock, PollFlags::IN)];
    let t = Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    if poll(&mut pfd, Some(&t)).map_err(|e| e.to_string())? == 0 {
        return Err("no acknowledgement".into());
    }
    let (reply, _) = handover::recv_with_fds(&sock)
        .map_err(|e| e.to_string())?
        .ok_or("connection closed before the acknowledgement")?;
    let ack = Ack::decode(&reply).map_err(|e| e.to_string())?;
    if !ack.accepted {
        return Err(format!("refused: {}", ack.message));
    }
    Ok(sock)
}

fn description(kind: DeviceKind, device: &str, audio: Option<AudioFormat>) -> DeviceDescription {
    DeviceDescription {
        kind,
        pid: std::process::id(),
        session: 1,
        vm_name: VM.into(),
        vm_uuid: String::new(),
        device_id: device.into(),
        audio,
    }
}

/// The audio producer: a thread pushing one stamped period every 10 ms until stopped.
/// Returns (periods pushed, periods the ring refused).
fn start_audio(socket: &Path, stop: Arc<AtomicBool>) -> Result<JoinHandle<(u64, u64)>, String> {
    let mem = Arc::new(
        RingMemory::create("audio", RingKind::Records, 1 << 16, 4096).map_err(|e| e.to_string())?,
    );
    let desc = description(
        DeviceKind::Audio,
        AUDIO_DEV,
        Some(AudioFormat {
            frequency: RATE,
            channels: 2,
            sample_format: 3,
            big_endian: false,
        }),
    );
    let data = Doorbell::new().map_err(|e| e.to_string())?;
    let msg = desc.encode().map_err(|e| e.to_string())?;
    let sock = register(socket, &msg, &[mem.fd(), data.as_fd()])?;
    let mut tx = RecordProducer::new(mem.clone()).map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let _keep = (sock, mem);
        let pcm: Vec<u8> = (0..FRAMES * 4).map(|i| i as u8).collect();
        let start = Instant::now();
        let (mut pushed, mut refused) = (0u64, 0u64);
        let mut next = start;
        while !stop.load(Ordering::Relaxed) {
            next += PERIOD;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            match tx.push(mono_ns(), FRAMES, 0, &pcm) {
                Ok(p) => {
                    pushed += 1;
                    refused += u64::from(!p.stored);
                    if p.wake_consumer {
                        data.ring();
                    }
                }
                Err(_) => break,
            }
        }
        (pushed, refused)
    }))
}

/// The console flood: writes as fast as the ring takes bytes while `on` is set.
fn start_flood(
    socket: &Path,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<u64>, String> {
    fn e(e: impl std::fmt::Display) -> String {
        e.to_string()
    }
    let out_mem = Arc::new(RingMemory::create("out", RingKind::Bytes, 1 << 20, 0).map_err(e)?);
    let in_mem = Arc::new(RingMemory::create("in", RingKind::Bytes, 4096, 0).map_err(e)?);
    let (out_data, out_space) = (Doorbell::new().map_err(e)?, Doorbell::new().map_err(e)?);
    let (in_data, in_space) = (Doorbell::new().map_err(e)?, Doorbell::new().map_err(e)?);
    let desc = description(DeviceKind::Console, CONSOLE_DEV, None);
    let msg = desc.encode().map_err(|e| e.to_string())?;
    let sock = register(
        socket,
        &msg,
        &[
            out_mem.fd(),
            out_data.as_fd(),
            out_space.as_fd(),
            in_mem.fd(),
            in_data.as_fd(),
            in_space.as_fd(),
        ],
    )?;
    let mut tx = ByteProducer::new(out_mem.clone()).map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let _keep = (sock, out_mem, in_mem, in_data, in_space);
        let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| b' ' + (i % 95) as u8).collect();
        let mut written = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if !on.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let Ok(w) = tx.write(&chunk) else { break };
            written += w.bytes as u64;
            if w.wake_consumer {
                out_data.ring();
            }
            if w.bytes == 0
                && !tx
                    .space_or_arm(1, || {
                        out_space.drain();
                    })
                    .unwrap_or(true)
            {
                out_space.wait(50);
            }
        }
        written
    }))
}

/// One run: connect, attach audio (and the flood console), discard the warm-up, record
/// latencies for `dur`.
async fn measure(
    addr: String,
    identity: Option<Identity>,
    trust: Trust,
    flood: Option<Arc<AtomicBool>>,
    dur: Duration,
) -> Result<RunResult, String> {
    let s = tokio::time::timeout(WAIT, Session::connect(&addr, identity, trust))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut audio = s
        .attach_audio(VM, AUDIO_DEV, false)
        .await
        .map_err(|e| format!("attach audio: {e}"))?;
    let read = Arc::new(AtomicU64::new(0));
    let reader = match &flood {
        Some(on) => {
            on.store(true, Ordering::Relaxed);
            let mut c = s
                .attach_console(VM, CONSOLE_DEV, Mode::Read, StartAt::Now)
                .await
                .map_err(|e| format!("attach console: {e}"))?;
            let read = read.clone();
            Some(tokio::spawn(async move {
                while let Ok(Some(item)) = c.next().await {
                    if let ConsoleItem::Chunk { bytes, .. } = item {
                        read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                }
            }))
        }
        None => None,
    };
    let t0 = Instant::now();
    let mut out = RunResult::default();
    let mut last_seq: Option<u64> = None;
    let mut read_at_start = None;
    let mut start = None;
    loop {
        let p = match tokio::time::timeout(WAIT, audio.next()).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(format!("audio: {e}")),
            Err(_) => return Err("no audio period for 20 s".into()),
        };
        let arrival = mono_ns();
        let elapsed = t0.elapsed();
        if elapsed < WARMUP {
            last_seq = Some(p.seq);
            continue;
        }
        let started = *start.get_or_insert_with(Instant::now);
        read_at_start.get_or_insert_with(|| read.load(Ordering::Relaxed));
        if let Some(l) = last_seq {
            out.skipped += p.seq.saturating_sub(l + 1);
        }
        out.skipped += p.skipped_before;
        last_seq = Some(p.seq);
        out.lat_ms
            .push(arrival.saturating_sub(p.timestamp_ns) as f64 / 1e6);
        if started.elapsed() >= dur {
            out.secs = started.elapsed().as_secs_f64();
            break;
        }
    }
    out.flood_bytes = read.load(Ordering::Relaxed) - read_at_start.unwrap_or(0);
    if let Some(on) = &flood {
        on.store(false, Ordering::Relaxed);
    }
    if let Some(r) = reader {
        r.abort();
    }
    drop(audio);
    s.close().await;
    Ok(out)
}

fn run(opts: &Options) -> Result<Outcome, String> {
    let reps = opts.reps.unwrap_or(if opts.quick { 1 } else { 3 });
    let dur = Duration::from_secs(if opts.quick { 3 } else { 10 });
    let dir = opts.work_dir.join("c");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let socket = dir.join("run").join("ringcastd.sock");
    let cfg = Config {
        control_socket: sidecar::control_socket_for(&socket),
        socket: socket.clone(),
        state_dir: dir.join("state"),
        journal: JournalConfig {
            window: 4 << 20,
            segment_size: 16 << 20,
            segment_age: Duration::from_secs(3600),
            retention: 256 << 20,
        },
        audio_queue: 64,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let daemon = Daemon::start(cfg.clone()).map_err(|e| format!("ringcastd: {e}"))?;
    let server = {
        let _g = rt.enter();
        NetServer::start(
            daemon.handle(),
            NetConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                identity_dir: cfg.state_dir.clone(),
                authorized_clients: dir.join("no_authorized_clients"),
                client_ca: None,
                limits: Default::default(),
            },
        )
        .map_err(|e| format!("server: {e}"))?
    };
    let addr = server.local_addr().to_string();

    // The lossy link: a second server in namespace A (same daemon), the client in B.
    let mut notes = Vec::new();
    let lossy = setup_lossy(&rt, &daemon, &cfg, &dir).map_err(|e| {
        notes.push(format!("lossy condition skipped: {e}"));
        eprintln!("c: lossy condition skipped: {e}");
    });
    let lossy = lossy.ok();

    let stop = Arc::new(AtomicBool::new(false));
    let flood_on = Arc::new(AtomicBool::new(false));
    let audio = start_audio(&socket, stop.clone())?;
    let flood = start_flood(&socket, flood_on.clone(), stop.clone())?;

    let mut conditions = vec![Condition::Loopback];
    if lossy.is_some() {
        conditions.push(Condition::Lossy);
    }
    let variants = [Variant::Alone, Variant::Flood];
    let mut results: Vec<((Condition, Variant), Vec<RunResult>)> = Vec::new();
    let mut failure = None;
    'reps: for rep in 0..reps {
        for &c in &conditions {
            for &v in &variants {
                eprintln!("c: rep {}/{reps} {} {}", rep + 1, c.name(), v.name());
                let flood = (v == Variant::Flood).then(|| flood_on.clone());
                let r = match c {
                    Condition::Loopback => rt.block_on(measure(
                        addr.clone(),
                        None,
                        Trust::KnownHosts(dir.join("known_hosts")),
                        flood,
                        dur,
                    )),
                    Condition::Lossy => {
                        let l = lossy.as_ref().expect("lossy set up");
                        let (addr, id, trust) = (l.addr.clone(), l.identity.clone(), l.trust());
                        l.link
                            .run_in_b(move || {
                                let rt = tokio::runtime::Builder::new_multi_thread()
                                    .worker_threads(2)
                                    .enable_all()
                                    .build()
                                    .map_err(|e| e.to_string())?;
                                rt.block_on(measure(addr, Some(id), trust, flood, dur))
                            })
                            .map_err(|e| e.to_string())
                            .and_then(|r| r)
                    }
                };
                flood_on.store(false, Ordering::Relaxed);
                match r {
                    Ok(r) => {
                        eprintln!(
                            "c:   {} periods, p50 {:.2} ms, p99 {:.2} ms, flood {:.1} MB/s",
                            r.lat_ms.len(),
                            {
                                let mut s = r.lat_ms.clone();
                                s.sort_by(f64::total_cmp);
                                percentile(&s, 0.5)
                            },
                            {
                                let mut s = r.lat_ms.clone();
                                s.sort_by(f64::total_cmp);
                                percentile(&s, 0.99)
                            },
                            r.flood_bytes as f64 / 1e6 / r.secs.max(1e-9)
                        );
                        match results.iter_mut().find(|(k, _)| *k == (c, v)) {
                            Some((_, list)) => list.push(r),
                            None => results.push(((c, v), vec![r])),
                        }
                    }
                    Err(e) => {
                        failure = Some(format!("{} {}: {e}", c.name(), v.name()));
                        break 'reps;
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (pushed, refused) = audio.join().unwrap_or((0, 0));
    let _ = flood.join();
    if let Some(l) = lossy {
        rt.block_on(l.server.shutdown());
        drop(l.link);
    }
    rt.block_on(server.shutdown());
    daemon.shutdown();
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(f) = failure {
        return Err(f);
    }

    let mut out = Outcome::default();
    for ((c, v), runs) in &results {
        let name = format!("{}@{}", v.name(), c.name());
        let per = |p: f64| {
            let xs: Vec<f64> = runs
                .iter()
                .map(|r| {
                    let mut s = r.lat_ms.clone();
                    s.sort_by(f64::total_cmp);
                    percentile(&s, p)
                })
                .collect();
            median(&xs)
        };
        let max = runs
            .iter()
            .flat_map(|r| r.lat_ms.iter().copied())
            .fold(f64::NAN, f64::max);
        let received: usize = runs.iter().map(|r| r.lat_ms.len()).sum();
        let skipped: u64 = runs.iter().map(|r| r.skipped).sum();
        out.measurements
            .push(Measurement::new(&name, "p50", per(0.5), "ms"));
        out.measurements
            .push(Measurement::new(&name, "p99", per(0.99), "ms"));
        out.measurements
            .push(Measurement::new(&name, "max", max, "ms"));
        out.measurements.push(Measurement::new(
            &name,
            "received",
            received as f64,
            "periods",
        ));
        out.measurements.push(Measurement::new(
            &name,
            "skipped",
            skipped as f64,
            "periods",
        ));
        if *v == Variant::Flood {
            let bytes: u64 = runs.iter().map(|r| r.flood_bytes).sum();
            let secs: f64 = runs.iter().map(|r| r.secs).sum();
            out.measurements.push(Measurement::new(
                &name,
                "flood_read",
                bytes as f64 / 1e6 / secs.max(1e-9),
                "MB/s",
            ));
            out.comparisons.push(Comparison {
                variant: name,
                baseline: format!("{}@{}", Variant::Alone.name(), c.name()),
            });
        }
    }
    notes.push(format!(
        "audio producer: {pushed} periods of 10 ms pushed, {refused} refused by a full ring; \
         {reps} repetition(s) of {} s per variant, p50/p99 are medians over repetitions, \
         max over all",
        dur.as_secs()
    ));
    let get = |v: Variant, c: Condition, m: &str| {
        let name = format!("{}@{}", v.name(), c.name());
        out.measurements
            .iter()
            .find(|x| x.variant == name && x.metric == m)
            .map(|x| x.value)
    };
    if let (Some(f), Some(a)) = (
        get(Variant::Flood, Condition::Loopback, "p99"),
        get(Variant::Alone, Condition::Loopback, "p99"),
    ) {
        notes.push(format!(
            "target loopback+flood p99 <= 10 ms: {:.2} ms ({}); flood/floor p99 {:.2}x",
            f,
            if f <= 10.0 { "met" } else { "missed" },
            f / a
        ));
    }
    if let (Some(f50), Some(f), Some(a)) = (
        get(Variant::Flood, Condition::Lossy, "p50"),
        get(Variant::Flood, Condition::Lossy, "p99"),
        get(Variant::Alone, Condition::Lossy, "p99"),
    ) {
        notes.push(format!(
            "target lossy+flood p50 <= 20 ms: {f50:.2} ms ({}); p99 <= 1.1x floor: {:.2}x ({})",
            if f50 <= 20.0 { "met" } else { "missed" },
            f / a,
            if f / a <= 1.1 { "met" } else { "missed" }
        ));
    }
    out.notes = notes;
    Ok(out)
}

struct Lossy {
    link: LossyLink,
    server: NetServer,
    addr: String,
    identity: Identity,
    known_hosts: PathBuf,
}

impl Lossy {
    fn trust(&self) -> Trust {
        Trust::KnownHosts(self.known_hosts.clone())
    }
}

fn setup_lossy(
    rt: &tokio::runtime::Runtime,
    daemon: &Daemon,
    cfg: &Config,
    dir: &Path,
) -> Result<Lossy, String> {
    let link = LossyLink::create(LinkSpec {
        loss_pct: 1.0,
        delay_ms: 10.0,
        jitter_ms: 0.0,
        rate_mbit: 0.0,
        seed: 3,
    })
    .map_err(|e| format!("LossyLink: {e}"))?;
    let id_dir = dir.join("client");
    std::fs::create_dir_all(&id_dir).map_err(|e| e.to_string())?;
    let identity = Identity::create(&id_dir, "bench", "bench", &["bench".to_owned()])
        .map_err(|e| format!("client identity: {e}"))?;
    let authz = dir.join("authorized_clients");
    std::fs::write(
        &authz,
        format!("{} */* read,write,spy\n", identity.fingerprint()),
    )
    .map_err(|e| e.to_string())?;
    let listen = format!("{}:0", link.addr_a());
    let handle = daemon.handle();
    let rth = rt.handle().clone();
    let net = NetConfig {
        listen: listen.parse().map_err(|e| format!("{listen}: {e}"))?,
        identity_dir: cfg.state_dir.clone(),
        authorized_clients: authz,
        client_ca: None,
        limits: Default::default(),
    };
    let server = link
        .run_in_a(move || {
            let _g = rth.enter();
            NetServer::start(handle, net).map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("server in namespace A: {e}"))?;
    let addr = server.local_addr().to_string();
    Ok(Lossy {
        link,
        server,
        addr,
        identity,
        known_hosts: dir.join("known_hosts_lossy"),
    })
}
