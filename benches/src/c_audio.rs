//! Scenario C (docs/benchmarks.md §C): audio latency while a console floods the same connection.
//!
//! One in-process ringcastd (`sidecar::Daemon`) serves two fake QEMU devices registered
//! through the real socket ([`devices`]): an audio device whose records ring a timer thread
//! fills in real time with periods of 10 ms (480 frames, 1920 B) or 2 ms (96 frames, 384 B)
//! of 48 kHz stereo s16, each stamped with CLOCK_MONOTONIC, and a console device a second
//! thread floods at full speed while a flood variant runs. Each variant's client records,
//! per period, arrival (CLOCK_MONOTONIC, same host) − stamp, and counts the console bytes
//! it read.
//!
//! Variants, interleaved within each repetition, all on the same daemon and devices:
//! * `audio-alone`: `client::Session` attaches only the audio (no flood): the floor.
//! * `ringcast+flood`: `client::Session` attaches audio and console on ringcastd's QUIC
//!   server (its own stream each, audio at priority 10, the console bounded in flight while
//!   audio is live: the server's defaults).
//! * `one-stream+flood`: the head-of-line baseline ([`one_stream`]): the same daemon's
//!   audio and console subscriptions carried on one QUIC stream, with ringcast's codec and
//!   its TLS and transport configuration, audio frames written first whenever both are
//!   ready. The protocol has no such mode; this server exists only in the bench.
//! * `tcp-tls+flood`: both devices on one TCP connection with rustls ([`tcp_tls`]), the
//!   way libvirt streams, VNC audio and ssh tunnels carry them, with `TCP_NODELAY` and
//!   `TCP_NOTSENT_LOWAT` tuned.
//!
//! Conditions: `loopback`; `lossy1%-10ms` and `lossy3%-10ms`: testbed's LossyLink (every
//! server in namespace A, the client in B, 10 ms each way, the link carrying both UDP and
//! TCP; skipped with a note when the link cannot be created, e.g. without root).
//!
//! Per variant: p50, p99 (over every period of every repetition), max, periods lost, periods
//! late for a jitter buffer that plays each period at stamp + one-way delay + 40 ms, the
//! underruns (late + lost), the flood's MB/s, and the ratios the targets need (p99 against
//! the audio-alone floor, ringcast's p99 against one-stream's).

pub(crate) mod devices;
mod one_stream;
mod tcp_tls;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{ConsoleItem, Identity, Mode, Session, StartAt, Trust};
use sidecar::net::{NetConfig, NetServer};
use sidecar::{Config, Daemon, JournalConfig};
use testbed::lossy::{LinkSpec, LossyLink};

use crate::report::{Measurement, Outcome};
use crate::scenario::{Options, Scenario};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    key: "c",
    title: "C. Audio latency under a console flood (head-of-line blocking)",
    about: "In-process ringcastd; a fake audio device gets periods of 10 ms (1920 B) and 2 ms \
            (384 B) stamped with CLOCK_MONOTONIC from a timer thread, a fake console is \
            flooded at full speed; each client records arrival - stamp per period. \
            Variants, interleaved: audio-alone (client::Session, no flood: the floor), \
            ringcast+flood (client::Session, a stream per device, audio priority 10, console \
            bounded in flight), one-stream+flood (bench-only server: both subscriptions on \
            one QUIC stream, ringcast's codec and TLS/transport config, audio first), \
            tcp-tls+flood (both devices on one rustls TCP connection, TCP_NODELAY, \
            TCP_NOTSENT_LOWAT 16 KiB). Conditions: loopback; lossy 1% and 3% loss, 10 ms \
            each way (testbed LossyLink, servers in namespace A, clients in B; needs root, \
            skipped otherwise). Full: both period sizes, 2 repetitions of 2.5 s per cell; \
            --quick: 10 ms only, 1 repetition of 1.5 s. Knobs: --set period_ms=10|2 (one \
            size only), --set secs=N (seconds per run), --set congestion=cubic|newreno|bbr \
            (ringcastd's QUIC controller; TCP uses the host's default). p50/p99 over all periods of all \
            repetitions; underruns = periods later than stamp + one-way delay + 40 ms, plus \
            periods lost.",
    run,
};

