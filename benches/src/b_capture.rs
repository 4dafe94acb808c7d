//! Scenario B (docs/benchmarks.md §B): console capture throughput end to end on loopback.
//!
//! Pipeline under test: `fake-qemu` (a process writing the guest stream through the real
//! plugin, `ring=4M` unless `--plugin-opts` says otherwise) → shared-memory ring →
//! `ringcastd` (a process, journal spooled to disk as users run it, QUIC on loopback) →
//! the `client` library in this process → sink. Variants, interleaved per repetition:
//!
//! * `ringcast`: the client discards (network path).
//! * `ringcast-file`: the client writes a file; the file is checked afterwards, untimed.
//!
//! The producer writes zeros, the input every baseline reads from `/dev/zero`; the client
//! checks that every chunk starts where the previous one ended, that every byte is zero
//! and that the count is exact. `--set stream=guest` writes the pseudo-random guest stream
//! instead, sha256-checked at both ends: generating and hashing it cost the producer and
//! the client CPU the baselines do not spend (the client's hashing time is subtracted from
//! its CPU, but on two cores it still slows the pipeline).
//! * `raw-quinn`: the ceiling: an in-process quinn server and client (one thread each,
//!   one stream, the crypto and transport configuration of transport-quic, the server
//!   sending as ringcastd does),
//!   no ring, no sidecar.
//! * `socat-tcp`, `openssl-tls13-aes128gcm`, `ssh-aes128gcm`: [`crate::baselines`].
//!
//! Throughput is bytes / (last byte received − first byte received). CPU-seconds per GB:
//! ringcastd and the producer from the kernel's accounting (`/proc/<pid>/stat`, and the
//! producer's rusage when reaped), the in-process client or quinn pair from `getrusage`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{ConsoleItem, Mode, Session, StartAt, Trust};
use sha2::{Digest, Sha256};

use transport_quic::proto::Congestion;

use crate::baselines::{self, Baseline, Place};

mod lossy;
use crate::procs::{self, bins, Bins, Ringcastd};
use crate::report::{median, Comparison, Measurement, Outcome};
use crate::scenario::{Options, Scenario};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    key: "b",
    title: "B. Console capture throughput, end to end (ringcast vs TLS/TCP, ssh, raw quinn)",
    about: "fake-qemu writes N bytes of the guest stream through the real plugin (ring=4M) \
            into ringcastd (a process, journal on disk), which serves them over QUIC on \
            loopback to the client library in this process (1 GiB; --quick: 64 MiB). \
            Variants, interleaved, 3 repetitions (--quick: 1), medians: ringcast (client \
            discards), ringcast-file (client writes a file, checked after), \
            raw-quinn (in-process quinn pair, one stream, transport-quic's configuration), \
            socat-tcp, openssl-tls13-aes128gcm, ssh-aes128gcm, socat-tcp-file (benches/baselines). \
            MB/s and CPU-s/GB (all processes of the pipeline). Then B2: the same flood across \
            testbed's lossy link (1% loss, 10 ms each way; server in A, client in B) for 512 MiB or \
            30 s, one repetition unless --reps (--quick: 256 MiB or 10 s), ringcastd with each QUIC congestion controller vs \
            TLS 1.3 over TCP with cubic and with bbr. --set b=0 or --set b2=0 skips a part; \
            --set net_threads=N runs ringcastd with --net-threads N; --set write_batch=BYTES \
            sets ringcast-file's write size (default 1 MiB, as ringcast capture); --set congestion=NAME \
            sets the controller of ringcastd and raw quinn on loopback (B2 runs each). The producer writes zeros \
            (as the baselines read /dev/zero), checked for order, content and count; --set \
            stream=guest writes the pseudo-random guest stream, sha256-checked at both ends.",
    run,
};

const VM: &str = "bench";
const DEVICE: &str = "con0";
const SEED: u64 = 21;
const LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Ringcast,
    RingcastFile,
    RawQuinn,
    Base(Baseline),
    /// socat TCP, the receiver writing a file (the rival of `ringcast-file`).
    SocatFile,
}

