//! Fuzz target bodies for ringcast's attack surfaces.
//!
//! Each module has a `run(data)` that decodes `data` as an operation stream and checks the
//! invariants as it goes (a violated invariant is a panic). The same functions back the
//! cargo-fuzz binaries in `fuzz_targets/` and the stable smoke tests in `tests/smoke.rs`,
//! which replay the committed corpora plus seeded random inputs without a fuzzer.

pub mod handover_decode;
pub mod input;
pub mod peer;
pub mod plugin_abi_ops;
pub mod ring_consumer_vs_hostile_producer;
pub mod ring_producer_vs_hostile_consumer;
pub mod ring_target;
pub mod wire_decode;

/// The byte a well-behaved producer writes at stream position `pos`, so a reader can check
/// every byte it gets against the position it was told.
pub fn pattern(pos: u64) -> u8 {
    (pos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Fills `buf` with the pattern of the stream positions starting at `pos`.
pub fn fill_pattern(buf: &mut [u8], pos: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(pos + i as u64);
    }
}

/// A small deterministic generator (splitmix64) for the smoke tests' random inputs.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
