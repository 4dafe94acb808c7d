//! docs/benchmarks.md §A: the cost of one write on QEMU's thread, shm-ring against rtrb,
//! crossbeam's `ArrayQueue` and a unix socket `write(2)`, all measured in the same run.
//!
//! [`report`] times batches of writes (p50/p99 per write), streams 4 KiB and 64 B between
//! two pinned threads and counts doorbell rings per idle→busy transition; `ringcast-bench a`
//! runs it. The criterion groups of `benches/ring.rs` reuse [`variants`] and the streaming
//! loop here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::report::Outcome;
use crate::scenario::{Options, Scenario};

pub mod report;
pub mod variants;

pub use variants::{Pair, Reader, Writer, PAYLOADS};

/// The scenario entry.
pub const SCENARIO: Scenario = Scenario {
    key: "a",
    title: "A. Cost of a write on QEMU's thread (shm-ring vs rtrb, ArrayQueue, socket write)",
    about: "Per-write p50/p99 at 1 B, 64 B, 1920 B and 4 KiB (batches of 32 timed writes, \
            variants sampled round-robin, ring drained untimed between batches), 4 KiB and \
            64 B streaming between two pinned threads (shm-ring vs rtrb, alternating runs), \
            and eventfd writes per idle->busy transition. Baselines: rtrb, crossbeam \
            ArrayQueue of 4 KiB chunks, write(2) on a unix socketpair. Full: about 10 s; \
            quick: about 1 s. `cargo bench -p benches --bench ring` adds criterion's view.",
    run,
};

fn run(opts: &Options) -> Result<Outcome, String> {
    opts.check_settings(&[])?;
    let full = !opts.quick;
    std::panic::catch_unwind(|| report::run(full)).map_err(|e| {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("the ring report failed: {why}")
    })
}

/// Pins the calling thread to `cpu` when asked to and the machine has it.
pub fn pin(cpu: usize) {
    if std::env::var("RING_PIN").as_deref() == Ok("0") {
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) <= cpu {
        return;
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Gives the calling thread every CPU back.
pub fn unpin() {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Streams `count` payloads through `tx` while `consumed` is advanced by a draining thread;
/// returns once every byte has been consumed. Spins (with a yield now and then, the machine
/// is shared) when the transport is full.
pub fn stream<W: Writer>(tx: &mut W, payload: &[u8], count: u64, consumed: &AtomicU64) -> Duration {
    let start_bytes = consumed.load(Ordering::Acquire);
    let target = start_bytes + count * payload.len() as u64;
    let t0 = Instant::now();
    for _ in 0..count {
        let mut rest = payload;
        let mut spins = 0u32;
        while !rest.is_empty() {
            let n = tx.write(rest);
            rest = &rest[n..];
            if n == 0 {
                spins += 1;
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    let mut spins = 0u32;
    while consumed.load(Ordering::Acquire) < target {
        spins += 1;
        if spins % 1024 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    t0.elapsed()
}

/// The consumer side of [`stream`]: drains until `stop`, publishing the byte count.
pub fn drain_until<R: Reader>(mut rx: R, stop: &AtomicBool, consumed: &AtomicU64) {
    pin(1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let n = rx.read(&mut buf);
        if n == 0 {
            idle += 1;
            if idle % 1024 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        idle = 0;
        total += n as u64;
        // Release: the producer's Acquire load sees every byte counted as really copied.
        consumed.store(total, Ordering::Release);
    }
}
