//! The tools ringcast is compared against, as pipelines that move N bytes from A to B.
//!
//! Each [`Baseline`] is started as separate processes: a sender that reads `/dev/zero` itself
//! and a receiver whose output this module counts (the sink discards; a pipe into this process
//! is the same for every baseline). The figures are the time from the first byte received to
//! the N-th, and the CPU-seconds of the tool's processes up to that moment: user + system of
//! each process and of all its descendants, live or reaped (e.g. sshd's per-connection
//! processes), read from `/proc` when the N-th byte arrives. What the tools do after that
//! (a sender that keeps reading `/dev/zero` until it is stopped, an `openssl s_server` that
//! keeps decrypting after its output was closed) does not count. The counting thread's own
//! CPU is not included. [`run_socat_to_file`] is the file-sink variant (socat writes the
//! file itself).
//!
//! A [`Place`] says where the two ends run: both on loopback, or in the two network namespaces
//! of a lossy link (`testbed::lossy::LossyLink`; pass its namespace names and addresses). The
//! tools come from `benches/baselines/install.sh`; `benches/baselines/README.md` gives the same
//! pipelines as shell commands.

use std::fs;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// A tool pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Plain TCP: `socat -b 131072` on both ends.
    SocatTcp,
    /// TLS 1.3 with AES-128-GCM over TCP: `openssl s_client` to `openssl s_server`.
    OpensslTls13,
    /// `ssh -c aes128-gcm@openssh.com` against a throwaway `sshd` with a throwaway key.
    Ssh,
    /// TLS 1.3 with AES-128-GCM over TCP with a stated congestion controller on both sockets
    /// (`TCP_CONGESTION`): `socat OPENSSL:` to `socat OPENSSL-LISTEN:` (openssl's `s_client`
    /// cannot set socket options). For the lossy link, where the controller decides.
    SocatTls13(TcpCc),
}

/// A TCP congestion controller, set per socket with `TCP_CONGESTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpCc {
    /// CUBIC (loss-based; Linux's usual default).
    Cubic,
    /// BBR (model-based; this host's default, `net.ipv4.tcp_congestion_control`).
    Bbr,
}

impl TcpCc {
    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            TcpCc::Cubic => "cubic",
            TcpCc::Bbr => "bbr",
        }
    }
}

impl Baseline {
    /// Every baseline.
    pub const ALL: [Baseline; 5] = [
        Baseline::SocatTcp,
        Baseline::OpensslTls13,
        Baseline::Ssh,
        Baseline::SocatTls13(TcpCc::Cubic),
        Baseline::SocatTls13(TcpCc::Bbr),
    ];

    /// A short name for tables and JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::SocatTcp => "socat-tcp",
            Baseline::OpensslTls13 => "openssl-tls13-aes128gcm",
            Baseline::Ssh => "ssh-aes128gcm",
            Baseline::SocatTls13(TcpCc::Cubic) => "tls13-tcp-cubic",
            Baseline::SocatTls13(TcpCc::Bbr) => "tls13-tcp-bbr",
        }
    }
}

/// Where the sender (A) and the receiver (B) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Both on this host's loopback.
    Loopback,
    /// In two network namespaces, e.g. those of a lossy link.
    Netns {
        /// Namespace of the sender.
        ns_a: String,
        /// Namespace of the receiver.
        ns_b: String,
        /// The sender's address (inside `ns_a`).
        addr_a: Ipv4Addr,
        /// The receiver's address (inside `ns_b`).
        addr_b: Ipv4Addr,
    },
}

impl Place {
    fn addr_a(&self) -> Ipv4Addr {
        match self {
            Place::Loopback => Ipv4Addr::LOCALHOST,
            Place::Netns { addr_a, .. } => *addr_a,
        }
    }

    fn addr_b(&self) -> Ipv4Addr {
        match self {
            Place::Loopback => Ipv4Addr::LOCALHOST,
            Place::Netns { addr_b, .. } => *addr_b,
        }
    }

