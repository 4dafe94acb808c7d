//! A lossy link: two network namespaces joined by a userspace forwarder between two TUN devices.
//!
//! This kernel has no `netem`, so loss, delay, jitter and a rate limit are applied here, in a thread
//! per direction that reads IP packets from one TUN device and writes them to the other.
//!
//! ```text
//!   netns A (rcl<pid>x<n>a)                                 netns B (rcl<pid>x<n>b)
//!  ┌──────────────────────┐                                ┌──────────────────────┐
//!  │ tun0 198.18.0.1/30   │                                │ tun0 198.18.0.2/30   │
//!  └──────────┬───────────┘                                └──────────┬───────────┘
//!             │ fd             this process                           │ fd
//!             └──► [A→B: loss, cut, rate, delay+jitter queue] ──►─────┘
//!             ┌──◄ [B→A: loss, cut, rate, delay+jitter queue] ◄──────┐
//! ```
//!
//! * Loss decisions come from a generator seeded per direction from [`LinkSpec::seed`], one draw
//!   per packet that reaches the loss stage, so the same packet sequence loses the same packets.
//!   IPv6 is disabled in both namespaces so that no router solicitation or MLD report crosses the
//!   link and shifts the sequence.
//! * Delay and jitter never reorder packets: each packet leaves no earlier than the one before it.
//! * The rate limit serialises packets at `rate_mbit` and holds at most 100 ms (at least 64 KiB) of
//!   backlog; packets beyond that are tail-dropped and counted as `dropped_queue`.
//! * [`LossyLink::set_cut`] drops everything, including packets already in flight, until restored.
//!
//! Creating a link needs root (namespaces, TUN) and iproute2's `ip`. Dropping a [`LossyLink`]
//! stops the forwarder and deletes both namespaces. A namespace left behind by a process that
//! died is deleted by the next [`LossyLink::create`].
//!
//! Modules: this one (the link, its specification and statistics), `control` (the control
//! socket's commands), `netns`
//! (namespaces, `ip`, TUN devices), `forwarder` (the per-direction thread: loss, cut, rate,
//! delay).

mod control;
mod forwarder;
mod netns;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use control::LinkControl;
use forwarder::*;
use netns::*;
pub use netns::{check_prerequisites, remove_named, remove_stale_namespaces};

/// Prefix of the namespaces [`LossyLink::create`] names itself (`rcl<pid>x<n>a` / `...b`).
const AUTO_PREFIX: &str = "rcl";
/// Where iproute2 keeps named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Size of one packet buffer; the TUN MTU is 1500, so a packet always fits.
const SLOT: usize = 2048;
/// TUN MTU set on both ends.
const MTU: u32 = 1500;
/// Most packets held in one direction's delay queue; more are dropped (`dropped_queue`).
const MAX_QUEUED: usize = 16384;
/// Most packets read from a TUN device in one go before the queue is served again.
const READ_BATCH: usize = 64;
/// Longest sleep of a forwarder thread, so it notices a stop request.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// The impairments of a link, the same in both directions at creation.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Random loss per direction, in percent (0–100).
    pub loss_pct: f64,
    /// Fixed one-way delay, in milliseconds.
    pub delay_ms: f64,
    /// Jitter, in milliseconds: each packet's delay is `delay_ms` ± up to `jitter_ms` (uniform),
    /// never less than zero and never ahead of the packet before it (no reordering).
    pub jitter_ms: f64,
    /// Rate limit per direction, in Mbit/s; 0 means unlimited.
    pub rate_mbit: f64,
    /// Seed of the loss and jitter generators.
    pub seed: u64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            loss_pct: 0.0,
            delay_ms: 0.0,
            jitter_ms: 0.0,
            rate_mbit: 0.0,
            seed: 1,
        }
    }
}

/// A direction across the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From namespace A to namespace B.
    AToB,
    /// From namespace B to namespace A.
    BToA,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Packets read from the sending side's TUN device.
    pub received: u64,
    /// Packets written to the receiving side's TUN device.
    pub forwarded: u64,
    /// Bytes (IP packets) written to the receiving side.
    pub forwarded_bytes: u64,
    /// Packets dropped by the random loss.
    pub dropped_loss: u64,
    /// Packets dropped because the link was cut.
    pub dropped_cut: u64,
    /// Packets dropped because the queue (rate limit backlog) was full.
    pub dropped_queue: u64,
    /// Packets the receiving TUN device refused.
    pub write_errors: u64,
}

