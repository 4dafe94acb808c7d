//! The processes a scenario runs and what the kernel says about them: the release binaries
//! (of the build that runs the harness), a `ringcastd` with its own state directory, and
//! per-process CPU time, memory and wakeups from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Locates the binaries beside this executable (same profile). Nothing is built here: a
/// missing binary is an error naming the command that builds it.
pub fn bins() -> Result<Bins, String> {
    use testbed::kit::bins::{try_binary, try_plugin};
    Ok(Bins {
        ringcastd: try_binary("ringcastd")?,
        fake_qemu: try_binary("fake-qemu")?,
        plugin: try_plugin()?,
        ringcast: try_binary("ringcast")?,
    })
}

/// A client identity created in `id_dir` and an authorization file `authz` granting it
/// `rights` (e.g. `read`, `read,write,spy`) on every device: what a remote client needs
/// (clients beyond loopback must present an authorized certificate).
pub fn authorized_client(
    id_dir: &Path,
    authz: &Path,
    rights: &str,
) -> Result<client::Identity, String> {
    testbed::kit::identity::try_authorized_client(id_dir, "bench", authz, rights)
}

pub use testbed::kit::Ringcastd;

/// Starts `bins.ringcastd` in `dir` (run/, state/, log in ringcastd.log) with `args`
/// added, on a loopback port it picks, and waits until it is ready.
pub fn start_ringcastd(bins: &Bins, dir: &Path, args: &[&str]) -> Result<Ringcastd, String> {
    let bin = bins.ringcastd.clone();
    let mut d = Ringcastd::with_launcher(
        dir,
        &dir.join("state"),
        Box::new(move || Command::new(&bin)),
    )
    .args(args)
    .rust_log("warn");
    d.try_spawn()?;
    Ok(d)
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
