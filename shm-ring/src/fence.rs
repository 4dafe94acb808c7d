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
    /// way). `SHM_RING_FENCE=seqcst` in the environment forces the SeqCst fallback (for a
    /// process under a seccomp filter that denies membarrier, and for tests).
    pub fn of_this_process() -> FenceMode {
        #[cfg(any(loom, miri))]
        {
            FenceMode::SeqCst
        }
        #[cfg(not(any(loom, miri)))]
        {
            static MODE: std::sync::OnceLock<FenceMode> = std::sync::OnceLock::new();
            *MODE.get_or_init(detect)
        }
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
        if self == FenceMode::Membarrier {
            // Cannot fail once `detect` saw it work: the command does not depend on the
            // caller's state. Were it to fail anyway, the SeqCst fence above still orders
            // this side; only the peer's compiler-fenced publish would be unordered.
            let _ = rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited);
        }
    }
}

#[cfg(not(any(loom, miri)))]
fn detect() -> FenceMode {
    use rustix::thread::{membarrier, membarrier_query, MembarrierCommand, MembarrierQuery};
    if std::env::var_os("SHM_RING_FENCE").is_some_and(|v| v == "seqcst") {
        return FenceMode::SeqCst;
    }
    let q = membarrier_query();
    if !q.contains(MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED) {
        return FenceMode::SeqCst;
    }
    // Registering makes this process a target of every GLOBAL_EXPEDITED barrier (that is
    // what lets its own hot path skip the fence); issuing one proves the call is allowed.
    if membarrier(MembarrierCommand::RegisterGlobalExpedited).is_err()
        || membarrier(MembarrierCommand::GlobalExpedited).is_err()
    {
        return FenceMode::SeqCst;
    }
    FenceMode::Membarrier
}