impl Variant {
    const ALL: [Variant; 7] = [
        Variant::Ringcast,
        Variant::RawQuinn,
        Variant::Base(Baseline::OpensslTls13),
        Variant::RingcastFile,
        Variant::SocatFile,
        Variant::Base(Baseline::Ssh),
        Variant::Base(Baseline::SocatTcp),
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Ringcast => "ringcast",
            Variant::RingcastFile => "ringcast-file",
            Variant::RawQuinn => "raw-quinn",
            Variant::Base(b) => b.name(),
            Variant::SocatFile => "socat-tcp-file",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    mbps: f64,
    cpu_s_per_gb: f64,
    /// Split of the CPU (ringcast only): producer, ringcastd, client.
    split: [f64; 3],
    /// Bytes moved.
    bytes: u64,
}

fn rusage(who: i32) -> f64 {
    // SAFETY: getrusage writes one struct rusage into the zeroed value we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Where a ringcast run happens.
#[derive(Clone, Copy)]
struct Net<'a> {
    /// On the lossy link (ringcastd's server in namespace A, the client in B), else loopback.
    lossy: Option<&'a lossy::Ctx>,
    /// ringcastd's `--congestion`.
    congestion: Congestion,
    /// Stop this long after the first byte if not every byte has arrived.
    limit: Option<Duration>,
}

impl Net<'_> {
    /// Loopback with ringcastd's default controller.
    const LOOPBACK: Net<'static> = Net {
        lossy: None,
        congestion: Congestion::DEFAULT,
        limit: None,
    };
}

/// What the producer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// Zeros (as the baselines send), checked for content, order and count.
    Zeros,
    /// The pseudo-random guest stream of [`SEED`], sha256-checked.
    Guest,
}

fn payload(opts: &Options) -> Result<Payload, String> {
    match opts.settings.iter().rev().find(|(k, _)| k == "stream") {
        None => Ok(Payload::Zeros),
        Some((_, v)) if v == "zeros" => Ok(Payload::Zeros),
        Some((_, v)) if v == "guest" => Ok(Payload::Guest),
        Some((_, v)) => Err(format!("--set stream={v}: zeros or guest")),
    }
}

/// What the client saw.
struct Received {
    n: u64,
    secs: f64,
    hash: Sha256,
    hash_s: f64,
}

/// The client side of a run: connect, attach at offset 0, read until `bytes` have arrived
/// (or `limit` after the first), into `out` or checked (zeros) or hashed (guest stream).
async fn receive(
    server: String,
    identity: Option<client::Identity>,
    trust: Trust,
    bytes: u64,
    limit: Option<Duration>,
    out: Option<(PathBuf, usize)>,
    payload: Payload,
) -> Result<Received, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let session = loop {
        match Session::connect(&server, identity.clone(), trust.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(format!("connect: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut stream = loop {
        match session
            .attach_console(VM, DEVICE, Mode::Read, StartAt::Offset(0))
            .await
        {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(format!("attach: {e}")),
            // The device appears when the producer registers (well under a second);
            // retry slowly enough to stay under the server's request rate.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // As `ringcast capture` writes: the received chunks in 1 MiB vectored writes.
    let mut file = match &out {
        Some((p, batch)) => Some(client::ChunkWriter::with_batch(
            std::fs::File::create(p).map_err(|e| e.to_string())?,
            *batch,
        )),
        None => None,
    };
    let mut hash = Sha256::new();
    let mut hash_s = 0.0;
    let mut first: Option<Instant> = None;
    let mut n = 0u64;
    let hard = Instant::now() + LIMIT;
    while n < bytes {
        let stop = match (first, limit) {
            (Some(f), Some(l)) => (f + l).min(hard),
            _ => hard,
        };
        let item = match tokio::time::timeout_at(stop.into(), stream.next()).await {
            Ok(item) => item.map_err(|e| format!("after {n} bytes: {e}"))?,
            Err(_) if stop < hard => break,
            Err(_) => return Err(format!("timed out after {n} bytes")),
        };
        match item {
            Some(ConsoleItem::Chunk { offset, bytes: b }) => {
                first.get_or_insert_with(Instant::now);
                if offset != n {
                    return Err(format!("a chunk at offset {offset} after {n} bytes"));
                }
                let len = b.len() as u64;
                match &mut file {
                    Some(f) => f.push(b).map_err(|e| e.to_string())?,
                    None if payload == Payload::Zeros => {
                        if let Some(i) = b.iter().position(|&x| x != 0) {
                            return Err(format!("byte {} is not zero", n + i as u64));
                        }
                    }
                    None => {
                        let t = Instant::now();
                        hash.update(&b);
                        hash_s += t.elapsed().as_secs_f64();
                    }
                }
                n += len;
            }
            Some(ConsoleItem::Gap {
                offset,
                len,
                reason,
            }) => return Err(format!("gap of {len} at {offset}: {reason:?}")),
            None => return Err(format!("stream ended after {n} bytes")),
        }
    }
    if let Some(f) = file.take() {
        f.into_inner()
            .map_err(|e| e.to_string())?
            .sync_all()
            .map_err(|e| e.to_string())?;
    }
    let end = Instant::now();
    let secs = (end - first.unwrap_or(end)).as_secs_f64();
    stream.detach().await;
    session.close().await;
    Ok(Received {
        n,
        secs,
        hash,
        hash_s,
    })
}

/// Checks that the capture file holds exactly `n` zeros.
fn check_zero_file(path: &std::path::Path, n: u64) -> Result<(), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        if let Some(i) = buf[..k].iter().position(|&x| x != 0) {
            return Err(format!("capture file: byte {} is not zero", at + i as u64));
        }
        at += k as u64;
    }
    if at != n {
        return Err(format!("capture file holds {at} bytes, {n} were received"));
    }
    Ok(())
}

/// sha256 of the first `n` bytes fake-qemu writes for seed `seed`.
fn stream_prefix_sha256(seed: u64, n: u64) -> String {
    let mut g = testbed::stream::GuestStream::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..k]);
        h.update(&buf[..k]);
        left -= k as u64;
    }
    format!("{:x}", h.finalize())
}

