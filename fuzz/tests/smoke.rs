//! Runs every fuzz target's body, without a fuzzer, over its committed seed corpus and
//! artifacts, then over seeded random inputs: a stable-toolchain smoke test for CI.
//!
//! `RINGCAST_FUZZ_SMOKE_RUNS=N` scales the random inputs (default: the counts below).

use std::path::Path;

use ringcast_fuzz::SplitMix;

fn runs(default: usize) -> usize {
    std::env::var("RINGCAST_FUZZ_SMOKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn smoke(target: &str, body: fn(&[u8]), random: usize, max_len: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| body(&data));
            assert!(r.is_ok(), "{target}: {} fails", f.display());
            seeds.push(data);
        }
    }
    assert!(!seeds.is_empty(), "{target}: no seed corpus");
    // A different but fixed seed per target.
    let mut rng = SplitMix(target.bytes().fold(0x5EED, |h: u64, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    for i in 0..runs(random) {
        // Half fresh random bytes, half a seed with a few bytes changed and maybe cut short.
        let data = if i & 1 == 0 {
            let len = rng.next_u64() as usize % max_len;
            rng.bytes(len)
        } else {
            let mut d = seeds[rng.next_u64() as usize % seeds.len()].clone();
            for _ in 0..1 + rng.next_u64() % 4 {
                if !d.is_empty() {
                    let at = rng.next_u64() as usize % d.len();
                    d[at] = rng.next_u64() as u8;
                }
            }
            if rng.next_u64() & 3 == 0 {
                d.truncate(rng.next_u64() as usize % (d.len() + 1));
            }
            d
        };
        let r = std::panic::catch_unwind(|| body(&data));
        assert!(r.is_ok(), "{target}: random input {i} fails: {data:?}");
    }
}

#[test]
fn ring_consumer_vs_hostile_producer() {
    smoke(
        "ring_consumer_vs_hostile_producer",
        ringcast_fuzz::ring_consumer_vs_hostile_producer::run,
        5000,
        512,
    );
}

#[test]
fn ring_producer_vs_hostile_consumer() {
    smoke(
        "ring_producer_vs_hostile_consumer",
        ringcast_fuzz::ring_producer_vs_hostile_consumer::run,
        5000,
        512,
    );
}

#[test]
fn wire_decode() {
    smoke(
        "wire_decode",
        ringcast_fuzz::wire_decode::run,
        20000,
        4096,
    );
}

#[test]
fn handover_decode() {
    smoke(
        "handover_decode",
        ringcast_fuzz::handover_decode::run,
        20000,
        1200,
    );
}

#[test]
fn plugin_abi_ops() {
    smoke(
        "plugin_abi_ops",
        ringcast_fuzz::plugin_abi_ops::run,
        2000,
        1024,
    );
}
