//! The processes a scenario runs and what the kernel says about them: the release binaries
//! (built on demand), a `ringcastd` with its own state directory, and per-process CPU time,
//! memory and wakeups from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binaries and plugin of the scenarios that run ringcast as users do, next to this
/// executable (same profile).
#[derive(Debug, Clone)]
pub struct Bins {
    /// The daemon.
    pub ringcastd: PathBuf,
    /// testbed's stand-in QEMU (loads the real plugin).
    pub fake_qemu: PathBuf,
    /// `libringcast_backend.so`.
    pub plugin: PathBuf,
    /// The client CLI.
    pub ringcast: PathBuf,
}

/// Builds (if needed) and locates the binaries, with the profile of this executable.
pub fn bins() -> Result<Bins, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no exe dir")?.to_path_buf();
    let b = Bins {
        ringcastd: dir.join("ringcastd"),
        fake_qemu: dir.join("fake-qemu"),
        plugin: dir.join("libringcast_backend.so"),
        ringcast: dir.join("ringcast"),
    };
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = dir.parent().ok_or("no target dir")?;
    // Target selections apply to every package named, so the plugin (a library) is built
    // on its own.
    for what in [
        &[
            "-p",
            "sidecar",
            "--bin",
            "ringcastd",
            "-p",
            "testbed",
            "--bin",
            "fake-qemu",
            "-p",
            "client",
            "--bin",
            "ringcast",
        ][..],
        &["-p", "backend-so", "--lib"][..],
    ] {
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--quiet"])
            .args(what)
            .arg("--target-dir")
            .arg(target);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
        if !st.success() {
            return Err(format!("cargo build {} failed", what.join(" ")));
        }
    }
    Ok(b)
}

/// A client identity created in `id_dir` and an authorization file `authz` granting it
/// `rights` (e.g. `read`, `read,write,spy`) on every device: what a remote client needs
/// (clients beyond loopback must present an authorized certificate).
pub fn authorized_client(
    id_dir: &Path,
    authz: &Path,
    rights: &str,
) -> Result<client::Identity, String> {
    std::fs::create_dir_all(id_dir).map_err(|e| e.to_string())?;
    let identity = client::Identity::create(id_dir, "bench", "bench", &["bench".to_owned()])
        .map_err(|e| format!("client identity: {e}"))?;
    std::fs::write(authz, format!("{} */* {rights}\n", identity.fingerprint()))
        .map_err(|e| e.to_string())?;
    Ok(identity)
}

/// A free loopback UDP port (for a QUIC server).
pub fn free_port() -> Result<u16, String> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free UDP port: {e}"))
}

/// A running `ringcastd` with everything under one directory; killed when dropped.
#[derive(Debug)]
pub struct Ringcastd {
    child: Child,
    /// Registration socket.
    pub socket: PathBuf,
    /// `host:port` of its QUIC server.
    pub server: String,
    /// Its state directory.
    pub state: PathBuf,
}

impl Ringcastd {
    /// Starts ringcastd in `dir` (run/, state/, home/ below it, log in ringcastd.log) with
    /// `args` added, listening on a free loopback port, and waits until it answers.
    pub fn start(bins: &Bins, dir: &Path, args: &[&str]) -> Result<Ringcastd, String> {
        let server = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(&bins.ringcastd);
        cmd.args(args);
        Ringcastd::spawn(cmd, dir, server)
    }

    /// Runs `cmd` (ringcastd, with its own arguments, maybe inside a network namespace) as
    /// [`Ringcastd::start`] does: state under `dir`, QUIC on `server`, and waits until it
    /// answers on its control socket.
    pub fn spawn(mut cmd: Command, dir: &Path, server: String) -> Result<Ringcastd, String> {
        for d in ["run", "state", "home"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        let socket = dir.join("run/ringcastd.sock");
        let log = std::fs::File::create(dir.join("ringcastd.log")).map_err(|e| e.to_string())?;
        let child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &server])
            .env("HOME", dir.join("home"))
            .env("XDG_CONFIG_HOME", dir.join("home/.config"))
            .env("XDG_STATE_HOME", dir.join("home/.local/state"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("ringcastd: {e}"))?;
        let mut d = Ringcastd {
            child,
            socket,
            server,
            state: dir.join("state"),
        };
        let ctl = dir.join("run/ringcastd.ctl");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(d.socket.exists() && std::os::unix::net::UnixStream::connect(&ctl).is_ok()) {
            if let Ok(Some(st)) = d.child.try_wait() {
                return Err(format!(
                    "ringcastd exited: {st} (log: {})",
                    dir.join("ringcastd.log").display()
                ));
            }
            if Instant::now() > deadline {
                return Err("ringcastd did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ringcastd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a live process, in seconds.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Memory of a live process from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: all resident pages.
    pub rss: u64,
    /// RssAnon: private memory (heap, stacks).
    pub anon: u64,
    /// RssShmem: shared memory mapped (the rings' memfds).
    pub shmem: u64,
}

/// Reads [`Memory`] of `pid` (zeros if it is gone).
pub fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        shmem: field("RssShmem:"),
    }
}

/// Context switches of every thread of `pid` so far (voluntary + involuntary): each is a
/// wakeup of some thread, so a process that polls shows a steady count while idle.
pub fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            s.lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}
