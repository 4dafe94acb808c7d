//! docs/benchmarks.md §D: scale. One `ringcastd` process with 1 to 512 consoles and 1 to 100
//! clients.
//!
//! * **Idle and memory.** N consoles (64 KiB output rings, `--journal-window 64K`) register
//!   from this process (`testbed::devices::FakeConsole`, the plugin's registration) and each
//!   writes 128 KiB (its RAM window fills); then nothing happens for a window. ringcastd's CPU time and context
//!   switches over the window (from `/proc`) show whether it polls; its RSS beyond a fresh
//!   daemon's, divided by N, is the cost of one device. Baseline: the same with 1 device.
//! * **A stalled client.** One console written at a steady 256 KB/s (2560 B every 10 ms)
//!   while K clients follow it over QUIC, each on its own connection; each chunk's latency
//!   is from just before the producer's write to its arrival at a follower (one clock, this
//!   process). Then the same with a `ringcast capture --follow` process attached and
//!   stopped with SIGSTOP (it neither reads nor acknowledges). Baseline: the same K without
//!   the stalled client. The guest's side: the producer's longest write (it blocks when the
//!   ring is full) and, writing 512 MiB flat out (quick 128 MiB), its throughput with and
//!   without the stalled client.
//!
//! Every follower must receive every byte of the pattern, in order, or the run fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{ConsoleItem, Mode, Session, StartAt, Trust};
use testbed::devices::FakeConsole;

use crate::procs::{self, bins, Bins, Ringcastd};
use crate::report::{Comparison, Measurement, Outcome};
use crate::scenario::{Options, Scenario};

/// The scenario entry.
pub const SCENARIO: Scenario = Scenario {
    key: "d",
    title: "D. Scale: idle cost and memory per device, a stalled client among 100 followers",
    about: "Idle: 1, 64 and 512 consoles (quick: 1 and 64) registered to one ringcastd \
            (--journal-window 64K), 128 KiB written to each, then ringcastd's CPU %, wakeups/s and RSS per device over an idle \
            window (5 s; quick 2 s), baseline 1 device. Stall: one console at 256 KB/s \
            followed by 1 and 100 clients (quick 1 and 20), with and without a stopped \
            `ringcast capture --follow` (SIGSTOP), chunk latency p50/p99 and the producer's \
            longest write; and the producer writing 512 MiB flat out (quick 128 MiB) with and \
            without the stopped client. \
            Knobs: --set devices=N (one idle size), followers=K (one follower count), \
            secs=S (each paced cell). Full: about 1 min; quick: about 30 s.",
    run,
};

/// The pattern every console carries: byte at offset `o`.
fn pattern(o: u64) -> u8 {
    (o % 251) as u8
}

/// Fills `buf` with the pattern from `offset` (copies from one period-aligned table).
fn fill(buf: &mut [u8], offset: u64) {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..(1u64 << 20) + 251).map(pattern).collect());
    for (i, part) in buf.chunks_mut(1 << 20).enumerate() {
        let start = ((offset + (i as u64) * (1 << 20)) % 251) as usize;
        part.copy_from_slice(&table[start..start + part.len()]);
    }
}

