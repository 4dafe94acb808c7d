//! The test kit: what the tests and the benchmark harness share to run ringcast as users
//! do.
//!
//! * [`browser`]: headless Chromium driven over the DevTools protocol (the web client).
//! * [`bins`]: the workspace's binaries and the plugin library, from the build that runs
//!   the tests (never built from inside a test).
//! * [`clients`]: library sessions to a kit ringcastd that explain a failure to connect.
//! * [`daemon`]: a `ringcastd` process on a port of its own choosing, which the kit learns
//!   from its readiness line; restarts keep the address.
//! * [`data`]: deterministic streams addressable by offset, and their hashes.
//! * [`identity`]: client identities and an authorization file granting them rights.
//! * [`journal`]: a device's spool read back; the configuration of an in-process ringcastd.
//! * [`raw`]: a client that writes frames and bytes by hand, for testing the server.
//! * the fake devices of [`crate::devices`], re-exported.
//! * [`seccomp`]: filters that kill on, or deny, system calls (in a child process).
//! * [`tmpfs`]: a small disk that fills up.
//! * [`wait`]: waiting with a deadline, saying what was waited for and why each attempt
//!   failed.

pub mod bins;
pub mod browser;
pub mod clients;
pub mod daemon;
pub mod data;
pub mod identity;
pub mod journal;
pub mod raw;
pub mod seccomp;
pub mod tmpfs;
pub mod wait;

pub use crate::devices::{FakeAudio, FakeConsole};
pub use daemon::Ringcastd;
pub use data::{fill, sha, stream};
pub use identity::{authorized_client, client_identity};
pub use journal::{config, read_spool, write_journal};
pub use tmpfs::Tmpfs;
pub use wait::{wait_for, wait_until};

/// Whether the wall-clock tests (the lossy link's cuts and delays, the load scenario) are
/// skipped: `RINGCAST_SKIP_SLOW` is set, which `scripts/test.sh --fast` does for a quick
/// inner loop (CI never does). Says so on stderr when it skips.
pub fn skip_slow(what: &str) -> bool {
    let skip = std::env::var_os("RINGCAST_SKIP_SLOW").is_some();
    if skip {
        eprintln!("{what}: skipped, RINGCAST_SKIP_SLOW is set (scripts/test.sh --fast)");
    }
    skip
}