/// One ringcast run: ringcastd + fake-qemu + the library client.
fn run_ringcast(
    bins: &Bins,
    opts: &Options,
    bytes: u64,
    to_file: bool,
    net: Net<'_>,
) -> Result<Run, String> {
    let dir = opts
        .work_dir
        .join(format!("b-{}", std::process::id()))
        .join(format!("run-{}", next_run()));
    let _ = std::fs::remove_dir_all(&dir);
    let payload = payload(opts)?;
    std::fs::create_dir_all(dir.join("client")).map_err(|e| e.to_string())?;
    let retention = format!("{}", bytes + (256 << 20));
    let mut args: Vec<std::ffi::OsString> = vec![
        "--retention".into(),
        retention.into(),
        "--congestion".into(),
        net.congestion.name().into(),
    ];
    if let Some(n) = opts.setting_usize("net_threads")? {
        args.extend(["--net-threads".into(), n.to_string().into()]);
    }
    // ringcastd serves only the clients its authorization file or local grants name, on
    // loopback too: the bench's client is named in a file of its own.
    let local_authz = dir.join("authorized_clients");
    let local_id = match net.lossy {
        None => Some(procs::authorized_client(
            &dir.join("client"),
            &local_authz,
            "read",
        )?),
        Some(_) => None,
    };
    let mut daemon = match net.lossy {
        // A fresh namespace: any port is free there.
        Some(l) => {
            args.extend(["--authorized-clients".into(), l.authz.clone().into()]);
            Ringcastd::with_launcher(
                &dir,
                &dir.join("state"),
                l.link.launcher_in_a(&bins.ringcastd),
            )
            .listen(&format!("{}:7878", l.link.addr_a()))
        }
        None => {
            args.extend(["--authorized-clients".into(), local_authz.clone().into()]);
            let bin = bins.ringcastd.clone();
            Ringcastd::with_launcher(
                &dir,
                &dir.join("state"),
                Box::new(move || Command::new(&bin)),
            )
        }
    }
    .args(&args)
    .rust_log("warn");
    daemon.try_spawn()?;
    let server = daemon.server();
    let sock = daemon.socket();
    let mut plugin_opts = format!("socket={}:ring=4M", sock.display());
    if let Some(extra) = &opts.plugin_opts {
        plugin_opts.push(':');
        plugin_opts.push_str(extra);
    }
    let children_before = rusage(libc::RUSAGE_CHILDREN);
    let mut producer = Command::new(&bins.fake_qemu)
        .args(["--vm", VM, "--opts", &plugin_opts])
        .arg(match payload {
            Payload::Zeros => format!("{DEVICE}=zero:{bytes}"),
            Payload::Guest => format!("{DEVICE}={SEED}:{bytes}"),
        })
        .env("RINGCAST_BACKEND_SO", &bins.plugin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("fake-qemu: {e}"))?;
    let out_path = dir.join("capture.out");
    let batch = opts
        .setting_usize("write_batch")?
        .unwrap_or(client::chunk_writer::BATCH);
    let out = to_file.then(|| (out_path.clone(), batch));
    let self_before = rusage(libc::RUSAGE_SELF);
    let d_pid = daemon.pid();
    let d_before = procs::cpu_s(d_pid);
    let limit = net.limit;
    let got = match net.lossy {
        None => {
            let trust = Trust::KnownHosts(dir.join("client/known_hosts"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(receive(server, local_id, trust, bytes, limit, out, payload))?
        }
        Some(l) => {
            let trust = Trust::KnownHosts(dir.join("client/known_hosts"));
            let id = l.identity.clone();
            l.link
                .run_in_b(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(receive(server, Some(id), trust, bytes, limit, out, payload))
                })
                .map_err(|e| e.to_string())??
        }
    };
    let client_cpu = rusage(libc::RUSAGE_SELF) - self_before - got.hash_s;
    let daemon_cpu = procs::cpu_s(d_pid) - d_before;
    let mut line = String::new();
    BufReader::new(producer.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let st = producer.wait().map_err(|e| e.to_string())?;
    let producer_cpu = rusage(libc::RUSAGE_CHILDREN) - children_before;
    if !st.success() {
        return Err(format!("fake-qemu: {st}"));
    }
    drop(daemon);
    let Received { n, secs, hash, .. } = got;
    if n != bytes && limit.is_none() {
        return Err(format!("ringcast: got {n} of {bytes} bytes"));
    }
    match payload {
        Payload::Zeros => {
            if !line.contains(" zeros ") {
                return Err(format!("fake-qemu printed {line:?}"));
            }
            if to_file {
                check_zero_file(&out_path, n)?;
            }
        }
        Payload::Guest => {
            let want = if n == bytes {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("sha256="))
                    .ok_or_else(|| format!("fake-qemu printed {line:?}"))?
                    .to_owned()
            } else {
                // Stopped by the time limit: the prefix must be the producer's.
                stream_prefix_sha256(SEED, n)
            };
            let have = if to_file {
                let mut h = Sha256::new();
                let mut f = std::fs::File::open(&out_path).map_err(|e| e.to_string())?;
                std::io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
                format!("{:x}", h.finalize())
            } else {
                format!("{:x}", hash.finalize())
            };
            if have != want {
                return Err(format!(
                    "ringcast: {n} bytes with sha256 {have}, expected {want}"
                ));
            }
        }
    }
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let gb = n as f64 / 1e9;
    let cpu = producer_cpu + daemon_cpu + client_cpu;
    Ok(Run {
        mbps: n as f64 / 1e6 / secs,
        cpu_s_per_gb: cpu / gb,
        split: [producer_cpu / gb, daemon_cpu / gb, client_cpu / gb],
        bytes: n,
    })
}

fn next_run() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The raw quinn ceiling: a server thread and a client thread, each on its own
/// current-thread runtime, one stream of `bytes`.
fn run_raw_quinn(opts: &Options, bytes: u64, congestion: Congestion) -> Result<Run, String> {
    use transport_quic::proto::Limits;
    use transport_quic::tls::{client_config, server_config, Identity};
    let (id, _, _) =
        Identity::generate("ringcast-bench", &["localhost".into()]).map_err(|e| e.to_string())?;
    let limits = Limits {
        congestion,
        ..Limits::default()
    };
    let scfg = server_config(&id, &limits).map_err(|e| e.to_string())?;
    let dir = opts.work_dir.join(format!("b-quinn-{}", next_run()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Bound here, on a port the kernel picks, and handed to the server thread.
    // transport-quic's sockets (the buffers ringcastd and the client use).
    let socket = transport_quic::endpoint::udp_socket("127.0.0.1:0".parse().expect("valid"))
        .map_err(|e| e.to_string())?;
    let addr = socket.local_addr().map_err(|e| e.to_string())?;
    let setup = client_config(
        None,
        &Trust::KnownHosts(dir.join("known_hosts")),
        &addr.to_string(),
    )
    .map_err(|e| e.to_string())?;
    let before = rusage(libc::RUSAGE_SELF);
    let ready = Arc::new(std::sync::Barrier::new(2));
    let r2 = ready.clone();
    // The server sends and the client receives, as in ringcast (the client's receive
    // window is transport-quic's client setting).
    let server = std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let ep = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(scfg),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|e| e.to_string())?;
            r2.wait();
            let conn = ep
                .accept()
                .await
                .ok_or("no connection")?
                .await
                .map_err(|e| e.to_string())?;
            // transport-quic allows no unidirectional streams: one bidirectional stream,
            // opened by the client with one byte.
            let (mut tx, mut rx) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let mut one = [0u8; 1];
            rx.read_exact(&mut one).await.map_err(|e| e.to_string())?;
            let block = bytes::Bytes::from(vec![0u8; 64 << 10]);
            let mut left = bytes;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                tx.write_chunk(block.slice(..k))
                    .await
                    .map_err(|e| e.to_string())?;
                left -= k as u64;
            }
            tx.finish().map_err(|e| e.to_string())?;
            let _ = conn.closed().await;
            ep.wait_idle().await;
            Ok(())
        })
    });
    ready.wait();
    let client = std::thread::spawn(move || -> Result<(u64, f64), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut ep = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                None,
                transport_quic::endpoint::udp_socket("127.0.0.1:0".parse().expect("valid"))
                    .map_err(|e| e.to_string())?,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|e| e.to_string())?;
            ep.set_default_client_config(setup.config);
            let conn = ep
                .connect(addr, "localhost")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut tx, mut rx) = conn.open_bi().await.map_err(|e| e.to_string())?;
            tx.write_all(&[1]).await.map_err(|e| e.to_string())?;
            let mut n = 0u64;
            let mut first = None;
            while let Some(c) = rx
                .read_chunk(usize::MAX, true)
                .await
                .map_err(|e| e.to_string())?
            {
                first.get_or_insert_with(Instant::now);
                n += c.bytes.len() as u64;
            }
            let end = Instant::now();
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
            Ok((n, (end - first.unwrap_or(end)).as_secs_f64()))
        })
    });
    let (n, secs) = client.join().map_err(|_| "client panicked")??;
    server.join().map_err(|_| "server panicked")??;
    let cpu = rusage(libc::RUSAGE_SELF) - before;
    let _ = std::fs::remove_dir_all(&dir);
    if n != bytes {
        return Err(format!("raw quinn: got {n} of {bytes}"));
    }
    Ok(Run {
        mbps: bytes as f64 / 1e6 / secs,
        cpu_s_per_gb: cpu / (bytes as f64 / 1e9),
        split: [0.0; 3],
        bytes: n,
    })
}