pub(crate) const VM: &str = "bench";
pub(crate) const AUDIO_DEV: &str = "snd0";
pub(crate) const CONSOLE_DEV: &str = "hvc0";
pub(crate) const RATE: u32 = 48_000;
/// Discarded at the start of each run (connection warm-up, flood ramp-up).
const WARMUP: Duration = Duration::from_millis(500);
/// Longest wait for a connection or for the next frame.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// Jitter buffer: each period is played at stamp + one-way delay + this.
const PLAYOUT_MARGIN_MS: f64 = 40.0;
/// One-way delay of the lossy conditions.
const LOSSY_DELAY_MS: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Alone,
    Ringcast,
    OneStream,
    TcpTls,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Alone,
        Variant::Ringcast,
        Variant::OneStream,
        Variant::TcpTls,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Alone => "audio-alone",
            Variant::Ringcast => "ringcast+flood",
            Variant::OneStream => "one-stream+flood",
            Variant::TcpTls => "tcp-tls+flood",
        }
    }

    fn flood(self) -> bool {
        self != Variant::Alone
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Loopback,
    Lossy1,
    Lossy3,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Loopback => "loopback",
            Condition::Lossy1 => "lossy1%-10ms",
            Condition::Lossy3 => "lossy3%-10ms",
        }
    }

    fn loss_pct(self) -> f64 {
        match self {
            Condition::Loopback => 0.0,
            Condition::Lossy1 => 1.0,
            Condition::Lossy3 => 3.0,
        }
    }

    fn one_way_ms(self) -> f64 {
        match self {
            Condition::Loopback => 0.0,
            Condition::Lossy1 | Condition::Lossy3 => LOSSY_DELAY_MS,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunResult {
    /// Latencies in ms of the periods received after the warm-up.
    lat_ms: Vec<f64>,
    /// Periods missing (sequence gaps and the server's `skipped_before`).
    skipped: u64,
    /// Console bytes the client read.
    flood_bytes: u64,
    secs: f64,
}

/// What every variant's client does with what it receives: discards the warm-up, then
/// records each period's latency and sequence gaps, and the console bytes read meanwhile.
pub(crate) struct Recorder {
    t0: Instant,
    warmup: Duration,
    dur: Duration,
    flood: Arc<AtomicU64>,
    flood_at_start: u64,
    start: Option<Instant>,
    last_seq: Option<u64>,
    out: RunResult,
}

impl Recorder {
    /// Starts the warm-up now; `flood` is the counter the client adds console bytes to.
    pub(crate) fn new(dur: Duration, flood: Arc<AtomicU64>) -> Recorder {
        Recorder::with_warmup(WARMUP, dur, flood)
    }

    fn with_warmup(warmup: Duration, dur: Duration, flood: Arc<AtomicU64>) -> Recorder {
        Recorder {
            t0: Instant::now(),
            warmup,
            dur,
            flood,
            flood_at_start: 0,
            start: None,
            last_seq: None,
            out: RunResult::default(),
        }
    }

    /// A period that arrived just now; true when the run has its `dur` of periods.
    pub(crate) fn period(&mut self, seq: u64, timestamp_ns: u64, skipped_before: u64) -> bool {
        let arrival = mono_ns();
        if self.t0.elapsed() < self.warmup {
            self.last_seq = Some(seq);
            return false;
        }
        let started = match self.start {
            Some(s) => s,
            None => {
                self.flood_at_start = self.flood.load(Ordering::Relaxed);
                *self.start.insert(Instant::now())
            }
        };
        if let Some(l) = self.last_seq {
            self.out.skipped += seq.saturating_sub(l + 1);
        }
        self.out.skipped += skipped_before;
        self.last_seq = Some(seq);
        self.out
            .lat_ms
            .push(arrival.saturating_sub(timestamp_ns) as f64 / 1e6);
        started.elapsed() >= self.dur
    }

    /// The figures of the run.
    pub(crate) fn finish(mut self) -> RunResult {
        if let Some(s) = self.start {
            self.out.secs = s.elapsed().as_secs_f64();
            self.out.flood_bytes = self.flood.load(Ordering::Relaxed) - self.flood_at_start;
        }
        self.out
    }
}

pub(crate) fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The ringcast variants: a `client::Session` attaches the audio and, with `flood`, the
/// console (read and discarded as fast as it arrives, on its own task).
async fn measure_session(
    addr: String,
    identity: Option<Identity>,
    trust: Trust,
    flood: bool,
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
    let reader = if flood {
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
    } else {
        None
    };
    let mut rec = Recorder::new(dur, read);
    loop {
        let p = match tokio::time::timeout(WAIT, audio.next()).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(format!("audio: {e}")),
            Err(_) => return Err("no audio period for 20 s".into()),
        };
        if rec.period(p.seq, p.timestamp_ns, p.skipped_before) {
            break;
        }
    }
    let out = rec.finish();
    if let Some(r) = reader {
        r.abort();
    }
    drop(audio);
    s.close().await;
    Ok(out)
}

/// The servers of one place (loopback, or namespace A of the lossy link).
struct Servers {
    ringcast: NetServer,
    one_stream: one_stream::Server,
    tcp: tcp_tls::Server,
}

impl Servers {
    async fn shutdown(self) {
        self.ringcast.shutdown().await;
        self.one_stream.shutdown().await;
        self.tcp.shutdown();
    }
}

/// Where a client finds the servers, and how it authenticates.
#[derive(Clone)]
struct Target {
    ringcast: String,
    one_stream: String,
    tcp: SocketAddr,
    identity: Option<Identity>,
    trust: Trust,
    /// The server's certificate, pinned by the TCP client.
    server_cert: Vec<u8>,
}

/// Starts the three servers on sockets bound by `bind` (in namespace A for the lossy link).
fn start_servers(
    rt: &tokio::runtime::Runtime,
    daemon: &Daemon,
    net: NetConfig,
    server_id: &Identity,
    bind: impl FnOnce() -> std::io::Result<(UdpSocket, TcpListener)> + Send + 'static,
    in_a: Option<&LossyLink>,
) -> Result<Servers, String> {
    let handle = daemon.handle();
    let rth = rt.handle().clone();
    let net_limits = net.limits.clone();
    let start_ringcast = move || {
        let _g = rth.enter();
        NetServer::start(handle, net).map_err(|e| e.to_string())
    };
    let (ringcast, (udp, tcp)) = match in_a {
        Some(link) => {
            let r = link
                .run_in_a(start_ringcast)
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("ringcast server in namespace A: {e}"))?;
            let s = link
                .run_in_a(bind)
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("sockets in namespace A: {e}"))?;
            (r, s)
        }
        None => (
            start_ringcast().map_err(|e| format!("ringcast server: {e}"))?,
            bind().map_err(|e| format!("sockets: {e}"))?,
        ),
    };
    let one_stream = {
        let _g = rt.enter();
        one_stream::Server::start(daemon.handle(), server_id, udp, net_limits)?
    };
    let tcp = tcp_tls::Server::start(daemon.handle(), server_id, tcp)?;
    Ok(Servers {
        ringcast,
        one_stream,
        tcp,
    })
}

