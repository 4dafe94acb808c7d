//! BENCHMARKS.md §A: the cost of one write on QEMU's thread.
//!
//! Two parts, both run by `cargo bench -p benches --bench ring`:
//!
//! * a report (see `report.rs`): p50/p99 per write from batches of 32 timed writes, the
//!   socket/shm-ring ratio, interleaved 4 KiB streaming shm-ring vs rtrb, and the count of
//!   doorbell rings per idle→busy transition; printed and written as JSON lines to
//!   `target/bench-results/ring.jsonl`;
//! * criterion groups: `same-thread` (write then read back, one thread) for every payload and
//!   variant, and `cross-thread` (producer throughput while a consumer thread drains).
//!
//! `RING_BENCH=report` runs only the report, `RING_BENCH=criterion` only criterion. Threads
//! are pinned (producer CPU 0, consumer CPU 1) unless `RING_PIN=0`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};

#[path = "ring/report.rs"]
mod report;
#[path = "ring/variants.rs"]
mod variants;

use variants::{Pair, Reader, Writer, PAYLOADS};

/// One write and one read of the same payload in the same thread: the ring never fills
/// and nobody sleeps, so no wakeup is ever due.
fn same_thread<P: Pair>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    for &size in &PAYLOADS {
        let (mut tx, mut rx) = P::pair();
        let payload = vec![0x5au8; size];
        let mut buf = vec![0u8; size.max(64)];
        c.throughput(Throughput::Bytes(size as u64));
        c.bench_with_input(BenchmarkId::new(P::NAME, size), &size, |b, _| {
            b.iter(|| {
                let n = tx.write(std::hint::black_box(&payload));
                debug_assert_eq!(n, size);
                let got = rx.read(&mut buf);
                debug_assert_eq!(got, size);
                std::hint::black_box(got)
            })
        });
    }
}

/// Pins the calling thread to `cpu` when asked to and the machine has it.
pub(crate) fn pin(cpu: usize) {
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
pub(crate) fn unpin() {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Streams `count` payloads through `tx` while `consumed` is advanced by a draining thread;
/// returns once every byte has been consumed. Spins (with a yield now and then, the machine
/// is shared) when the transport is full.
pub(crate) fn stream<W: Writer>(
    tx: &mut W,
    payload: &[u8],
    count: u64,
    consumed: &AtomicU64,
) -> Duration {
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
pub(crate) fn drain_until<R: Reader>(mut rx: R, stop: &AtomicBool, consumed: &AtomicU64) {
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

/// Producer throughput while a consumer thread drains continuously.
fn cross_thread<P: Pair>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>)
where
    P::Rx: Send,
{
    for &size in &[64usize, 4096] {
        let (mut tx, rx) = P::pair();
        let payload = vec![0xa5u8; size];
        let stop = AtomicBool::new(false);
        let consumed = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| drain_until(rx, &stop, &consumed));
            pin(0);
            c.throughput(Throughput::Bytes(size as u64));
            c.bench_with_input(BenchmarkId::new(P::NAME, size), &size, |b, _| {
                b.iter_custom(|iters| stream(&mut tx, &payload, iters, &consumed))
            });
            stop.store(true, Ordering::Relaxed);
        });
        unpin();
    }
}

fn criterion_groups(c: &mut Criterion) {
    let mut g = c.benchmark_group("same-thread");
    same_thread::<variants::ShmBytes>(&mut g);
    same_thread::<variants::ShmRecords>(&mut g);
    same_thread::<variants::Rtrb>(&mut g);
    same_thread::<variants::ArrayQueueChunks>(&mut g);
    same_thread::<variants::SocketPair>(&mut g);
    g.finish();

    let mut g = c.benchmark_group("cross-thread");
    cross_thread::<variants::ShmBytes>(&mut g);
    cross_thread::<variants::Rtrb>(&mut g);
    cross_thread::<variants::ArrayQueueChunks>(&mut g);
    cross_thread::<variants::SocketPair>(&mut g);
    g.finish();
}

fn main() {
    let mode = std::env::var("RING_BENCH").unwrap_or_default();
    // `cargo bench` passes --bench; `cargo test --benches` does not: then only a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    if mode != "criterion" {
        report::run(full);
    }
    if mode != "report" {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1200))
            .sample_size(30)
            .configure_from_args();
        criterion_groups(&mut c);
        c.final_summary();
    }
}
