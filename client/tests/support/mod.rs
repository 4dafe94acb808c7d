//! ringcastd as users run it (a process with its QUIC listener on a free loopback port),
//! the `ringcast` binary beside it, and helpers shared by the fault and load tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Session, Trust};

/// target/<profile> of the running executable.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n != "deps") && p.join("deps").is_dir())
        .expect("a cargo target directory")
        .to_path_buf()
}

/// The `ringcastd` binary of the running test's profile (`cargo test --workspace` builds
/// it), built on demand when missing (a test cannot name another package's binary).
pub fn ringcastd_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let dir = profile_dir();
    BUILT.call_once(|| {
        if dir.join("ringcastd").exists() {
            return;
        }
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "sidecar", "--bin", "ringcastd"])
            .arg("--target-dir")
            .arg(dir.parent().expect("target dir"));
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building ringcastd failed");
    });
    dir.join("ringcastd")
}

/// The `ringcast` binary (built with this package's tests or examples).
pub fn ringcast_bin() -> PathBuf {
    let p = profile_dir().join("ringcast");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = profile_dir().file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "client", "--bin", "ringcast"]);
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building ringcast failed");
    }
    p
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A ringcastd process.
pub struct Ringcastd {
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub server: String,
    pub args: Vec<String>,
    pub state: PathBuf,
}

impl Ringcastd {
    /// Starts ringcastd with its sockets under `dir/run`, journals in `state` and `args`;
    /// its stderr goes to `dir/ringcastd.log`.
    pub fn start(dir: &Path, state: &Path, args: &[&str]) -> Ringcastd {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut d = Ringcastd {
            dir: dir.to_owned(),
            child: None,
            server: format!("127.0.0.1:{port}"),
            args: args.iter().map(|s| s.to_string()).collect(),
            state: state.to_owned(),
        };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/ringcastd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ringcastd.log")).unwrap_or_default()
    }

    /// (Re)starts the process on the same address, sockets and state.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ringcastd.log"))
            .unwrap();
        let child = Command::new(ringcastd_bin())
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--listen", &self.server])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ctl = self.dir.join("run/ringcastd.ctl");
        let sock = self.socket();
        let log_path = self.dir.join("ringcastd.log");
        wait_until("ringcastd's sockets", Duration::from_secs(30), || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "ringcastd exited ({st}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            sock.exists() && std::os::unix::net::UnixStream::connect(&ctl).is_ok()
        });
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `ringcastd stats`, as an operator runs it.
    pub fn stats_table(&self) -> String {
        let out = Command::new(ringcastd_bin())
            .args(["stats", "--socket-dir"])
            .arg(self.dir.join("run"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "ringcastd stats failed: {text}");
        text
    }

    /// The row of `device` in `ringcastd stats`, as (header, row) cells by column name.
    pub fn stats_row(&self, device: &str) -> Option<Vec<(String, String)>> {
        let table = self.stats_table();
        let mut lines = table.lines();
        let header = lines.next()?;
        let row = lines.find(|l| l.split_whitespace().next() == Some(device))?;
        // Columns are left-aligned at the header's word starts.
        let starts: Vec<usize> = header
            .char_indices()
            .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
            .map(|(i, _)| i)
            .collect();
        let mut cells = Vec::new();
        for (k, &s) in starts.iter().enumerate() {
            let e = starts.get(k + 1).copied().unwrap_or(usize::MAX);
            let name = header[s..e.min(header.len())].trim().to_owned();
            let value = row
                .get(s.min(row.len())..e.min(row.len()))
                .unwrap_or("")
                .trim()
                .to_owned();
            cells.push((name, value));
        }
        Some(cells)
    }

    /// The value of `column` in the row of `device` of `ringcastd stats`.
    pub fn stat(&self, device: &str, column: &str) -> Option<String> {
        self.stats_row(device)?
            .into_iter()
            .find(|(n, _)| n == column)
            .map(|(_, v)| v)
    }

    /// `ringcast` with a private known_hosts and identity, pointed at this server.
    pub fn ringcast(&self) -> Command {
        let client = self.dir.join("client");
        let mut c = Command::new(ringcast_bin());
        c.arg("--server")
            .arg(&self.server)
            .arg("--known-hosts")
            .arg(client.join("known_hosts"))
            .arg("--identity-dir")
            .arg(client.join("identity"))
            .env("HOME", client.join("home"))
            .env("XDG_CONFIG_HOME", client.join("home/.config"))
            .env("XDG_STATE_HOME", client.join("home/.local/state"))
            .env_remove("RINGCAST_SERVER");
        c
    }

    /// What a library client needs to reach this server (cheap to clone into tasks).
    pub fn target(&self) -> Target {
        Target {
            server: self.server.clone(),
            known_hosts: self.dir.join("client/lib_known_hosts"),
        }
    }

    /// A library session, retried until the server answers (it may be starting).
    pub async fn session(&self) -> Session {
        self.target().session().await
    }
}

/// The address and pinned identity of a ringcastd, for library clients.
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub known_hosts: PathBuf,
}

impl Target {
    pub fn trust(&self) -> Trust {
        Trust::KnownHosts(self.known_hosts.clone())
    }

    /// A library session, retried until the server answers (it may be starting).
    pub async fn session(&self) -> Session {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Session::connect(&self.server, None, self.trust()).await {
                Ok(s) => return s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot connect: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Drop for Ringcastd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Resident set of a process in KiB (VmRSS: anonymous, file and shared pages).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
