//! `ringcastd` as users run it: a process with its registration and control sockets under
//! `<dir>/run`, its log in `<dir>/ringcastd.log` and its QUIC server on a port the kernel
//! picks (`--listen 127.0.0.1:0`). The kit learns the address from ringcastd's readiness
//! line on stdout (`ready quic=ADDR socket=PATH`), printed only once QEMU can register and
//! clients can connect; a restart asks for the same address again.

use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::bins;

/// How long a start may take before the kit gives up (and shows the log).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the command that runs ringcastd (the binary, or a wrapper such as a network
/// namespace's `ip netns exec … ringcastd`); the kit adds the sockets, state and address.
pub type Launcher = Box<dyn Fn() -> Command + Send + Sync>;

/// A running (or killed, to be restarted) ringcastd; killed when dropped.
pub struct Ringcastd {
    /// Its directory: `run/` (sockets), `ringcastd.log`, `client/` (for [`Ringcastd::ringcast`]).
    pub dir: PathBuf,
    /// Its journal directory.
    pub state: PathBuf,
    launcher: Launcher,
    args: Vec<OsString>,
    rust_log: String,
    listen: String,
    server: Option<String>,
    child: Option<Child>,
}

impl std::fmt::Debug for Ringcastd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ringcastd")
            .field("dir", &self.dir)
            .field("server", &self.server)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl Ringcastd {
    /// A ringcastd of this profile's build (not started): journals in `state`, everything
    /// else under `dir`, `args` added to its command line, QUIC on a free loopback port.
    pub fn new(dir: &Path, state: &Path, args: &[&str]) -> Result<Ringcastd, String> {
        let bin = bins::try_binary("ringcastd")?;
        Ok(Ringcastd::with_binary(dir, state, bin).args(args))
    }

    /// Like [`Ringcastd::new`] with the binary at `bin` (a package's own binary in its
    /// tests: `env!("CARGO_BIN_EXE_ringcastd")`).
    pub fn with_binary(dir: &Path, state: &Path, bin: impl Into<PathBuf>) -> Ringcastd {
        let bin = bin.into();
        Ringcastd::with_launcher(dir, state, Box::new(move || Command::new(&bin)))
    }

    /// Like [`Ringcastd::new`] with the command made by `launcher`.
    pub fn with_launcher(dir: &Path, state: &Path, launcher: Launcher) -> Ringcastd {
        Ringcastd {
            dir: dir.to_owned(),
            state: state.to_owned(),
            launcher,
            args: Vec::new(),
            rust_log: "info".into(),
            listen: "127.0.0.1:0".into(),
            server: None,
            child: None,
        }
    }

    /// Adds command-line arguments.
    pub fn args<S: Into<OsString> + Clone>(mut self, args: &[S]) -> Ringcastd {
        self.args.extend(args.iter().cloned().map(Into::into));
        self
    }

    /// The address to listen on (default `127.0.0.1:0`; a fixed one inside a network
    /// namespace of its own).
    pub fn listen(mut self, addr: &str) -> Ringcastd {
        self.listen = addr.to_owned();
        self
    }

    /// No `--listen` on the command line: ringcastd's own default address (127.0.0.1:7878),
    /// for tests of that default.
    pub fn default_listen(mut self) -> Ringcastd {
        self.listen.clear();
        self
    }

    /// The log level (`RUST_LOG`, default `info`).
    pub fn rust_log(mut self, level: &str) -> Ringcastd {
        self.rust_log = level.to_owned();
        self
    }

    /// Starts ringcastd from this profile's build, as [`Ringcastd::new`] describes, and
    /// waits until it is ready; panics with its log if it is not.
    pub fn start(dir: &Path, state: &Path, args: &[&str]) -> Ringcastd {
        let mut d = Ringcastd::new(dir, state, args).unwrap_or_else(|e| panic!("{e}"));
        d.spawn();
        d
    }

    /// Starts (or restarts, on the address it had) the process and waits for its
    /// readiness line; panics with the reason and its log if it does not come.
    pub fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// [`Ringcastd::spawn`] returning the failure (with the log's last lines).
    pub fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "ringcastd is already running");
        std::fs::create_dir_all(self.dir.join("run"))
            .map_err(|e| format!("cannot create {}: {e}", self.dir.join("run").display()))?;
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        // A restart keeps the address clients know.
        let listen = self.server.clone().unwrap_or_else(|| self.listen.clone());
        let mut cmd = (self.launcher)();
        if !listen.is_empty() {
            cmd.args(["--listen", &listen]);
        }
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(&self.state)
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .env("NO_COLOR", "1")
            // Its own home: no authorization file or setting of the machine applies.
            .env("HOME", self.dir.join("home"))
            .env("XDG_CONFIG_HOME", self.dir.join("home/.config"))
            .env("XDG_STATE_HOME", self.dir.join("home/.local/state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run ringcastd ({cmd:?}): {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        let started = Instant::now();
        let fail = |d: &mut Ringcastd, why: String| {
            d.kill9();
            Err(format!(
                "ringcastd (listen {listen}, dir {}) {why}; the end of {}:\n{}",
                d.dir.display(),
                log_path.display(),
                d.log_tail(30)
            ))
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    if let Some(addr) = parse_ready(&line) {
                        if addr == "-" {
                            self.server = None;
                        } else {
                            self.server = Some(addr.to_owned());
                        }
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is gone or going; reap it below.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return fail(self, format!("exited ({st}) before it was ready"));
            }
            if started.elapsed() > START_TIMEOUT {
                return fail(
                    self,
                    format!("printed no readiness line within {START_TIMEOUT:?}"),
                );
            }
        }
    }

    /// `host:port` of its QUIC server (the address it reported).
    pub fn server(&self) -> String {
        self.server
            .clone()
            .expect("ringcastd has reported no QUIC address (not started, or --no-network)")
    }

    /// The registration socket QEMU (or a fake device) connects to.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/ringcastd.sock")
    }

    /// The control socket (`ringcastd stats`, `ringcastd authorize`).
    pub fn control_socket(&self) -> PathBuf {
        self.socket_dir().join("ringcastd.ctl")
    }

    /// The socket directory, for `ringcastd stats --socket-dir`.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("ringcastd.log")
    }

    /// Its whole log (every start appends).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log_path(), n)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("ringcastd is not running").id()
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polls `f` until it holds; after `timeout`, panics naming `what` with the end of
    /// ringcastd's log (a wait on something ringcastd does).
    pub fn wait_until(&self, what: &str, timeout: Duration, f: impl FnMut() -> bool) {
        if let Err(e) = super::wait::try_wait_until(what, timeout, f) {
            panic!(
                "{e}; the end of {}:\n{}",
                self.log_path().display(),
                self.log_tail(30)
            );
        }
    }

    /// `ringcastd stats`, as an operator runs it.
    pub fn stats_table(&self) -> String {
        let out = Command::new(bins::binary("ringcastd"))
            .args(["stats", "--socket-dir"])
            .arg(self.socket_dir())
            .output()
            .expect("running ringcastd stats");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ringcastd stats failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// The row of `device` in `ringcastd stats`, as (column, value) by the header.
    pub fn stats_row(&self, device: &str) -> Option<Vec<(String, String)>> {
        table_row(&self.stats_table(), device)
    }

    /// The value of `column` in the row of `device` of `ringcastd stats`.
    pub fn stat(&self, device: &str, column: &str) -> Option<String> {
        self.stats_row(device)?
            .into_iter()
            .find(|(n, _)| n == column)
            .map(|(_, v)| v)
    }

    /// The `ringcast` CLI pointed at this server, with its own known_hosts, identity and
    /// home under `<dir>/client`.
    pub fn ringcast(&self) -> Command {
        let client = self.dir.join("client");
        let mut c = Command::new(bins::binary("ringcast"));
        c.arg("--server")
            .arg(self.server())
            .arg("--known-hosts")
            .arg(client.join("known_hosts"))
            .arg("--identity-dir")
            .arg(client.join("identity"))
            .env("RINGCAST_CONTROL_SOCKET", self.control_socket())
            .env("HOME", client.join("home"))
            .env("XDG_CONFIG_HOME", client.join("home/.config"))
            .env("XDG_STATE_HOME", client.join("home/.local/state"))
            .env_remove("RINGCAST_SERVER");
        c
    }
}

