//! docs/benchmarks.md §A: the cost of one write on QEMU's thread.
//!
//! Two parts, both run by `cargo bench -p benches --bench ring`:
//!
//! * a report (`benches::a_ring::report`, also `ringcast-bench a`): p50/p99 per write from
//!   batches of 32 timed writes, the socket/shm-ring ratio, interleaved 4 KiB streaming shm-ring vs rtrb, and the count of
//!   doorbell rings per idle→busy transition; printed and written as JSON lines to
//!   `target/bench-results/a.jsonl`;
//! * criterion groups: `same-thread` (write then read back, one thread) for every payload and
//!   variant, and `cross-thread` (producer throughput while a consumer thread drains).
//!
//! `RING_BENCH=report` runs only the report, `RING_BENCH=criterion` only criterion. Threads
//! are pinned (producer CPU 0, consumer CPU 1) unless `RING_PIN=0`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

use benches::a_ring::{
    self, drain_until, pin, stream, unpin, variants, Pair, Reader, Writer, PAYLOADS,
};
use benches::report::{append_jsonl, render_table};

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
        let outcome = a_ring::report::run(full);
        print!(
            "{}",
            render_table("A. cost of a write on QEMU's thread", &outcome)
        );
        save(&outcome);
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

/// Appends the report's figures to `target/bench-results/a.jsonl`, as `ringcast-bench a`
/// does (the bench binary lives in `target/<profile>/deps/`).
fn save(outcome: &benches::report::Outcome) {
    let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|p| p.to_path_buf()))
    else {
        return;
    };
    let run_id = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        std::process::id()
    );
    match append_jsonl(&target.join("bench-results"), "a", outcome, &run_id) {
        Ok(path) => println!("results: {}", path.display()),
        Err(e) => eprintln!("could not write the results: {e}"),
    }
}