/// One run of `v` against `t`, the client on this thread (a runtime of its own, so that it
/// can run on a thread in namespace B).
fn client_run(
    v: Variant,
    t: Target,
    dur: Duration,
    main_rt: Option<&tokio::runtime::Runtime>,
) -> Result<RunResult, String> {
    let own;
    let rt = match main_rt {
        Some(rt) => rt,
        None => {
            own = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            &own
        }
    };
    match v {
        Variant::Alone | Variant::Ringcast => rt.block_on(measure_session(
            t.ringcast,
            t.identity,
            t.trust,
            v.flood(),
            dur,
        )),
        Variant::OneStream => {
            rt.block_on(one_stream::measure(t.one_stream, t.identity, t.trust, dur))
        }
        Variant::TcpTls => tcp_tls::measure(t.tcp, t.server_cert, dur),
    }
}

/// Aggregated figures of one cell (period, condition, variant).
#[derive(Debug, Clone, Copy)]
struct Cell {
    p50: f64,
    p99: f64,
    max: f64,
    received: usize,
    lost: u64,
    late: usize,
    flood_mbps: f64,
}

fn aggregate(runs: &[RunResult], c: Condition) -> Cell {
    let mut all: Vec<f64> = runs.iter().flat_map(|r| r.lat_ms.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let deadline = c.one_way_ms() + PLAYOUT_MARGIN_MS;
    let bytes: u64 = runs.iter().map(|r| r.flood_bytes).sum();
    let secs: f64 = runs.iter().map(|r| r.secs).sum();
    Cell {
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or(f64::NAN),
        received: all.len(),
        lost: runs.iter().map(|r| r.skipped).sum(),
        late: all.iter().filter(|&&l| l > deadline).count(),
        flood_mbps: bytes as f64 / 1e6 / secs.max(1e-9),
    }
}

fn run(opts: &Options) -> Result<Outcome, String> {
    opts.check_settings(&["period_ms", "secs", "congestion"])?;
    let congestion: transport_quic::proto::Congestion =
        match opts.settings.iter().rev().find(|(k, _)| k == "congestion") {
            Some((_, v)) => v
                .parse()
                .map_err(|e| format!("--set congestion={v}: {e}"))?,
            None => Default::default(),
        };
    let limits = transport_quic::proto::Limits {
        congestion,
        ..Default::default()
    };
    let periods: Vec<u32> = match opts.setting_usize("period_ms")? {
        Some(10) => vec![10],
        Some(2) => vec![2],
        Some(p) => return Err(format!("--set period_ms={p}: 10 or 2")),
        None if opts.quick => vec![10],
        None => vec![10, 2],
    };
    let reps = opts.reps.unwrap_or(if opts.quick { 1 } else { 2 });
    let dur = match opts.setting_usize("secs")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(_) => return Err("--set secs must be > 0".into()),
        None if opts.quick => Duration::from_millis(1500),
        None => Duration::from_millis(2500),
    };
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
        opus: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let daemon = Daemon::start(cfg.clone()).map_err(|e| format!("ringcastd: {e}"))?;
    // The identity ringcastd's server uses (created by the first NetServer): the other
    // servers present the same certificate.
    let (server_id, _) = transport_quic::tls::Identity::load_or_create(
        &cfg.state_dir,
        "server",
        "ringcastd@bench",
        &["localhost".to_owned()],
    )
    .map_err(|e| format!("server identity: {e}"))?;
    let server_cert = server_id.certs[0].to_vec();
    // ringcastd serves only the clients its authorization file or local grants name, on
    // loopback too: the bench's client is named in the file.
    let authz = dir.join("authorized_clients");
    let identity = crate::procs::authorized_client(&dir.join("client"), &authz, "all")?;
    let local = start_servers(
        &rt,
        &daemon,
        NetConfig {
            listen: "127.0.0.1:0".parse().expect("valid"),
            identity_dir: cfg.state_dir.clone(),
            authorized_clients: authz,
            client_ca: None,
            limits: limits.clone(),
        },
        &server_id,
        || {
            Ok((
                transport_quic::endpoint::udp_socket("127.0.0.1:0".parse().expect("valid"))?,
                TcpListener::bind("127.0.0.1:0")?,
            ))
        },
        None,
    )?;
    let local_target = Target {
        ringcast: local.ringcast.local_addr().to_string(),
        one_stream: local.one_stream.addr().to_string(),
        tcp: local.tcp.addr(),
        identity: Some(identity),
        trust: Trust::KnownHosts(dir.join("known_hosts")),
        server_cert: server_cert.clone(),
    };

    let mut notes = Vec::new();
    let lossy = match setup_lossy(&rt, &daemon, &cfg, &server_id, &dir, &limits) {
        Ok(l) => Some(l),
        Err(e) => {
            notes.push(format!("lossy conditions skipped: {e}"));
            eprintln!("c: lossy conditions skipped: {e}");
            None
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let flood_on = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU32::new(devices::MAX_FRAMES));
    let audio = devices::start_audio(&socket, frames.clone(), stop.clone())?;
    let flood = devices::start_flood(&socket, flood_on.clone(), stop.clone())?;

    let mut conditions = vec![Condition::Loopback];
    if lossy.is_some() {
        conditions.extend([Condition::Lossy1, Condition::Lossy3]);
    }
    type Key = (u32, Condition, Variant);
    let mut results: Vec<(Key, Vec<RunResult>)> = Vec::new();
    let mut failure = None;
    'all: for &period in &periods {
        frames.store(RATE / 1000 * period, Ordering::Relaxed);
        for rep in 0..reps {
            for &c in &conditions {
                if let Some(l) = &lossy {
                    l.link.set_loss_both(c.loss_pct());
                }
                for &v in &Variant::ALL {
                    eprintln!(
                        "c: {period} ms periods, rep {}/{reps}, {} {}",
                        rep + 1,
                        c.name(),
                        v.name()
                    );
                    flood_on.store(v.flood(), Ordering::Relaxed);
                    let r = match (c, &lossy) {
                        (Condition::Loopback, _) => {
                            client_run(v, local_target.clone(), dur, Some(&rt))
                        }
                        (_, Some(l)) => {
                            let t = l.target.clone();
                            l.link
                                .run_in_b(move || client_run(v, t, dur, None))
                                .map_err(|e| e.to_string())
                                .and_then(|r| r)
                        }
                        (_, None) => unreachable!("lossy conditions need the link"),
                    };
                    flood_on.store(false, Ordering::Relaxed);
                    match r {
                        Ok(r) => {
                            let a = aggregate(std::slice::from_ref(&r), c);
                            eprintln!(
                                "c:   {} periods, p50 {:.2} ms, p99 {:.2} ms, lost {}, \
                                 late {}, flood {:.2} MB/s",
                                a.received, a.p50, a.p99, a.lost, a.late, a.flood_mbps
                            );
                            let key = (period, c, v);
                            match results.iter_mut().find(|(k, _)| *k == key) {
                                Some((_, list)) => list.push(r),
                                None => results.push((key, vec![r])),
                            }
                        }
                        Err(e) => {
                            failure = Some(format!("{period} ms {} {}: {e}", c.name(), v.name()));
                            break 'all;
                        }
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (pushed, refused) = audio.join().unwrap_or((0, 0));
    let _ = flood.join();
    let link_stats = lossy.as_ref().map(|l| (l.link.stats(), l.tcp_cc.clone()));
    if let Some(l) = lossy {
        rt.block_on(l.servers.shutdown());
        drop(l.link);
    }
    rt.block_on(local.shutdown());
    daemon.shutdown();
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(f) = failure {
        return Err(f);
    }

    let cells: Vec<(Key, Cell)> = results
        .iter()
        .map(|(k, runs)| (*k, aggregate(runs, k.1)))
        .collect();
    let cell = |k: Key| cells.iter().find(|(x, _)| *x == k).map(|(_, c)| *c);
    let mut out = Outcome::default();
    for &((period, c, v), a) in &cells {
        let name = format!("{}@{}:{period}ms", v.name(), c.name());
        let mut m = |metric: &str, value: f64, unit: &str| {
            out.measurements
                .push(Measurement::new(&name, metric, value, unit))
        };
        m("p50", a.p50, "ms");
        m("p99", a.p99, "ms");
        m("max", a.max, "ms");
        m("received", a.received as f64, "periods");
        m("lost", a.lost as f64, "periods");
        m("late", a.late as f64, "periods");
        m("underruns", (a.late as u64 + a.lost) as f64, "periods");
        if v.flood() {
            m("flood_read", a.flood_mbps, "MB/s");
            if let Some(f) = cell((period, c, Variant::Alone)) {
                m("p99_vs_floor", a.p99 / f.p99, "x");
            }
        }
        if v == Variant::Ringcast {
            if let Some(o) = cell((period, c, Variant::OneStream)) {
                m("p99_vs_one_stream", a.p99 / o.p99, "x");
            }
        }
    }
    notes.push(format!(
        "audio producer: {pushed} periods pushed, {refused} refused by a full ring; \
         {reps} repetition(s) of {:.1} s per cell after {} ms of warm-up; p50/p99 over all \
         periods of the repetitions; late = arrival after stamp + one-way delay + {} ms \
         (jitter buffer), underruns = late + lost",
        dur.as_secs_f64(),
        WARMUP.as_millis(),
        PLAYOUT_MARGIN_MS
    ));
    let cc = |path: &str| {
        std::fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
    };
    let mut tcp_note = format!(
        "tcp-tls: TCP congestion control {} on loopback",
        cc("/proc/sys/net/ipv4/tcp_congestion_control")
    );
    if let Some((s, tcp_cc)) = link_stats {
        tcp_note += &format!(", {tcp_cc} in namespace A (the flood's sender)");
        notes.push(format!(
            "lossy link (both lossy conditions): A->B {} packets, {} lost; B->A {} packets, {} lost",
            s.a_to_b.received, s.a_to_b.dropped_loss, s.b_to_a.received, s.b_to_a.dropped_loss
        ));
    }
    notes.push(tcp_note);
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    for &period in &periods {
        let rc = |c| cell((period, c, Variant::Ringcast));
        let floor = |c| cell((period, c, Variant::Alone));
        let one = |c| cell((period, c, Variant::OneStream));
        if let (Some(r), Some(f)) = (rc(Condition::Loopback), floor(Condition::Loopback)) {
            notes.push(format!(
                "{period} ms, loopback+flood: p99 <= 10 ms: {:.2} ms ({}); vs floor {:.2}x",
                r.p99,
                mark(r.p99 <= 10.0),
                r.p99 / f.p99
            ));
        }
        if let (Some(r), Some(f)) = (rc(Condition::Lossy1), floor(Condition::Lossy1)) {
            let u = r.late as u64 + r.lost;
            let mut line = format!(
                "{period} ms, 1% loss+flood: p50 <= 20 ms: {:.2} ({}); p99 <= 1.1x floor: \
                 {:.2}x ({}); underruns = 0: {u} ({})",
                r.p50,
                mark(r.p50 <= 20.0),
                r.p99 / f.p99,
                mark(r.p99 <= 1.1 * f.p99),
                mark(u == 0)
            );
            if let Some(o) = one(Condition::Lossy1) {
                line += &format!(
                    "; p99 <= 0.05x one-stream: {:.3}x ({})",
                    r.p99 / o.p99,
                    mark(r.p99 <= 0.05 * o.p99)
                );
            }
            notes.push(line);
        }
        if let Some(r) = rc(Condition::Lossy3) {
            notes.push(format!(
                "{period} ms, 3% loss+flood: p99 <= 150 ms: {:.2} ms ({})",
                r.p99,
                mark(r.p99 <= 150.0)
            ));
        }
    }
    out.notes = notes;
    Ok(out)
}

struct Lossy {
    link: LossyLink,
    servers: Servers,
    target: Target,
    /// TCP's congestion control in namespace A (the sender of the tcp-tls flood).
    tcp_cc: String,
}

fn setup_lossy(
    rt: &tokio::runtime::Runtime,
    daemon: &Daemon,
    cfg: &Config,
    server_id: &transport_quic::tls::Identity,
    dir: &Path,
    limits: &transport_quic::proto::Limits,
) -> Result<Lossy, String> {
    let link = LossyLink::create(LinkSpec {
        loss_pct: 1.0,
        delay_ms: LOSSY_DELAY_MS,
        jitter_ms: 0.0,
        rate_mbit: 0.0,
        seed: 3,
    })
    .map_err(|e| format!("LossyLink: {e}"))?;
    let authz = dir.join("authorized_clients");
    let identity = crate::procs::authorized_client(&dir.join("client"), &authz, "all")?;
    let a = link.addr_a();
    let listen = SocketAddr::from((a, 0));
    let servers = start_servers(
        rt,
        daemon,
        NetConfig {
            listen,
            identity_dir: cfg.state_dir.clone(),
            authorized_clients: authz,
            client_ca: None,
            limits: limits.clone(),
        },
        server_id,
        move || {
            Ok((
                transport_quic::endpoint::udp_socket(listen)?,
                TcpListener::bind(listen)?,
            ))
        },
        Some(&link),
    )?;
    let target = Target {
        ringcast: servers.ringcast.local_addr().to_string(),
        one_stream: servers.one_stream.addr().to_string(),
        tcp: servers.tcp.addr(),
        identity: Some(identity),
        trust: Trust::KnownHosts(dir.join("known_hosts_lossy")),
        server_cert: server_id.certs[0].to_vec(),
    };
    let tcp_cc = link
        .run_in_a(|| std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control"))
        .ok()
        .and_then(|r| r.ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
    Ok(Lossy {
        link,
        servers,
        target,
        tcp_cc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_counts_gaps_and_skips_and_the_flood_after_the_warm_up() {
        let flood = Arc::new(AtomicU64::new(1000));
        let mut r = Recorder::with_warmup(Duration::ZERO, Duration::from_secs(60), flood.clone());
        let now = mono_ns();
        assert!(!r.period(7, now, 0));
        flood.fetch_add(500, Ordering::Relaxed);
        // 8 and 9 missing, then the server reports 2 dropped before 12 (10 and 11).
        assert!(!r.period(10, now, 0));
        assert!(!r.period(12, now, 2));
        let out = r.finish();
        assert_eq!(out.lat_ms.len(), 3);
        assert_eq!(out.skipped, 2 + 1 + 2);
        assert_eq!(out.flood_bytes, 500);
        assert!(out.lat_ms.iter().all(|&l| l >= 0.0));
    }

    #[test]
    fn recorder_ends_the_run_after_its_duration() {
        let mut r = Recorder::with_warmup(Duration::ZERO, Duration::ZERO, Default::default());
        assert!(r.period(1, mono_ns(), 0));
    }

    #[test]
    fn late_periods_are_those_after_one_way_delay_plus_the_margin() {
        let run = RunResult {
            lat_ms: vec![5.0, 49.0, 50.5, 51.0, 39.0, 41.0],
            skipped: 3,
            flood_bytes: 2_000_000,
            secs: 2.0,
        };
        let lossy = aggregate(std::slice::from_ref(&run), Condition::Lossy1);
        assert_eq!((lossy.late, lossy.lost, lossy.received), (2, 3, 6));
        assert_eq!(lossy.max, 51.0);
        assert_eq!(lossy.flood_mbps, 1.0);
        let local = aggregate(std::slice::from_ref(&run), Condition::Loopback);
        assert_eq!(local.late, 4);
        // Pooled over repetitions.
        let both = aggregate(&[run.clone(), run], Condition::Lossy3);
        assert_eq!((both.late, both.lost, both.received), (4, 6, 12));
        assert_eq!(both.p50, 49.0);
    }
}