impl Drop for Ringcastd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `n` lines of the log file at `path` (empty when it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The QUIC address of a readiness line (`ready quic=ADDR socket=PATH`).
pub fn parse_ready(line: &str) -> Option<&str> {
    line.strip_prefix("ready ")?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("quic="))
}

/// The row of `key` (its first cell) in a table whose columns are left-aligned at the
/// header's word starts, as (column, value) pairs.
pub fn table_row(table: &str, key: &str) -> Option<Vec<(String, String)>> {
    let mut lines = table.lines();
    let header = lines.next()?;
    // The key may hold spaces (`prod db/serial0`): the first column ends at two spaces.
    let row = lines.find(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("  "))
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_line_gives_the_address() {
        assert_eq!(
            parse_ready("ready quic=127.0.0.1:40211 socket=/run/x.sock"),
            Some("127.0.0.1:40211")
        );
        assert_eq!(parse_ready("ready quic=- socket=/s"), Some("-"));
        assert_eq!(parse_ready("2026 INFO ready quic=1"), None);
        assert_eq!(parse_ready("ready socket=/s"), None);
    }

    #[test]
    fn a_table_row_is_read_by_its_header() {
        let t = "DEVICE   KIND     BYTES\nvm/a     console  12\nvm/b     audio    7\n";
        let row = table_row(t, "vm/b").unwrap();
        assert_eq!(
            row,
            vec![
                ("DEVICE".into(), "vm/b".into()),
                ("KIND".into(), "audio".into()),
                ("BYTES".into(), "7".into())
            ]
        );
        assert!(table_row(t, "vm/c").is_none());
    }
}