    fn command(&self, side_a: bool, program: &str) -> Command {
        match self {
            Place::Loopback => Command::new(program),
            Place::Netns { ns_a, ns_b, .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", if side_a { ns_a } else { ns_b }, program]);
                c
            }
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Bytes received: those asked for, or fewer when a time limit ended the run first.
    pub bytes: u64,
    /// From the first byte received to the last.
    pub seconds: f64,
    /// CPU-seconds (user + system) of the tool's processes.
    pub cpu_seconds: f64,
}

impl Figures {
    /// Throughput in MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }

    /// CPU-seconds per GB (10^9 bytes).
    pub fn cpu_s_per_gb(&self) -> f64 {
        self.cpu_seconds / (self.bytes as f64 / 1e9)
    }
}

/// Fails with the missing tool's name unless every baseline can run.
pub fn check_tools() -> io::Result<()> {
    for tool in ["socat", "openssl", "ssh", "ssh-keygen", "ss"] {
        if which(tool).is_none() {
            return Err(missing(tool));
        }
    }
    if !Path::new(SSHD).exists() {
        return Err(missing(SSHD));
    }
    Ok(())
}

const SSHD: &str = "/usr/sbin/sshd";

fn missing(tool: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("baselines: {tool} not found; run benches/baselines/install.sh"),
    )
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port for one run: distinct per run and per process, in 20000–29999.
fn port() -> u16 {
    let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    20000
        + ((std::process::id() as u16)
            .wrapping_mul(97)
            .wrapping_add(n.wrapping_mul(7))
            % 10000)
}

/// Throwaway keys and configuration for one run, deleted on drop.
#[derive(Debug)]
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> io::Result<Scratch> {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ringcast-baseline-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Scratch { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run_quiet(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "baselines: {cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A throwaway self-signed P-256 certificate and key in `scratch`.
fn throwaway_cert(scratch: &Scratch) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (scratch.path("cert.pem"), scratch.path("key.pem"));
    run_quiet(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=ringcast-baseline",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    Ok((cert, key))
}

/// An OpenSSL configuration that limits TLS to 1.3 with AES-128-GCM (socat has no option for
/// TLS 1.3 cipher suites; `OPENSSL_CONF` pointing here does it).
const TLS13_AES128_CONF: &str = "openssl_conf = default_conf\n\
[default_conf]\nssl_conf = ssl_sect\n\
[ssl_sect]\nsystem_default = system_default_sect\n\
[system_default_sect]\nMinProtocol = TLSv1.3\nCiphersuites = TLS_AES_128_GCM_SHA256\n";

/// socat's option that sets `TCP_CONGESTION` (IPPROTO_TCP = 6, TCP_CONGESTION = 13).
fn cc_option(cc: TcpCc) -> String {
    format!("setsockopt-string=6:13:{}", cc.name())
}

/// A running pipeline. [`Pipeline::finish`] waits for the bytes and returns the figures;
/// dropping it early kills every process.
#[derive(Debug)]
pub struct Pipeline {
    baseline: Baseline,
    bytes: u64,
    /// Processes whose CPU time counts, killed and reaped at the end.
    procs: Vec<Child>,
    /// The receiving process, whose stdout carries the bytes.
    receiver: Option<Child>,
    /// Held open so `openssl s_server` never sees end of input.
    _hold_stdin: Option<ChildStdin>,
    /// sshd: reaped after its connection processes are gone.
    listener: Option<Child>,
    _scratch: Scratch,
}

/// Waits until something listens on `port` on the receiving side (via `ss` in that namespace).
fn wait_listening(
    place: &Place,
    side_a: bool,
    port: u16,
    procs: &mut [&mut Child],
) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = place
            .command(side_a, "ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        if !out.stdout.is_empty() {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Some(status) = p.try_wait()? {
                return Err(io::Error::other(format!(
                    "baselines: a listener exited early: {status}"
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "baselines: nothing listens on port {port}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Pipeline {
    /// Starts `baseline` to move `bytes` from A to B at `place`.
    pub fn start(baseline: Baseline, place: &Place, bytes: u64) -> io::Result<Pipeline> {
        check_tools()?;
        let scratch = Scratch::new()?;
        let port = port();
        let mut p = Pipeline {
            baseline,
            bytes,
            procs: Vec::new(),
            receiver: None,
            _hold_stdin: None,
            listener: None,
            _scratch: scratch,
        };
        let (a, b) = (place.addr_a(), place.addr_b());
        match baseline {
            Baseline::SocatTcp => {
                // 128 KiB transfer buffers; socket buffers stay autotuned (fixing SO_RCVBUF
                // would cap the window, which cripples TCP on a link with delay).
                let mut rx = place
                    .command(false, "socat")
                    .args([
                        "-u",
                        "-b",
                        "131072",
                        &format!("TCP-LISTEN:{port},bind={b},reuseaddr"),
                        "STDOUT",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?;
                wait_listening(place, false, port, &mut [&mut rx])?;
                p.receiver = Some(rx);
                let tx = place
                    .command(true, "socat")
                    .args([
                        "-u",
                        "-b",
                        "131072",
                        "OPEN:/dev/zero",
                        &format!("TCP:{b}:{port}"),
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()?;
                p.procs.push(tx);
            }
            Baseline::OpensslTls13 => {
                let (cert, key) = throwaway_cert(&p._scratch)?;
                let tls = ["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"];
                let mut rx = place
                    .command(false, "openssl")
                    .args([
                        "s_server",
                        "-quiet",
                        "-naccept",
                        "1",
                        "-accept",
                        &format!("{b}:{port}"),
                    ])
                    .args(tls)
                    .arg("-cert")
                    .arg(&cert)
                    .arg("-key")
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?;
                p._hold_stdin = rx.stdin.take();
                wait_listening(place, false, port, &mut [&mut rx])?;
                p.receiver = Some(rx);
                let tx = place
                    .command(true, "openssl")
                    .args(["s_client", "-quiet", "-connect", &format!("{b}:{port}")])
                    .args(tls)
                    .stdin(fs::File::open("/dev/zero")?)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                p.procs.push(tx);
            }
            Baseline::SocatTls13(cc) => {
                let (cert, key) = throwaway_cert(&p._scratch)?;
                let conf = p._scratch.path("openssl.cnf");
                fs::write(&conf, TLS13_AES128_CONF)?;
                let mut rx = place
                    .command(false, "socat")
                    .env("OPENSSL_CONF", &conf)
                    .args(["-u", "-b", "131072"])
                    .arg(format!(
                        "OPENSSL-LISTEN:{port},bind={b},reuseaddr,cert={},key={},verify=0,\
                         min-version=TLS1.3,{}",
                        cert.display(),
                        key.display(),
                        cc_option(cc)
                    ))
                    .arg("STDOUT")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()?;
                wait_listening(place, false, port, &mut [&mut rx])?;
                p.receiver = Some(rx);
                let tx = place
                    .command(true, "socat")
                    .env("OPENSSL_CONF", &conf)
                    .args(["-u", "-b", "131072", "OPEN:/dev/zero"])
                    .arg(format!(
                        "OPENSSL:{b}:{port},verify=0,min-version=TLS1.3,{}",
                        cc_option(cc)
                    ))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                p.procs.push(tx);
            }
            Baseline::Ssh => {
                // sshd runs on A and sends (`head -c N /dev/zero`); the client runs on B and
                // receives. The keys and the configuration live for this run only.
                let s = &p._scratch;
                for (name, kind) in [("host", "ed25519"), ("client", "ed25519")] {
                    run_quiet(
                        Command::new("ssh-keygen")
                            .args(["-q", "-t", kind, "-N", "", "-f"])
                            .arg(s.path(name)),
                    )?;
                }
                fs::copy(s.path("client.pub"), s.path("authorized_keys"))?;
                fs::create_dir_all("/run/sshd")?;
                let config = format!(
                    "Port {port}\nListenAddress {a}\nHostKey {host}\nAuthorizedKeysFile {auth}\nPidFile none\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     UsePAM no\nStrictModes no\nCiphers aes128-gcm@openssh.com\nCompression no\nUseDNS no\n",
                    host = s.path("host").display(),
                    auth = s.path("authorized_keys").display(),
                );
                fs::write(s.path("sshd_config"), config)?;
                let mut sshd = place
                    .command(true, SSHD)
                    .args(["-D", "-e", "-f"])
                    .arg(s.path("sshd_config"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                wait_listening(place, true, port, &mut [&mut sshd])?;
                p.listener = Some(sshd);
                let rx = place
                    .command(false, "ssh")
                    .args([
                        "-F",
                        "/dev/null",
                        "-T",
                        "-c",
                        "aes128-gcm@openssh.com",
                        "-p",
                        &port.to_string(),
                    ])
                    .args([
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                    ])
                    .args(["-o", "LogLevel=ERROR", "-i"])
                    .arg(s.path("client"))
                    .arg(format!("root@{a}"))
                    .arg(format!("head -c {bytes} /dev/zero"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()?;
                p.receiver = Some(rx);
            }
        }
        Ok(p)
    }

    /// Waits until every byte has arrived, stops the processes and returns the figures.
    pub fn finish(self) -> io::Result<Figures> {
        let want = self.bytes;
        let f = self.finish_within(None)?;
        if f.bytes != want {
            return Err(io::Error::other(format!(
                "baselines: delivered {} of {want} bytes",
                f.bytes
            )));
        }
        Ok(f)
    }

    /// Waits until every byte has arrived or `limit` has passed since the first byte
    /// (whichever comes first), stops the processes and returns the figures. Fails when the
    /// stream ends early.
    pub fn finish_within(mut self, limit: Option<Duration>) -> io::Result<Figures> {
        use std::os::fd::AsRawFd;
        let mut out = self
            .receiver
            .as_mut()
            .and_then(|rx| rx.stdout.take())
            .expect("receiver started with stdout piped");
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        let mut first: Option<Instant> = None;
        let start = Instant::now();
        while got < self.bytes {
            if let (Some(l), Some(f)) = (limit, first) {
                if f.elapsed() >= l {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(60) && first.is_none() {
                return Err(io::Error::other(format!(
                    "baselines: {}: no byte within a minute",
                    self.baseline.name()
                )));
            }
            // Wait with a timeout so that a time limit ends a stalled stream too.
            let mut pfd = libc::pollfd {
                fd: out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for a descriptor we own.
            let r = unsafe { libc::poll(&mut pfd, 1, 100) };
            if r == 0 {
                continue;
            }
            let want = buf.len().min((self.bytes - got) as usize);
            let n = match out.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            got += n as u64;
        }
        let end = Instant::now();
        // CPU up to the last byte, before anything is stopped.
        let cpu: f64 = self
            .procs
            .iter()
            .chain(self.receiver.iter())
            .chain(self.listener.iter())
            .map(|c| tree_cpu_seconds(c.id()))
            .sum();
        drop(out);
        let timed_out = limit.is_some_and(|l| first.is_some_and(|f| end - f >= l));
        if got != self.bytes && !timed_out {
            return Err(io::Error::other(format!(
                "baselines: {} delivered {got} of {} bytes",
                self.baseline.name(),
                self.bytes
            )));
        }
        let seconds = end
            .duration_since(first.unwrap_or(end))
            .as_secs_f64()
            .max(1e-9);
        Ok(Figures {
            bytes: got,
            seconds,
            cpu_seconds: cpu,
        })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for c in self
            .procs
            .drain(..)
            .chain(self.receiver.take())
            .chain(self.listener.take())
        {
            stop_and_reap(c, Duration::ZERO);
        }
    }
}

/// Waits up to `grace` for `child` to exit by itself, then kills it, and returns its
/// CPU-seconds (its own plus those of the children it reaped), read from `/proc/<pid>/stat`
/// while it is a zombie, before reaping it.
fn stop_and_reap(mut child: Child, grace: Duration) -> f64 {
    let deadline = Instant::now() + grace;
    let mut killed = false;
    let mut cpu = 0.0;
    loop {
        match zombie_cpu_seconds(child.id()) {
            Some(Some(s)) => {
                cpu = s;
                break;
            }
            Some(None) => {}
            None => break,
        }
        if !killed && Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    cpu
}

/// utime + stime + cutime + cstime of process `pid` in seconds, and whether it is a zombie;
/// None when it is gone.
fn stat_cpu_seconds(pid: u32) -> Option<(f64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14-17 of stat(5) are f[11..15] here; the unit is USER_HZ, 100 on Linux.
    let ticks: u64 = f
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    Some((ticks as f64 / 100.0, f.first() == Some(&"Z")))
}

/// CPU-seconds of process `pid` and every descendant, live or already reaped by its parent.
fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut total = 0.0;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Some((s, _)) = stat_cpu_seconds(p) {
            total += s;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                todo.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    total
}

/// `None` when the process is gone, `Some(None)` while it runs, `Some(Some(cpu))` once it has
/// exited (a zombie): utime + stime + cutime + cstime in seconds.
fn zombie_cpu_seconds(pid: u32) -> Option<Option<f64>> {
    let (s, zombie) = stat_cpu_seconds(pid)?;
    Some(zombie.then_some(s))
}

/// Starts `baseline`, moves `bytes` from A to B at `place` and returns the figures.
pub fn run(baseline: Baseline, place: &Place, bytes: u64) -> io::Result<Figures> {
    Pipeline::start(baseline, place, bytes)?.finish()
}

/// Like [`run`], but stops after `limit` from the first byte if the bytes have not all
/// arrived by then (the figures then hold what did).
pub fn run_within(
    baseline: Baseline,
    place: &Place,
    bytes: u64,
    limit: Duration,
) -> io::Result<Figures> {
    Pipeline::start(baseline, place, bytes)?.finish_within(Some(limit))
}

/// The file sink: plain TCP with `socat -b 131072` on both ends, the receiver writing `path`
/// itself (`OPEN:path,creat,trunc`) and the sender sending exactly `bytes` from `/dev/zero`
/// (`readbytes=`). The time runs from the first byte in the file to the receiver's exit
/// followed by an `fsync` of the file (as a capturing client that syncs its file at the
/// end); the CPU is both socats'. The file's size is checked and the file is left in place.
pub fn run_socat_to_file(place: &Place, bytes: u64, path: &Path) -> io::Result<Figures> {
    check_tools()?;
    let port = port();
    let b = place.addr_b();
    let _ = fs::remove_file(path);
    let mut rx = place
        .command(false, "socat")
        .args([
            "-u",
            "-b",
            "131072",
            &format!("TCP-LISTEN:{port},bind={b},reuseaddr"),
        ])
        .arg(format!("OPEN:{},creat,trunc", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Err(e) = wait_listening(place, false, port, &mut [&mut rx]) {
        stop_and_reap(rx, Duration::ZERO);
        return Err(e);
    }
    let tx = match place
        .command(true, "socat")
        .args([
            "-u",
            "-b",
            "131072",
            &format!("OPEN:/dev/zero,readbytes={bytes}"),
            &format!("TCP:{b}:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(tx) => tx,
        Err(e) => {
            stop_and_reap(rx, Duration::ZERO);
            return Err(e);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    loop {
        if first.is_none() && fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            first = Some(Instant::now());
        }
        if let Some((_, true)) = stat_cpu_seconds(rx.id()) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(if first.is_some() {
            1000
        } else {
            200
        }));
    }
    let first = first.unwrap_or_else(Instant::now);
    let cpu = stop_and_reap(tx, Duration::from_secs(2)) + stop_and_reap(rx, Duration::ZERO);
    fs::OpenOptions::new().write(true).open(path)?.sync_all()?;
    let end = Instant::now();
    let got = fs::metadata(path)?.len();
    if got != bytes {
        return Err(io::Error::other(format!(
            "baselines: socat to a file wrote {got} of {bytes} bytes"
        )));
    }
    Ok(Figures {
        bytes: got,
        seconds: (end - first).as_secs_f64().max(1e-9),
        cpu_seconds: cpu,
    })
}

/// Writes one line of figures, e.g. for a quick look by hand.
pub fn print_figures(
    out: &mut impl Write,
    baseline: Baseline,
    where_: &str,
    f: &Figures,
) -> io::Result<()> {
    writeln!(
        out,
        "{:<26} {:<10} {:>9.1} MB/s {:>7.2} CPU-s/GB  ({} bytes in {:.2} s, {:.2} CPU-s)",
        baseline.name(),
        where_,
        f.mb_per_s(),
        f.cpu_s_per_gb(),
        f.bytes,
        f.seconds,
        f.cpu_seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each baseline pipeline delivers every byte (correctness only; ringcast-bench measures).
    /// `RINGCAST_BASELINE_NETNS=A,B,ADDR_A,ADDR_B` runs the same across two namespaces (e.g. a
    /// link from `lossy-link up`); `RINGCAST_BASELINE_BYTES` sets the size (default 4 MiB).
    /// Needs the tools from benches/baselines/install.sh: without them it says which one is
    /// missing and passes, unless `RINGCAST_BASELINE_TOOLS=required` (scripts/test.sh, which
    /// installs them, sets it).
    #[test]
    fn each_baseline_moves_every_byte_and_reports_its_figures() {
        if let Err(e) = check_tools() {
            if std::env::var_os("RINGCAST_BASELINE_TOOLS").is_some_and(|v| v == "required") {
                panic!("{e} (RINGCAST_BASELINE_TOOLS=required)");
            }
            println!("skipped: {e}");
            return;
        }
        let bytes = std::env::var("RINGCAST_BASELINE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4 << 20);
        let mut places = vec![("loopback".to_string(), Place::Loopback)];
        if let Ok(v) = std::env::var("RINGCAST_BASELINE_NETNS") {
            let f: Vec<&str> = v.split(',').collect();
            places = vec![(
                "netns".to_string(),
                Place::Netns {
                    ns_a: f[0].into(),
                    ns_b: f[1].into(),
                    addr_a: f[2].parse().unwrap(),
                    addr_b: f[3].parse().unwrap(),
                },
            )];
        }
        let mut stdout = io::stdout();
        let scratch = Scratch::new().unwrap();
        for (name, place) in &places {
            for b in Baseline::ALL {
                let f = run(b, place, bytes).unwrap_or_else(|e| panic!("{}: {e}", b.name()));
                // The CPU figure is checked against a known workload below: a few MiB
                // may cost a tool less than one clock tick (socat: 0.00 CPU-s).
                assert_eq!(f.bytes, bytes);
                assert!(f.seconds > 0.0);
                print_figures(&mut stdout, b, name, &f).unwrap();
            }
            let file = scratch.path("sink");
            let f = run_socat_to_file(place, bytes, &file).unwrap();
            assert_eq!(f.bytes, bytes);
            assert_eq!(std::fs::metadata(&file).unwrap().len(), bytes);
            print_figures(&mut stdout, Baseline::SocatTcp, name, &f).unwrap();
        }
    }

    /// Makes [`busy_workload`] a workload: `parent` or `child`.
    const BUSY_ROLE: &str = "RINGCAST_TEST_BUSY_ROLE";
    /// The CPU time each process of the workload burns.
    const SPIN: Duration = Duration::from_millis(200);
    /// What the workload prints when it is done spinning (then it waits for stdin to close).
    const SPUN: &str = "busy workload: spun";

    /// The CPU time (user + system, all threads) of this process.
    fn process_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write to.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        assert_eq!(r, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Keeps a core busy until this process has used `cpu` more CPU time.
    fn spin(cpu: Duration) {
        let start = process_cpu();
        let mut x = 0u64;
        while process_cpu() - start < cpu {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    /// This test binary running [`busy_workload`] as `role`.
    fn busy_process(role: &str) -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "baselines::tests::busy_workload", "--nocapture"])
            .env(BUSY_ROLE, role);
        c
    }

    /// Nothing unless [`BUSY_ROLE`] is set. As `parent`: spins for [`SPIN`], runs a `child`
    /// (spins for [`SPIN`] and exits) and reaps it, prints [`SPUN`] and stays alive until its
    /// stdin closes; so its tree has used at least 2 × [`SPIN`] of CPU, half of it in a reaped
    /// descendant.
    #[test]
    fn busy_workload() {
        match std::env::var(BUSY_ROLE).as_deref() {
            Ok("child") => spin(SPIN),
            Ok("parent") => {
                spin(SPIN);
                let st = busy_process("child")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success(), "busy child: {st}");
                println!("{SPUN}");
                let _ = io::stdin().read_to_end(&mut Vec::new());
            }
            _ => {}
        }
    }

    /// The CPU-seconds the figures report are those a known workload used: at least what it
    /// burned (its own and its reaped child's), at most what the machine's cores could have
    /// given it in the wall time it ran; both while it runs ([`tree_cpu_seconds`]) and once it
    /// has exited ([`stop_and_reap`]).
    #[test]
    fn cpu_seconds_of_a_known_busy_workload_are_counted() {
        use std::io::BufRead;
        // utime and stime are whole clock ticks (10 ms), each rounded down, per process.
        const SLACK: f64 = 0.05;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let burned = 2.0 * SPIN.as_secs_f64();
        let started = Instant::now();
        let mut p = busy_process("parent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = io::BufReader::new(p.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(SPUN) {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "the busy workload ended before it was done");
        }
        let live = tree_cpu_seconds(p.id());
        let wall = started.elapsed().as_secs_f64();
        println!("busy workload: {live:.2} CPU-s while running, {wall:.2} s wall, {cores} cores");
        assert!(
            live >= burned - SLACK && live <= wall * cores + SLACK,
            "{live} CPU-s counted for a workload that burned {burned} s in {wall:.2} s on \
             {cores} cores"
        );
        drop(p.stdin.take());
        let reaped = stop_and_reap(p, Duration::from_secs(10));
        let wall = started.elapsed().as_secs_f64();
        println!("busy workload: {reaped:.2} CPU-s once exited, {wall:.2} s wall");
        assert!(
            reaped >= live - SLACK && reaped <= wall * cores + SLACK,
            "{reaped} CPU-s counted at exit, {live} while running, in {wall:.2} s on {cores} cores"
        );
    }
}
