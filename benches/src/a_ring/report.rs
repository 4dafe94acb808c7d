//! The §A report: what criterion does not give.
//!
//! * p50 / p99 ns per write, from batches of [`BATCH`] writes timed with `Instant` (the
//!   ring is drained, untimed, between batches, so no write ever finds it full or owes a
//!   wakeup). Variants are sampled round-robin so that the machine's noise hits all alike.
//!   The median cost of an empty timed batch is subtracted. A p99 here is the 99th
//!   percentile of 32-write averages, not of single writes.
//! * 4 KiB and 64 B streaming, shm-ring vs rtrb, alternating runs, median of the runs.
//! * Doorbell rings (eventfd writes) per idle→busy transition of a consumer that sleeps.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shm_ring::{byte_ring_pair, Doorbell, RingKind, RingMemory};

use crate::report::{Comparison, Measurement, Outcome};

use super::variants::{
    ArrayQueueChunks, Pair, Reader, Rtrb, ShmBytes, ShmRecords, SocketPair, Writer, PAYLOADS,
};

/// Writes per timed batch.
const BATCH: usize = 32;

/// The report's figures, for the table and the JSON lines.
struct Results {
    outcome: Outcome,
}

impl Results {
    fn add(&mut self, variant: &str, metric: &str, value: f64, unit: &str) {
        self.outcome
            .measurements
            .push(Measurement::new(variant, metric, value, unit));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Median cost of timing nothing, in ns.
fn timer_overhead(samples: usize) -> f64 {
    let mut v: Vec<f64> = (0..samples)
        .map(|_| {
            let t0 = Instant::now();
            let t1 = Instant::now();
            (t1 - t0).as_nanos() as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// One variant's state for write-latency sampling.
struct Sampler<P: Pair> {
    tx: P::Tx,
    rx: P::Rx,
    payload: Vec<u8>,
    buf: Vec<u8>,
    per_write_ns: Vec<f64>,
}

impl<P: Pair> Sampler<P> {
    fn new(size: usize) -> Self {
        let (mut tx, mut rx) = P::pair();
        let mut buf = vec![0u8; 64 * 1024];
        // Steady state: send twice the capacity through first, so no timed write takes the
        // first-touch page fault of a fresh buffer (shmem faults cost microseconds).
        let page = [0u8; 4096];
        for _ in 0..2 * super::variants::RING_BYTES / page.len() {
            let n = tx.write(&page);
            let mut left = n;
            while left > 0 {
                left -= rx.read(&mut buf);
            }
        }
        Sampler {
            tx,
            rx,
            payload: vec![0x3cu8; size],
            buf,
            per_write_ns: Vec::new(),
        }
    }

    /// Times one batch of writes, then drains untimed.
    fn sample(&mut self, overhead_ns: f64) {
        let t0 = Instant::now();
        let mut written = 0;
        for _ in 0..BATCH {
            written += self.tx.write(std::hint::black_box(&self.payload));
        }
        let dt = t0.elapsed().as_nanos() as f64;
        assert_eq!(
            written,
            BATCH * self.payload.len(),
            "{}: short write",
            P::NAME
        );
        self.per_write_ns
            .push(((dt - overhead_ns).max(0.0)) / BATCH as f64);
        let mut left = written;
        while left > 0 {
            let n = self.rx.read(&mut self.buf);
            assert!(n > 0, "{}: lost bytes", P::NAME);
            left -= n;
        }
    }

    /// (p50, p99) in ns per write.
    fn percentiles(&mut self) -> (f64, f64) {
        self.per_write_ns.sort_by(f64::total_cmp);
        (
            percentile(&self.per_write_ns, 0.5),
            percentile(&self.per_write_ns, 0.99),
        )
    }
}

/// Streams `count` writes of `size` bytes through a fresh `P`, with a draining thread.
/// Returns bytes per second.
fn stream_rate<P: Pair>(size: usize, count: u64) -> f64
where
    P::Rx: Send,
{
    let (mut tx, rx) = P::pair();
    let payload = vec![0x77u8; size];
    let stop = AtomicBool::new(false);
    let consumed = AtomicU64::new(0);
    let dt = std::thread::scope(|s| {
        s.spawn(|| super::drain_until(rx, &stop, &consumed));
        super::pin(0);
        // Fault the ring's pages in before timing.
        super::stream(&mut tx, &payload, (1 << 20) / size as u64, &consumed);
        let dt = super::stream(&mut tx, &payload, count, &consumed);
        stop.store(true, Ordering::Relaxed);
        dt
    });
    super::unpin();
    (count * size as u64) as f64 / dt.as_secs_f64()
}

/// Counts of the doorbell test.
#[derive(Debug, Default)]
struct DoorbellCounts {
    /// Eventfd writes by the producer.
    rings: u64,
    /// Times the consumer, asleep, found data again.
    idle_to_busy: u64,
    /// Wakeups where the eventfd had really been written.
    woken_by_bell: u64,
    /// Bytes received.
    bytes: u64,
}

/// A producer writes `bursts` bursts of `per_burst` 64-byte writes, pausing `pause`
/// between bursts (zero: one continuous stream); the consumer reads until empty, then
/// sleeps on its doorbell after `prepare_sleep`. Counts eventfd writes and idle→busy
/// transitions.
fn doorbell_test(bursts: u64, per_burst: u64, pause: Duration) -> DoorbellCounts {
    let mem = RingMemory::create("bench-doorbell", RingKind::Bytes, 1 << 20, 0).expect("ring");
    let (mut tx, mut rx) = byte_ring_pair(mem).expect("pair");
    let bell = Doorbell::new().expect("eventfd");
    let bell_rx = bell.try_clone().expect("dup");
    let stop = AtomicBool::new(false);
    let payload = [0x11u8; 64];
    /// Stops the consumer even when the producer panics, so the scope can end.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            // Release: the consumer's Acquire load sees every write before the flag.
            self.0.store(true, Ordering::Release);
        }
    }
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            super::pin(1);
            let mut c = DoorbellCounts::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut asleep = false;
            loop {
                let r = rx.read(&mut buf).expect("read");
                if r.bytes > 0 {
                    if asleep {
                        c.idle_to_busy += 1;
                        asleep = false;
                    }
                    c.bytes += r.bytes as u64;
                    continue;
                }
                // Acquire: pairs with the producer's Release store after its last write.
                if stop.load(Ordering::Acquire) && rx.available().expect("available") == 0 {
                    break;
                }
                if rx.prepare_sleep().expect("prepare_sleep") {
                    asleep = true;
                    if bell_rx.wait(20) && bell_rx.drain() {
                        c.woken_by_bell += 1;
                    }
                }
            }
            c
        });
        super::pin(0);
        let stopper = StopOnDrop(&stop);
        let mut rings = 0;
        for _ in 0..bursts {
            for _ in 0..per_burst {
                let mut rest = &payload[..];
                while !rest.is_empty() {
                    let w = tx.write(rest).expect("write");
                    if w.wake_consumer {
                        bell.ring();
                        rings += 1;
                    }
                    rest = &rest[w.bytes..];
                    if w.bytes == 0 {
                        // Full: the consumer is awake (it sleeps only on an empty ring).
                        std::thread::yield_now();
                    }
                }
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        drop(stopper);
        let mut c = consumer.join().expect("consumer");
        super::unpin();
        c.rings = rings;
        c
    })
}

/// Runs the report, printing progress as it goes, and returns its figures. `full` false: a
/// smoke run with small counts.
pub fn run(full: bool) -> Outcome {
    let mut res = Results {
        outcome: Outcome::default(),
    };
    let samples = if full { 20_000 } else { 200 };
    let overhead = timer_overhead(if full { 100_000 } else { 1000 });
    eprintln!("== A. write latency: {samples} batches of {BATCH} writes per variant and size");
    eprintln!("   timer overhead per batch (subtracted): {overhead:.1} ns");
    res.add("timer", "batch_overhead", overhead, "ns");
    eprintln!(
        "{:<18} {:>6} {:>10} {:>10} {:>12}",
        "variant", "bytes", "p50 ns", "p99 ns", "p50 vs shm"
    );
    for &size in &PAYLOADS {
        let mut shm = Sampler::<ShmBytes>::new(size);
        let mut rec = Sampler::<ShmRecords>::new(size);
        let mut rt = Sampler::<Rtrb>::new(size);
        let mut aq = Sampler::<ArrayQueueChunks>::new(size);
        let mut sock = Sampler::<SocketPair>::new(size);
        // The socket costs ~100x the rings: fewer samples of it keep the run short while
        // still interleaving it with the others.
        let sock_every = 4;
        for i in 0..samples {
            shm.sample(overhead);
            rec.sample(overhead);
            rt.sample(overhead);
            aq.sample(overhead);
            if i % sock_every == 0 {
                sock.sample(overhead);
            }
        }
        let (shm50, shm99) = shm.percentiles();
        let rows = [
            ("shm-ring", (shm50, shm99)),
            ("shm-ring-records", rec.percentiles()),
            ("rtrb", rt.percentiles()),
            ("arrayqueue", aq.percentiles()),
            ("socketpair", sock.percentiles()),
        ];
        for (name, (p50, p99)) in rows {
            eprintln!(
                "{name:<18} {size:>6} {p50:>10.1} {p99:>10.1} {:>11.2}x",
                p50 / shm50
            );
            res.add(name, &format!("write_p50_{size}B"), p50, "ns");
            res.add(name, &format!("write_p99_{size}B"), p99, "ns");
        }
        let ratio = rows[4].1 .0 / shm50;
        eprintln!("   socket / shm-ring at {size} B (p50): {ratio:.0}x (target >= 50x)");
        if size <= 64 {
            eprintln!(
                "   shm-ring {size} B: p50 {shm50:.1} ns (target <= 20), p99 {shm99:.1} ns (target <= 100)"
            );
        }
    }

    let rounds = if full { 7 } else { 1 };
    eprintln!("== A. streaming, producer on CPU 0, consumer on CPU 1, median of {rounds} alternating runs");
    for (size, count) in [(4096usize, 1u64 << 16), (64, 1 << 20)] {
        let count = if full { count } else { count / 64 };
        let mut shm = Vec::new();
        let mut rt = Vec::new();
        for _ in 0..rounds {
            shm.push(stream_rate::<ShmBytes>(size, count));
            rt.push(stream_rate::<Rtrb>(size, count));
        }
        shm.sort_by(f64::total_cmp);
        rt.sort_by(f64::total_cmp);
        let (s, r) = (percentile(&shm, 0.5), percentile(&rt, 0.5));
        eprintln!(
            "   {size:>5} B: shm-ring {:.2} GB/s, rtrb {:.2} GB/s, ratio {:.2} (target >= 1.0 at 4 KiB)",
            s / 1e9,
            r / 1e9,
            s / r
        );
        res.add("shm-ring", &format!("stream_{size}B"), s / 1e9, "GB/s");
        res.add("rtrb", &format!("stream_{size}B"), r / 1e9, "GB/s");
    }

    eprintln!("== A. doorbell: eventfd writes per idle->busy transition (target <= 1)");
    let (bursts, cont) = if full { (2000, 1 << 20) } else { (20, 1 << 12) };
    for (label, b, per, pause) in [
        ("bursts", bursts, 64, Duration::from_micros(200)),
        ("continuous", 1, cont, Duration::ZERO),
    ] {
        let c = doorbell_test(b, per, pause);
        assert_eq!(c.bytes, b * per * 64, "doorbell test lost bytes");
        let per_transition = c.rings as f64 / c.idle_to_busy.max(1) as f64;
        eprintln!(
            "   {label:<10}: {} writes, {} eventfd writes, {} idle->busy transitions, {} wakeups by the bell, {per_transition:.3} per transition",
            b * per,
            c.rings,
            c.idle_to_busy,
            c.woken_by_bell
        );
        res.add(label, "eventfd_writes", c.rings as f64, "count");
        res.add(label, "idle_to_busy", c.idle_to_busy as f64, "count");
        res.add(label, "eventfd_per_transition", per_transition, "x");
    }
    // The socket and rtrb each against shm-ring; shm-ring's streaming against rtrb's.
    let c = &mut res.outcome.comparisons;
    for (variant, baseline) in [("socketpair", "shm-ring"), ("shm-ring", "rtrb")] {
        c.push(Comparison {
            variant: variant.into(),
            baseline: baseline.into(),
        });
    }
    res.outcome
}