fn run(opts: &Options) -> Result<Outcome, String> {
    opts.check_settings(&["devices", "followers", "secs"])?;
    let bins = bins()?;
    raise_fd_limit();
    let dir = opts.work_dir.join("d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut o = Outcome::default();

    let sizes: Vec<usize> = match opts.setting_usize("devices")? {
        Some(n) => vec![1, n],
        None if opts.quick => vec![1, 64],
        None => vec![1, 64, 512],
    };
    let window = if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    for (i, &n) in sizes.iter().enumerate() {
        if i > 0 && n == sizes[0] {
            continue;
        }
        eprintln!("d: {n} idle device(s), {:?} window", window);
        idle(&bins, &dir.join(format!("idle-{n}")), n, window, &mut o)?;
        if i > 0 {
            o.comparisons.push(Comparison {
                variant: format!("devices-{n}"),
                baseline: "devices-1".into(),
            });
        }
    }

    let counts: Vec<usize> = match opts.setting_usize("followers")? {
        Some(k) => vec![k.max(1)],
        None if opts.quick => vec![1, 20],
        None => vec![1, 100],
    };
    let secs = match opts.setting_usize("secs")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(_) => return Err("--set secs must be > 0".into()),
        None if opts.quick => Duration::from_secs(2),
        None => Duration::from_secs(5),
    };
    for &k in &counts {
        for stalled in [false, true] {
            let name = cell_name(k, stalled);
            eprintln!("d: {name}: {k} follower(s) for {secs:?}");
            let sub = dir.join(&name);
            let r = paced(&bins, &sub, k, stalled, secs)?;
            eprintln!(
                "d:   latency p50 {:.2} ms, p99 {:.2} ms, longest write {:.2} ms",
                r.p50_ms, r.p99_ms, r.max_write_ms
            );
            o.measurements
                .push(Measurement::new(&name, "latency_p50", r.p50_ms, "ms"));
            o.measurements
                .push(Measurement::new(&name, "latency_p99", r.p99_ms, "ms"));
            o.measurements.push(Measurement::new(
                &name,
                "longest_write",
                r.max_write_ms,
                "ms",
            ));
            cleanup(opts, &sub);
        }
        o.comparisons.push(Comparison {
            variant: cell_name(k, true),
            baseline: cell_name(k, false),
        });
        if k != counts[0] {
            o.comparisons.push(Comparison {
                variant: cell_name(k, false),
                baseline: cell_name(counts[0], false),
            });
        }
    }

    let flood_bytes: u64 = if opts.quick { 128 << 20 } else { 512 << 20 };
    for stalled in [false, true] {
        let name = if stalled { "flood+stalled" } else { "flood" };
        eprintln!(
            "d: {name}: producer writes {} MiB flat out, 1 follower",
            flood_bytes >> 20
        );
        let sub = dir.join(name);
        let mbps = flood(&bins, &sub, stalled, flood_bytes)?;
        eprintln!("d:   {mbps:.1} MB/s");
        o.measurements
            .push(Measurement::new(name, "producer_throughput", mbps, "MB/s"));
        cleanup(opts, &sub);
    }
    o.comparisons.push(Comparison {
        variant: "flood+stalled".into(),
        baseline: "flood".into(),
    });
    o.notes.push(
        "targets: idle CPU ~0 (no polling); RSS per device <= 1 MiB beyond the 64 KiB journal \
         window; with a stalled client, latency and producer throughput ratios ~1"
            .into(),
    );
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(o)
}

fn cell_name(k: usize, stalled: bool) -> String {
    if stalled {
        format!("followers-{k}+stalled")
    } else {
        format!("followers-{k}")
    }
}

