//! docs/benchmarks.md §D for the ingest: registers N console devices with a ringcastd process,
//! pushes some bytes through each, then measures the daemon's idle CPU and wakeups over a
//! few seconds and its memory per device.
//!
//! ```text
//! cargo build --release -p sidecar --bins --examples
//! target/release/examples/scale [N ...]        # default: 1 64 256 512
//! ```
//!
//! The ringcastd binary is taken from beside the example's directory (same profile).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_ring::handover::{self, Ack, DeviceDescription, DeviceKind};
use shm_ring::{ByteProducer, Doorbell, RingKind, RingMemory};

const IDLE: Duration = Duration::from_secs(5);
const PUSH: usize = 64 << 10;

struct Device {
    mem: Arc<RingMemory>,
    _in_mem: RingMemory,
    tx: ByteProducer,
    data: Doorbell,
    _bells: [Doorbell; 3],
    _sock: OwnedFd,
}

fn register(socket: &Path, i: usize) -> Device {
    let mem = Arc::new(RingMemory::create("out", RingKind::Bytes, 1 << 16, 0).unwrap());
    let in_mem = RingMemory::create("in", RingKind::Bytes, 4096, 0).unwrap();
    let data = Doorbell::new().unwrap();
    let bells = [
        Doorbell::new().unwrap(),
        Doorbell::new().unwrap(),
        Doorbell::new().unwrap(),
    ];
    let desc = DeviceDescription {
        kind: DeviceKind::Console,
        pid: std::process::id(),
        session: 1,
        vm_name: format!("vm{i}"),
        vm_uuid: String::new(),
        device_id: "serial0".into(),
        audio: None,
        audio_in: None,
    };
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    rustix::net::connect(&sock, &rustix::net::SocketAddrUnix::new(socket).unwrap()).unwrap();
    handover::send_with_fds(
        &sock,
        &desc.encode().unwrap(),
        &[
            mem.fd(),
            data.as_fd(),
            bells[0].as_fd(),
            in_mem.fd(),
            bells[1].as_fd(),
            bells[2].as_fd(),
        ],
    )
    .unwrap();
    let (reply, _) = handover::recv_with_fds(&sock).unwrap().unwrap();
    assert!(Ack::decode(&reply).unwrap().accepted);
    Device {
        tx: ByteProducer::new(mem.clone()).unwrap(),
        mem,
        _in_mem: in_mem,
        data,
        _bells: bells,
        _sock: sock,
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (user + system CPU ticks, context switches of all threads).
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines() {
            if l.contains("ctxt_switches") {
                switches += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (ticks, switches)
}

fn daemon_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("ringcastd")
}

fn run(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ringcastd.sock");
    let mut child: Child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("build ringcastd first: cargo build --release -p sidecar --bins --examples");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("ringcastd.ctl").exists() {
        assert!(Instant::now() < deadline, "ringcastd did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let rss0 = status_kib(pid, "VmRSS:");
    let anon0 = status_kib(pid, "RssAnon:");
    let mut devices: Vec<Device> = (0..n).map(|i| register(&socket, i)).collect();
    let payload = vec![b'x'; PUSH];
    for d in &mut devices {
        let w = d.tx.write(&payload).unwrap();
        assert_eq!(w.bytes, PUSH);
        if w.wake_consumer {
            d.data.ring();
        }
    }
    let cap = 1usize << 16;
    for d in &mut devices {
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.tx.free().unwrap() != cap {
            assert!(Instant::now() < deadline, "ring not drained");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(devices
        .iter()
        .all(|d| d.mem.geometry().capacity == cap as u64));
    std::thread::sleep(Duration::from_millis(200));
    let rss1 = status_kib(pid, "VmRSS:");
    let anon1 = status_kib(pid, "RssAnon:");
    let shmem1 = status_kib(pid, "RssShmem:");
    let (t0, s0) = cpu_and_switches(pid);
    std::thread::sleep(IDLE);
    let (t1, s1) = cpu_and_switches(pid);
    // USER_HZ: the unit of /proc/PID/stat times on every Linux architecture we run on.
    let hz = 100u64;
    let per_dev = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    let anon_per_dev = (anon1.saturating_sub(anon0)) as f64 / n as f64;
    println!(
        "N={n:4}  idle CPU {:.3}% over {}s ({} ticks, {} context switches)  RSS {rss0}->{rss1} KiB: \
         {per_dev:.1} KiB/device (anon {anon_per_dev:.1} KiB/device incl. {} KiB journal bytes; \
         ring pages {shmem1} KiB shared)",
        (t1 - t0) as f64 / hz as f64 / IDLE.as_secs_f64() * 100.0,
        IDLE.as_secs(),
        t1 - t0,
        s1 - s0,
        PUSH >> 10,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(devices);
}

fn main() {
    sidecar::raise_fd_limit();
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("device counts"))
        .collect();
    let ns = if ns.is_empty() {
        vec![1, 64, 256, 512]
    } else {
        ns
    };
    for n in ns {
        run(n);
    }
}