/// `--set congestion=NAME`: the controller of ringcastd and raw quinn on loopback (default:
/// ringcastd's default).
fn loopback_congestion(opts: &Options) -> Result<Congestion, String> {
    match opts.settings.iter().rev().find(|(k, _)| k == "congestion") {
        None => Ok(Congestion::DEFAULT),
        Some((_, v)) => v.parse().map_err(|e| format!("--set congestion={v}: {e}")),
    }
}

fn run_one(v: Variant, bins: &Bins, opts: &Options, bytes: u64) -> Result<Run, String> {
    let loopback = Net {
        congestion: loopback_congestion(opts)?,
        ..Net::LOOPBACK
    };
    match v {
        Variant::Ringcast => run_ringcast(bins, opts, bytes, false, loopback),
        Variant::RingcastFile => run_ringcast(bins, opts, bytes, true, loopback),
        Variant::RawQuinn => run_raw_quinn(opts, bytes, loopback.congestion),
        Variant::Base(b) => {
            let f = baselines::run(b, &Place::Loopback, bytes).map_err(|e| e.to_string())?;
            Ok(Run {
                mbps: f.mb_per_s(),
                cpu_s_per_gb: f.cpu_s_per_gb(),
                split: [0.0; 3],
                bytes: f.bytes,
            })
        }
        Variant::SocatFile => {
            // The same directory (and file system) as ringcast-file's capture.
            let dir = opts.work_dir.join(format!("b-socat-{}", next_run()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let f = baselines::run_socat_to_file(&Place::Loopback, bytes, &dir.join("sink"));
            let _ = std::fs::remove_dir_all(&dir);
            let f = f.map_err(|e| e.to_string())?;
            Ok(Run {
                mbps: f.mb_per_s(),
                cpu_s_per_gb: f.cpu_s_per_gb(),
                split: [0.0; 3],
                bytes: f.bytes,
            })
        }
    }
}

fn run(opts: &Options) -> Result<Outcome, String> {
    opts.check_settings(&[
        "b",
        "b2",
        "net_threads",
        "stream",
        "congestion",
        "write_batch",
    ])?;
    let reps = opts.reps.unwrap_or(if opts.quick { 1 } else { 3 });
    baselines::check_tools().map_err(|e| e.to_string())?;
    let bins = bins()?;
    let mut o = if opts.setting_usize("b")? != Some(0) {
        run_loopback(&bins, opts, reps)?
    } else {
        Outcome::default()
    };
    if opts.setting_usize("b2")? != Some(0) {
        // One repetition unless asked: the collapsed variants take their whole time limit.
        lossy::run(&bins, opts, opts.reps.unwrap_or(1), &mut o)?;
    }
    Ok(o)
}

/// §B: loopback, every variant.
fn run_loopback(bins: &Bins, opts: &Options, reps: usize) -> Result<Outcome, String> {
    let bytes: u64 = if opts.quick { 64 << 20 } else { 1 << 30 };
    let mut runs: Vec<(Variant, Vec<Run>)> = Variant::ALL.iter().map(|&v| (v, vec![])).collect();
    for rep in 0..reps {
        for (v, rs) in runs.iter_mut() {
            eprintln!(
                "b: rep {}/{reps}: {} ({} MiB)",
                rep + 1,
                v.name(),
                bytes >> 20
            );
            let r = run_one(*v, bins, opts, bytes)?;
            eprintln!("b:   {:.1} MB/s, {:.2} CPU-s/GB", r.mbps, r.cpu_s_per_gb);
            rs.push(r);
        }
    }
    let mut o = Outcome::default();
    for (v, rs) in &runs {
        let mbps: Vec<f64> = rs.iter().map(|r| r.mbps).collect();
        let cpu: Vec<f64> = rs.iter().map(|r| r.cpu_s_per_gb).collect();
        o.measurements.push(Measurement::new(
            v.name(),
            "throughput",
            median(&mbps),
            "MB/s",
        ));
        o.measurements.push(Measurement::new(
            v.name(),
            "cpu_per_gb",
            median(&cpu),
            "CPU-s/GB",
        ));
        if matches!(v, Variant::Ringcast | Variant::RingcastFile) {
            for (i, part) in ["producer", "ringcastd", "client"].iter().enumerate() {
                let p: Vec<f64> = rs.iter().map(|r| r.split[i]).collect();
                o.measurements.push(Measurement::new(
                    v.name(),
                    &format!("cpu_per_gb_{part}"),
                    median(&p),
                    "CPU-s/GB",
                ));
            }
        }
        if reps > 1 {
            let (lo, hi) = mbps
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            o.notes.push(format!(
                "{}: MB/s over {reps} reps {lo:.1}..{hi:.1}",
                v.name()
            ));
        }
    }
    for v in ["ringcast", "ringcast-file", "raw-quinn"] {
        for b in ["openssl-tls13-aes128gcm", "ssh-aes128gcm", "raw-quinn"] {
            if v != b {
                o.comparisons.push(Comparison {
                    variant: v.into(),
                    baseline: b.into(),
                });
            }
        }
    }
    o.comparisons.push(Comparison {
        variant: "ringcast-file".into(),
        baseline: "socat-tcp-file".into(),
    });
    let get = |v: &str, m: &str| {
        o.measurements
            .iter()
            .find(|x| x.variant == v && x.metric == m)
            .map_or(f64::NAN, |x| x.value)
    };
    let (rc, tls, ssh, q) = (
        get("ringcast", "throughput"),
        get("openssl-tls13-aes128gcm", "throughput"),
        get("ssh-aes128gcm", "throughput"),
        get("raw-quinn", "throughput"),
    );
    let (rc_cpu, tls_cpu) = (
        get("ringcast", "cpu_per_gb"),
        get("openssl-tls13-aes128gcm", "cpu_per_gb"),
    );
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    o.notes.push(format!(
        "targets (ringcast, discard sink): >= 1.0x TLS {:.2}x {}; >= 1.5x ssh {:.2}x {}; \
         >= 0.9x raw quinn {:.2}x {}; CPU/GB <= TLS {:.2} vs {:.2} {}",
        rc / tls,
        mark(rc >= tls),
        rc / ssh,
        mark(rc >= 1.5 * ssh),
        rc / q,
        mark(rc >= 0.9 * q),
        rc_cpu,
        tls_cpu,
        mark(rc_cpu <= tls_cpu)
    ));
    o.notes.push(format!(
        "{} MiB per run; producer fake-qemu (real plugin, ring=4M) writing {}; ringcastd \
         journal on disk; CPU of the tools up to their last byte",
        bytes >> 20,
        match payload(opts)? {
            Payload::Zeros => "zeros (checked for order, content and count)",
            Payload::Guest =>
                "the guest stream (sha256 checked; the client's hashing time \
                               is left out of its CPU)",
        }
    ));
    Ok(o)
}
