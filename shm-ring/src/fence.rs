//! The fences of the sleep handshake: a cheap one on the hot path and an expensive one on
//! the rare side that goes to sleep.
//!
//! A side that sleeps raises its flag, then looks at the peer's position; the peer publishes
//! its position, then looks at the flag. Each is a store followed by a load of another
//! word, which every CPU (x86 included) may reorder unless a full fence sits between them.
//! With a full fence on both sides, at least one of them sees the other's store: the sleeper
//! sees the new position, or the publisher sees the flag and rings the doorbell. A lost
//! wakeup is impossible.
//!
//! A full fence on every publish is what makes a ring slow, so the fence is asymmetric:
//!
//! * [`FenceMode::Membarrier`]: the hot path has only a compiler fence; the sleeping side
//!   calls `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which makes every running thread
//!   of every process registered for it execute a full fence (a thread that is not running
//!   went through a context switch, itself a full fence). Each compiler-fenced pair of the
//!   peer is then ordered as if it had its own full fence at some point of its program, which
//!   is all the argument above needs. The two sides are different processes: the
//!   process-private variant would order only the sleeper's own process, hence GLOBAL; and
//!   every process using this mode registers with `REGISTER_GLOBAL_EXPEDITED` once, before
//!   its first ring exists.
//! * [`FenceMode::SeqCst`]: where membarrier is unavailable (old kernel, seccomp, Miri),
//!   both the hot path and the sleeping side execute a SeqCst fence.
//!
//! The mode is per ring, chosen by the creator and written in the identity line: a side
//! attaching to a membarrier ring must be able to issue the call (it relies on the creator's
//! compiler-only fences), and refuses the ring otherwise; a side attaching to a SeqCst ring
//! fences its own hot path too. Loom cannot model membarrier: under loom both fences are
//! SeqCst fences, the pair membarrier is equivalent to.

use crate::error::RingError;

/// How a ring's sleep handshake is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum FenceMode {
    /// Compiler fence on the hot path, `membarrier(GLOBAL_EXPEDITED)` on the sleeping side.
    Membarrier = 1,
    /// A SeqCst fence on both.
    SeqCst = 2,
}

// Under loom rings are made on the heap, never opened from a peer: no use for these two.
#[cfg_attr(loom, allow(dead_code))]
impl FenceMode {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(FenceMode::Membarrier),
            2 => Some(FenceMode::SeqCst),
            _ => None,
        }
    }

    /// The mode this process can use, found out once (registering for membarrier on the
    /// way, see [`init`]).
    pub fn of_this_process() -> FenceMode {
        init().mode
    }

    /// Checks that this process can take part in a ring of mode `self`.
    pub(crate) fn check_attach(self) -> Result<FenceMode, RingError> {
        match (self, FenceMode::of_this_process()) {
            (FenceMode::Membarrier, FenceMode::SeqCst) => Err(RingError::FenceUnsupported),
            _ => Ok(self),
        }
    }

    /// The hot path's fence, between publishing a position and looking at the peer's flag.
    #[inline(always)]
    pub(crate) fn light(self) {
        #[cfg(loom)]
        {
            let _ = self;
            crate::sync::fence(crate::sync::Ordering::SeqCst);
        }
        #[cfg(not(loom))]
        match self {
            FenceMode::Membarrier => {
                std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst)
            }
            FenceMode::SeqCst => std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// The sleeping side's fence, between raising its flag and looking at the peer's
    /// position one last time.
    pub(crate) fn heavy(self) {
        crate::sync::fence(crate::sync::Ordering::SeqCst);
        #[cfg(not(any(loom, miri)))]
        if self == FenceMode::Membarrier
            && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited)
                .is_err()
        {
            // Not expected once `init` saw the call work (it does not depend on the
            // caller's state). The SeqCst fence above still orders this side; the peer's
            // compiler-fenced publish is then unordered, and a wakeup may come late (with
            // the peer's next publish). Counted, for the processes to report.
            MEMBARRIER_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How this process fences its rings, decided once by [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceStatus {
    /// The mode of the rings this process creates.
    pub mode: FenceMode,
    /// Why this process uses the SeqCst fallback instead of membarrier (`None`: it does
    /// not). Worth one log line: every publish then pays a full fence.
    pub fallback: Option<String>,
}

impl std::fmt::Display for FenceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fallback {
            None => write!(f, "membarrier (no fence on the write path)"),
            Some(why) => write!(f, "SeqCst fence on every write ({why})"),
        }
    }
}

#[cfg(not(any(loom, miri)))]
static MEMBARRIER_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Decides this process's fence mode, once: registers with
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` and issues one barrier to prove the call is
/// allowed, or falls back to SeqCst fences and says why. Call it when the process starts
/// (ringcastd) or the plugin is loaded, so that neither a write path nor a sleeping side
/// ever makes the first, slow registration; later calls return the same answer.
/// `SHM_RING_FENCE=seqcst` in the environment forces the fallback (for a process under a
/// seccomp filter that would kill it for the call, and for tests).
pub fn init() -> &'static FenceStatus {
    static STATUS: std::sync::OnceLock<FenceStatus> = std::sync::OnceLock::new();
    STATUS.get_or_init(detect)
}

/// Sleeping-side barriers that failed after [`init`] saw membarrier work (expected: 0).
pub fn membarrier_failures() -> u64 {
    #[cfg(not(any(loom, miri)))]
    {
        MEMBARRIER_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(any(loom, miri))]
    {
        0
    }
}

#[cfg(any(loom, miri))]
fn detect() -> FenceStatus {
    FenceStatus {
        mode: FenceMode::SeqCst,
        fallback: Some("membarrier is not modelled here".into()),
    }
}

#[cfg(not(any(loom, miri)))]
fn detect() -> FenceStatus {
    use rustix::thread::{membarrier, MembarrierCommand};
    let fallback = |why: String| FenceStatus {
        mode: FenceMode::SeqCst,
        fallback: Some(why),
    };
    if std::env::var_os("SHM_RING_FENCE").is_some_and(|v| v == "seqcst") {
        return fallback("SHM_RING_FENCE=seqcst is set".into());
    }
    // Registering makes this process a target of every GLOBAL_EXPEDITED barrier (that is
    // what lets its own hot path skip the fence); issuing one proves the call is allowed.
    let hint = |e: rustix::io::Errno| match e {
        rustix::io::Errno::NOSYS => "the kernel has no membarrier, or a seccomp filter denies it",
        rustix::io::Errno::PERM | rustix::io::Errno::ACCESS => {
            "a seccomp filter or security policy denies it"
        }
        rustix::io::Errno::INVAL => "the kernel is older than 4.16",
        _ => "unexpected error",
    };
    if let Err(e) = membarrier(MembarrierCommand::RegisterGlobalExpedited) {
        return fallback(format!(
            "membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) failed: {e}: {}",
            hint(e)
        ));
    }
    if let Err(e) = membarrier(MembarrierCommand::GlobalExpedited) {
        return fallback(format!(
            "membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) failed: {e}: {}",
            hint(e)
        ));
    }
    FenceStatus {
        mode: FenceMode::Membarrier,
        fallback: None,
    }
}