impl DirStats {
    /// Every packet dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_cut + self.dropped_queue + self.write_errors
    }
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// A → B.
    pub a_to_b: DirStats,
    /// B → A.
    pub b_to_a: DirStats,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_cut: AtomicU64,
    dropped_queue: AtomicU64,
    write_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirStats {
        DirStats {
            received: self.received.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            dropped_loss: self.dropped_loss.load(Ordering::Relaxed),
            dropped_cut: self.dropped_cut.load(Ordering::Relaxed),
            dropped_queue: self.dropped_queue.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }
}

/// State shared between the handle and the forwarder threads.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    cut: AtomicBool,
    /// Loss per direction in parts per billion of packets.
    loss_ppb: [AtomicU32; 2],
    counters: [Counters; 2],
}

fn pct_to_ppb(pct: f64) -> u32 {
    (pct.clamp(0.0, 100.0) * 10_000_000.0).round() as u32
}

/// A running lossy link. Dropping it stops the forwarder and deletes both namespaces.
#[derive(Debug)]
pub struct LossyLink {
    ns_a: String,
    ns_b: String,
    spec: LinkSpec,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

static LINK_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl LossyLink {
    /// Creates a link with namespaces named after this process (`rcl<pid>x<n>a`, `rcl<pid>x<n>b`),
    /// unique within the machine while this process lives.
    pub fn create(spec: LinkSpec) -> io::Result<LossyLink> {
        let n = LINK_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{AUTO_PREFIX}{}x{n}", std::process::id());
        Self::create_named(spec, &name)
    }

    /// Creates a link whose namespaces are `<name>a` and `<name>b`. Namespaces of these names
    /// left behind earlier are deleted first.
    pub fn create_named(spec: LinkSpec, name: &str) -> io::Result<LossyLink> {
        check_prerequisites()?;
        if name.is_empty()
            || name.len() > 200
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("lossy link: bad name {name:?} (letters, digits, '-', '_')"),
            ));
        }
        remove_stale_namespaces();
        let ns_a = format!("{name}a");
        let ns_b = format!("{name}b");
        for ns in [&ns_a, &ns_b] {
            if Path::new(NETNS_DIR).join(ns).exists() {
                let _ = ip(&["netns", "delete", ns]);
            }
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            loss_ppb: [
                AtomicU32::new(pct_to_ppb(spec.loss_pct)),
                AtomicU32::new(pct_to_ppb(spec.loss_pct)),
            ],
            counters: [Counters::default(), Counters::default()],
        });
        let mut link = LossyLink {
            ns_a,
            ns_b,
            spec,
            shared,
            threads: Vec::new(),
        };
        // From here on, Drop deletes whatever was created.
        let tun_a = link.setup_side(true)?;
        let tun_b = link.setup_side(false)?;
        let tun_a = Arc::new(tun_a);
        let tun_b = Arc::new(tun_b);
        for dir in [Dir::AToB, Dir::BToA] {
            let (src, dst) = match dir {
                Dir::AToB => (tun_a.clone(), tun_b.clone()),
                Dir::BToA => (tun_b.clone(), tun_a.clone()),
            };
            let fwd = Forwarder::new(dir, &link.spec, link.shared.clone(), src, dst);
            let handle = std::thread::Builder::new()
                .name(format!(
                    "lossy-{}",
                    if dir == Dir::AToB { "ab" } else { "ba" }
                ))
                .spawn(move || fwd.run())?;
            link.threads.push(handle);
        }
        Ok(link)
    }

    fn setup_side(&self, a: bool) -> io::Result<File> {
        let ns = if a { &self.ns_a } else { &self.ns_b };
        let addr = if a { self.addr_a() } else { self.addr_b() };
        ip(&["netns", "add", ns])?;
        let ns_path = Path::new(NETNS_DIR).join(ns);
        let tun = in_netns(&ns_path, || -> io::Result<File> {
            // No IPv6: nothing but the test's own traffic crosses the link, so the seeded loss
            // sequence is the same from run to run.
            for knob in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
                if Path::new(&path).exists() {
                    std::fs::write(&path, "1")?;
                }
            }
            open_tun("tun0")
        })??;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "set", "tun0", "mtu", &MTU.to_string()])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "tun0",
        ])?;
        ip(&["-n", ns, "link", "set", "tun0", "up"])?;
        Ok(tun)
    }

    /// The name of namespace A.
    pub fn ns_a(&self) -> &str {
        &self.ns_a
    }

    /// The name of namespace B.
    pub fn ns_b(&self) -> &str {
        &self.ns_b
    }

    /// The address of namespace A's end (198.18.0.1).
    pub fn addr_a(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 1)
    }

    /// The address of namespace B's end (198.18.0.2).
    pub fn addr_b(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 2)
    }

    /// The spec the link was created with (loss as changed by [`Self::set_loss`] is not reflected).
    pub fn spec(&self) -> &LinkSpec {
        &self.spec
    }

    /// A command that runs `program` inside namespace A (`ip netns exec <A> program`); add
    /// arguments and spawn it as usual.
    pub fn command_in_a(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.ns_a, program)
    }

    /// Makes commands that run `program` inside namespace A (for the test kit's daemon,
    /// which makes its command again on every restart).
    pub fn launcher_in_a(&self, program: impl AsRef<OsStr>) -> crate::kit::daemon::Launcher {
        let ns = self.ns_a.clone();
        let program = program.as_ref().to_owned();
        Box::new(move || netns_command(&ns, &program))
    }

    /// A command that runs `program` inside namespace B.
    pub fn command_in_b(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.ns_b, program)
    }

    /// Runs a shell command (`sh -c`) inside namespace A and waits for it.
    pub fn exec_in_a(&self, shell: &str) -> io::Result<Output> {
        self.command_in_a("sh")
            .arg("-c")
            .arg(shell)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs a shell command (`sh -c`) inside namespace B and waits for it.
    pub fn exec_in_b(&self, shell: &str) -> io::Result<Output> {
        self.command_in_b("sh")
            .arg("-c")
            .arg(shell)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs `f` on a thread that has entered namespace A. Sockets it creates stay in A after it
    /// returns, so a test can open sockets on both ends in one process.
    pub fn run_in_a<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> io::Result<R> {
        in_netns(&Path::new(NETNS_DIR).join(&self.ns_a), f)
    }

    /// Runs `f` on a thread that has entered namespace B.
    pub fn run_in_b<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> io::Result<R> {
        in_netns(&Path::new(NETNS_DIR).join(&self.ns_b), f)
    }

    /// Cuts the link (every packet dropped, also those in flight) or restores it.
    pub fn set_cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::Relaxed);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::Relaxed)
    }

    /// Sets the random loss of one direction, in percent.
    pub fn set_loss(&self, dir: Dir, pct: f64) {
        self.shared.loss_ppb[dir as usize].store(pct_to_ppb(pct), Ordering::Relaxed);
    }

    /// Sets the random loss of both directions, in percent.
    pub fn set_loss_both(&self, pct: f64) {
        self.set_loss(Dir::AToB, pct);
        self.set_loss(Dir::BToA, pct);
    }

    /// The counters of both directions.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            a_to_b: self.shared.counters[0].snapshot(),
            b_to_a: self.shared.counters[1].snapshot(),
        }
    }

    /// A handle that can cut the link, change loss and read counters from another thread (for
    /// example a control socket) while the link lives.
    pub fn control(&self) -> LinkControl {
        LinkControl {
            shared: self.shared.clone(),
        }
    }

    /// Serves a control socket at `path` on a background thread: one command per line, one
    /// answer per line. Commands: `cut on`, `cut off`, `loss PCT`, `loss-ab PCT`, `loss-ba PCT`,
    /// `stats`. The thread ends when the link is dropped and the next client connects, or with
    /// the process.
    pub fn serve_control(&self, path: &Path) -> io::Result<JoinHandle<()>> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let control = self.control();
        std::thread::Builder::new()
            .name("lossy-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if control.shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let Ok(mut out) = conn.try_clone() else {
                        continue;
                    };
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { break };
                        let answer = control.command(&line);
                        if writeln!(out, "{answer}").is_err() {
                            break;
                        }
                    }
                }
            })
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in [&self.ns_a, &self.ns_b] {
            if Path::new(NETNS_DIR).join(ns).exists() {
                let _ = ip(&["netns", "delete", ns]);
            }
        }
    }
}

/// The default control socket path of a named link (`lossy-link up --name NAME`).
pub fn control_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/lossy-link-{name}.sock"))
}