fn cleanup(opts: &Options, dir: &Path) {
    if !opts.keep {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Each device holds 7 descriptors here (two memfds, four eventfds, the registration).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(max) = l.maximum {
        l.current = Some(max);
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Registers `n` consoles, writes 128 KiB to each, then measures ringcastd over `window`.
fn idle(
    bins: &Bins,
    dir: &Path,
    n: usize,
    window: Duration,
    o: &mut Outcome,
) -> Result<(), String> {
    let d = procs::start_ringcastd(bins, dir, &["--journal-window", "64K"])?;
    let pid = d.pid();
    // A fresh daemon settles (its runtime threads start) before the base is read.
    std::thread::sleep(Duration::from_millis(300));
    let base = procs::memory(pid);
    let mut devices = Vec::with_capacity(n);
    // Twice the journal window, so that each device's RAM window is full.
    let mut data = vec![0u8; 128 * 1024];
    fill(&mut data, 0);
    for i in 0..n {
        let mut c = FakeConsole::try_new(&d.socket(), "vmd", &format!("serial{i}"), 1, 64 * 1024)?;
        c.try_connect()
            .map_err(|e| format!("registering device {i} of {n}: {e}"))?;
        devices.push(c);
    }
    for (i, c) in devices.iter_mut().enumerate() {
        c.try_write_all(&data, Duration::from_secs(10))
            .map_err(|e| format!("device {i}: {e}"))?;
    }
    // Everything drained (the rings are empty) before the window starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while devices
        .iter_mut()
        .any(|c| c.tx.free().map_or(true, |f| f < 64 * 1024))
    {
        if Instant::now() > deadline {
            return Err("ringcastd did not drain every ring within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (i, c) in devices.iter_mut().enumerate() {
        if !c.attached() {
            return Err(format!("ringcastd dropped device {i} of {n}"));
        }
    }
    let cpu0 = procs::cpu_s(pid);
    let wake0 = procs::wakeups(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = procs::cpu_s(pid) - cpu0;
    let wakeups = procs::wakeups(pid).saturating_sub(wake0);
    let mem = procs::memory(pid);
    let name = format!("devices-{n}");
    let per = |now: u64, before: u64| now.saturating_sub(before) as f64 / n as f64;
    eprintln!(
        "d:   CPU {:.3} %, {:.1} wakeups/s, RSS {} KiB (base {} KiB), {:.0} KiB per device \
         ({:.0} anon, {:.0} shared)",
        100.0 * cpu / secs,
        wakeups as f64 / secs,
        mem.rss,
        base.rss,
        per(mem.rss, base.rss),
        per(mem.anon, base.anon),
        per(mem.shmem, base.shmem)
    );
    for (metric, value, unit) in [
        ("idle_cpu", 100.0 * cpu / secs, "%"),
        ("idle_wakeups", wakeups as f64 / secs, "1/s"),
        ("rss", mem.rss as f64, "KiB"),
        ("rss_per_device", per(mem.rss, base.rss), "KiB"),
        ("anon_per_device", per(mem.anon, base.anon), "KiB"),
        ("shmem_per_device", per(mem.shmem, base.shmem), "KiB"),
    ] {
        o.measurements
            .push(Measurement::new(&name, metric, value, unit));
    }
    drop(devices);
    Ok(())
}

/// Figures of one paced cell.
struct Paced {
    p50_ms: f64,
    p99_ms: f64,
    max_write_ms: f64,
}

const CHUNK: usize = 2560;
const TICK: Duration = Duration::from_millis(10);
const PRELUDE: u64 = 4096;
const VM: &str = "vmd";
const DEV: &str = "serial0";

/// A `ringcast capture --follow` process stopped once it has the prelude.
struct Stalled {
    child: Child,
}

impl Stalled {
    fn start(bins: &Bins, d: &Ringcastd, dir: &Path) -> Result<Stalled, String> {
        let out = dir.join("stalled.out");
        let child = Command::new(&bins.ringcast)
            .args([
                "capture",
                &format!("{VM}/{DEV}"),
                "--follow",
                "-s",
                &d.server(),
            ])
            .arg("-o")
            .arg(&out)
            .arg("--known-hosts")
            .arg(dir.join("stalled-known_hosts"))
            .arg("--identity-dir")
            .arg(dir.join("stalled-id"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stalled.err")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("ringcast capture: {e}"))?;
        let mut s = Stalled { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&out).map_or(0, |m| m.len()) < PRELUDE {
            if let Ok(Some(st)) = s.child.try_wait() {
                let err = std::fs::read_to_string(dir.join("stalled.err")).unwrap_or_default();
                return Err(format!("the capture to be stalled exited ({st}): {err}"));
            }
            if Instant::now() > deadline {
                return Err("the capture to be stalled got no prelude within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGSTOP) };
        Ok(s)
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // SAFETY: kill(2) on our own child's pid; a stopped process needs SIGCONT to die
        // from a pending SIGKILL on some kernels.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
        let _ = self.child.wait();
    }
}

/// The client identity `name` in `dir`: loaded when an earlier cell created it.
fn identity(dir: &Path, name: &str) -> Result<client::Identity, String> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if crt.exists() {
        return client::Identity::load(&crt, &key).map_err(|e| format!("{name}: {e}"));
    }
    testbed::kit::identity::try_client_identity(dir, name)
}

/// What followers share with the producer.
struct Shared {
    /// The identity the followers present (named in the authorization file).
    identity: client::Identity,
    /// Instant just before each paced chunk's write.
    sent: Mutex<Vec<Instant>>,
    /// Followers attached.
    attached: AtomicUsize,
    /// Set when the producer has written its last byte.
    done: AtomicBool,
    /// Bytes the producer wrote in total (prelude included), once done.
    total: AtomicU64,
}

/// One follower: attach at 0, check every byte, record each paced chunk's latency.
async fn follow(
    server: String,
    known_hosts: std::path::PathBuf,
    shared: Arc<Shared>,
) -> Result<Vec<f64>, String> {
    let session = Session::connect(
        &server,
        Some(shared.identity.clone()),
        Trust::KnownHosts(known_hosts),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let mut stream = session
        .attach_console(VM, DEV, Mode::Read, StartAt::Offset(0))
        .await
        .map_err(|e| format!("attach: {e}"))?;
    shared.attached.fetch_add(1, Ordering::SeqCst);
    let mut lat = Vec::new();
    let mut next = 0u64;
    let mut next_chunk = 0usize;
    let hard = Instant::now() + Duration::from_secs(120);
    loop {
        if shared.done.load(Ordering::SeqCst) && next >= shared.total.load(Ordering::SeqCst) {
            break;
        }
        let item = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        let item = match item {
            Err(_) if Instant::now() > hard => return Err(format!("stuck at {next}")),
            Err(_) => continue,
            Ok(i) => i.map_err(|e| format!("after {next} bytes: {e}"))?,
        };
        match item {
            Some(ConsoleItem::Chunk { offset, bytes }) => {
                let now = Instant::now();
                if offset != next {
                    return Err(format!("chunk at {offset}, expected {next}"));
                }
                if let Some(i) = bytes
                    .iter()
                    .enumerate()
                    .position(|(i, &b)| b != pattern(offset + i as u64))
                {
                    return Err(format!("wrong byte at {}", offset + i as u64));
                }
                next += bytes.len() as u64;
                let sent = shared.sent.lock().map_err(|_| "poisoned")?;
                while next_chunk < sent.len()
                    && PRELUDE + (next_chunk as u64 + 1) * CHUNK as u64 <= next
                {
                    lat.push((now - sent[next_chunk]).as_secs_f64() * 1e3);
                    next_chunk += 1;
                }
            }
            Some(ConsoleItem::Gap {
                offset,
                len,
                reason,
            }) => return Err(format!("gap of {len} at {offset}: {reason:?}")),
            None => return Err(format!("stream ended after {next} bytes")),
        }
    }
    stream.detach().await;
    session.close().await;
    Ok(lat)
}

/// The producer's side of a cell, on its own thread.
fn produce_paced(c: &mut FakeConsole, shared: &Shared, secs: Duration) -> Result<f64, String> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = PRELUDE;
    let mut max_write = 0f64;
    let t0 = Instant::now();
    let mut tick = t0;
    while t0.elapsed() < secs {
        fill(&mut buf, offset);
        let t = Instant::now();
        shared.sent.lock().map_err(|_| "poisoned")?.push(t);
        c.try_write_all(&buf, Duration::from_secs(10))?;
        max_write = max_write.max(t.elapsed().as_secs_f64() * 1e3);
        offset += CHUNK as u64;
        tick += TICK;
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    shared.total.store(offset, Ordering::SeqCst);
    shared.done.store(true, Ordering::SeqCst);
    Ok(max_write)
}

/// What a stall cell runs: a fresh ringcastd, its console with the prelude written, the
/// stopped client if asked for, and the followers' runtime.
struct Cell {
    d: Ringcastd,
    c: FakeConsole,
    _stalled: Option<Stalled>,
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
}

impl Cell {
    fn start(
        bins: &Bins,
        dir: &Path,
        args: &[&str],
        ring: u64,
        stalled: bool,
        threads: usize,
    ) -> Result<Cell, String> {
        // ringcastd serves only the clients an authorization file names, on loopback too:
        // the followers and the stalled capture (the CLI's `client` identity) are named.
        let authz = dir.join("authorized_clients");
        let follower = identity(&dir.join("follower-id"), "follower")?;
        let capture = identity(&dir.join("stalled-id"), "client")?;
        std::fs::write(
            &authz,
            format!(
                "{} */* read\n{} */* read\n",
                follower.fingerprint(),
                capture.fingerprint()
            ),
        )
        .map_err(|e| format!("{}: {e}", authz.display()))?;
        let authz = authz.to_str().ok_or("the bench directory is not UTF-8")?;
        let mut all: Vec<&str> = vec!["--authorized-clients", authz];
        all.extend_from_slice(args);
        let d = procs::start_ringcastd(bins, dir, &all)?;
        let mut c = FakeConsole::try_new(&d.socket(), VM, DEV, 1, ring)?;
        c.try_connect()?;
        let mut prelude = vec![0u8; PRELUDE as usize];
        fill(&mut prelude, 0);
        c.try_write_all(&prelude, Duration::from_secs(10))?;
        let _stalled = if stalled {
            Some(Stalled::start(bins, &d, dir)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            identity: follower,
            sent: Mutex::new(Vec::new()),
            attached: AtomicUsize::new(0),
            done: AtomicBool::new(false),
            total: AtomicU64::new(0),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Cell {
            d,
            c,
            _stalled,
            shared,
            rt,
        })
    }
}

fn paced(
    bins: &Bins,
    dir: &Path,
    k: usize,
    stalled: bool,
    secs: Duration,
) -> Result<Paced, String> {
    let Cell {
        d,
        mut c,
        _stalled,
        shared,
        rt,
    } = Cell::start(bins, dir, &[], 256 * 1024, stalled, 2)?;
    // The known_hosts pin is written on first use: one connection first, then the others
    // read the pinned file.
    let kh = dir.join("known_hosts");
    let tasks: Vec<_> = (0..k)
        .map(|i| {
            let (server, kh, shared) = (d.server(), kh.clone(), shared.clone());
            rt.spawn(async move {
                if i > 0 {
                    while shared.attached.load(Ordering::SeqCst) == 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                follow(server, kh, shared).await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.attached.load(Ordering::SeqCst) < k {
        if Instant::now() > deadline || tasks.iter().any(|t| t.is_finished()) {
            let why = tasks
                .into_iter()
                .filter(|t| t.is_finished())
                .map(|t| {
                    rt.block_on(t)
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map(drop))
                })
                .find_map(Result::err)
                .unwrap_or_else(|| "timed out".into());
            return Err(format!(
                "{} of {k} followers attached: {why}",
                shared.attached.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let max_write = std::thread::scope(|s| {
        s.spawn(|| produce_paced(&mut c, &shared, secs))
            .join()
            .map_err(|_| "the producer panicked".to_string())?
    })?;
    let mut all = Vec::new();
    for t in tasks {
        let lat = rt
            .block_on(t)
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("follower: {e}"))?;
        all.extend(lat);
    }
    if all.is_empty() {
        return Err("no chunk latency measured".into());
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    Ok(Paced {
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_write_ms: max_write,
    })
}

/// The producer writes `bytes` flat out (64 KiB writes) while one follower reads; MB/s
/// written. The retention holds it all, so the follower, slower than the producer, still
/// gets every byte.
fn flood(bins: &Bins, dir: &Path, stalled: bool, bytes: u64) -> Result<f64, String> {
    let Cell {
        d,
        mut c,
        _stalled,
        shared,
        rt,
    } = Cell::start(bins, dir, &["--retention", "4G"], 1 << 20, stalled, 1)?;
    let task = rt.spawn(follow(d.server(), dir.join("known_hosts"), shared.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.attached.load(Ordering::SeqCst) == 0 {
        if Instant::now() > deadline || task.is_finished() {
            return Err("the follower did not attach".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = PRELUDE;
    let t0 = Instant::now();
    while offset < PRELUDE + bytes {
        fill(&mut buf, offset);
        c.try_write_all(&buf, Duration::from_secs(10))?;
        offset += buf.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    shared.total.store(offset, Ordering::SeqCst);
    shared.done.store(true, Ordering::SeqCst);
    rt.block_on(task)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("follower: {e}"))?;
    Ok((offset - PRELUDE) as f64 / 1e6 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_writes_the_pattern_at_any_offset_and_length() {
        for (offset, len) in [
            (0u64, 1usize),
            (250, 3),
            (4096, 2560),
            (1 << 20, (1 << 20) + 7),
        ] {
            let mut buf = vec![0u8; len];
            fill(&mut buf, offset);
            for (i, &b) in buf.iter().enumerate() {
                assert_eq!(b, pattern(offset + i as u64), "offset {offset} + {i}");
            }
        }
    }
}
