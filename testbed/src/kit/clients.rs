//! Library clients of a test kit [`Ringcastd`]: sessions that retry while the server
//! starts and say, when they give up, why every attempt failed and what the server logged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::wait::Attempts;
use super::Ringcastd;
use client::{ErrorCode, Identity, Session, Trust};
use transport_quic::authz::{Rights, Rule, Who};

/// How long a library client keeps trying to reach a server that may be (re)starting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Library clients of a test kit [`Ringcastd`].
pub trait RingcastdExt {
    /// What a library client needs to reach this server (cheap to clone into tasks).
    fn target(&self) -> Target;
    /// A library session, retried until the server answers (it may be starting).
    fn session(&self) -> impl std::future::Future<Output = Session> + Send;
}

impl RingcastdExt for Ringcastd {
    fn target(&self) -> Target {
        Target {
            server: self.server(),
            known_hosts: self.dir.join("client/lib_known_hosts"),
            log: self.dir.join("ringcastd.log"),
            identity_dir: self.dir.join("client/lib_identity"),
            control_socket: self.control_socket(),
        }
    }

    fn session(&self) -> impl std::future::Future<Output = Session> + Send {
        let target = self.target();
        async move { target.session().await }
    }
}

/// The address and pinned identity of a ringcastd, for library clients, and its log (shown
/// when a client cannot connect); the library clients' own identity, which the kit has the
/// ringcastd authorize through its control socket (as `ringcast` does for the host's admin).
#[derive(Debug, Clone)]
pub struct Target {
    pub server: String,
    pub known_hosts: PathBuf,
    pub log: PathBuf,
    pub identity_dir: PathBuf,
    pub control_socket: PathBuf,
}

impl Target {
    pub fn trust(&self) -> Trust {
        Trust::KnownHosts(self.known_hosts.clone())
    }

    /// The library clients' identity (created on first use).
    pub fn identity(&self) -> Identity {
        super::identity::reused_client_identity(&self.identity_dir, "lib")
    }

    /// Has ringcastd grant the library clients' identity every right on every device.
    pub fn authorize(&self) -> Result<(), String> {
        let rule = Rule {
            who: Who::Fingerprint(self.identity().fingerprint()),
            patterns: vec!["*/*".into()],
            rights: Rights::ALL,
        };
        transport_quic::local::authorize(&self.control_socket, &rule)
    }

    /// A library session, retried for [`CONNECT_TIMEOUT`] (the server may be restarting);
    /// the failure lists every attempt's error and the end of the server's log.
    pub async fn session(&self) -> Session {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut attempts = Attempts::default();
        loop {
            match Session::connect(&self.server, Some(self.identity()), self.trust()).await {
                Ok(s) => return s,
                Err(e) if e.code() == Some(ErrorCode::NotAuthorized) => {
                    if let Err(why) = self.authorize() {
                        attempts.record(format!("{e}; authorizing it failed: {why}"));
                    }
                }
                Err(e) => attempts.record(e),
            }
            if Instant::now() >= deadline {
                panic!(
                    "cannot connect to ringcastd at {} within {CONNECT_TIMEOUT:?}; {}\n--- the end \
                     of {}:\n{}",
                    self.server,
                    attempts.summary(),
                    self.log.display(),
                    super::daemon::log_tail(&self.log, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
