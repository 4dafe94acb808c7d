//! Deterministic test data addressable by position: the bytes at any offset of a device's
//! stream can be computed without the ones before (unlike the guest's generator,
//! [`crate::stream::GuestStream`]), so a test checks any chunk, gap or resume point.

use sha2::{Digest, Sha256};

/// Fills `buf` with the bytes at positions `pos..` of the stream of `seed`.
pub fn fill(buf: &mut [u8], pos: u64, seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let p = pos + i as u64;
        let x = p.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        *b = (x >> 56) as u8 ^ (p as u8);
    }
}

/// The bytes `from..from + len` of the stream of `seed`.
pub fn stream(seed: u64, from: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(len).expect("a length that fits in memory")];
    fill(&mut v, from, seed);
    v
}

/// SHA-256 of `bytes` in hex (short to compare, readable in a failure).
pub fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_slice_equals_the_same_range_of_the_whole() {
        let whole = stream(7, 0, 10_000);
        assert_eq!(stream(7, 1234, 100), whole[1234..1334]);
        assert_ne!(stream(8, 0, 100), whole[..100]);
        assert_eq!(sha(&whole), sha(&stream(7, 0, 10_000)));
    }
}
