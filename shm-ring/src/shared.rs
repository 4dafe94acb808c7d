//! Copies between this process's buffers and the ring's data area, which the peer may
//! write at any moment.
//!
//! A plain copy (`ptr::copy_nonoverlapping`, memcpy) that overlaps a concurrent write is a
//! data race, which Rust's memory model makes undefined behaviour even when the value read
//! is thrown away afterwards. These copies use relaxed atomic accesses instead: aligned
//! 8-byte words in the middle, single bytes at the unaligned ends (the approach of the
//! `atomic-memcpy` crate). A racing write then yields bytes of unspecified value, never UB,
//! and the ring protocol validates the positions after the copy and discards such bytes.
//!
//! Ordering comes from the positions: the producer's Release publish after `store`, the
//! consumer's Acquire load before `load`. Relaxed is enough for the bytes themselves.

#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

/// How many leading bytes go one by one before `p` is 8-byte aligned (at most `len`).
#[cfg(not(loom))]
fn head_len(p: *const u8, len: usize) -> usize {
    // align_offset may answer usize::MAX ("cannot say", e.g. under Miri's symbolic
    // alignment): then every byte goes one by one, which is still correct.
    p.align_offset(8).min(len)
}

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
/// `src` is valid for reads of `dst.len()` bytes for the duration of the call, and this
/// process accesses those bytes only through atomics (this module) while they are shared.
#[cfg(not(loom))]
pub(crate) unsafe fn load(src: *const u8, dst: &mut [u8]) {
    let head = head_len(src, dst.len());
    let (first, rest) = dst.split_at_mut(head);
    for (i, b) in first.iter_mut().enumerate() {
        // SAFETY: `src + i` is inside the caller's range; AtomicU8 has no alignment need.
        *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Relaxed);
    }
    // SAFETY: `head <= dst.len()`: still inside the caller's range.
    let src = unsafe { src.add(head) };
    let done = rest.len() / 8 * 8;
    let mut words = rest.chunks_exact_mut(8);
    for (k, w) in words.by_ref().enumerate() {
        // SAFETY: `src` is 8-byte aligned (or `head` took every byte and there is no word),
        // and `src + 8k .. src + 8k + 8` is inside the caller's range.
        let v = unsafe { AtomicU64::from_ptr(src.add(8 * k).cast_mut().cast()) }.load(Relaxed);
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        // SAFETY: inside the caller's range, byte access.
        *b = unsafe { AtomicU8::from_ptr(src.add(done + i).cast_mut()) }.load(Relaxed);
    }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes for the duration of the call, and this
/// process accesses those bytes only through atomics (this module) while they are shared.
#[cfg(not(loom))]
pub(crate) unsafe fn store(src: &[u8], dst: *mut u8) {
    let head = head_len(dst, src.len());
    let (first, rest) = src.split_at(head);
    for (i, b) in first.iter().enumerate() {
        // SAFETY: `dst + i` is inside the caller's range; AtomicU8 has no alignment need.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(*b, Relaxed);
    }
    // SAFETY: `head <= src.len()`: still inside the caller's range.
    let dst = unsafe { dst.add(head) };
    let mut words = rest.chunks_exact(8);
    for (k, w) in words.by_ref().enumerate() {
        let mut v = [0u8; 8];
        v.copy_from_slice(w);
        // SAFETY: `dst` is 8-byte aligned here (see `load`), the word is inside the range.
        unsafe { AtomicU64::from_ptr(dst.add(8 * k).cast()) }.store(u64::from_ne_bytes(v), Relaxed);
    }
    let tail = words.remainder();
    let done = rest.len() - tail.len();
    for (i, b) in tail.iter().enumerate() {
        // SAFETY: inside the caller's range, byte access.
        unsafe { AtomicU8::from_ptr(dst.add(done + i)) }.store(*b, Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_offset_and_length_copies_exactly_in_both_directions() {
        // A u64-aligned backing store, so offsets 0..8 cover every alignment of the ends.
        let mut backing = vec![0u64; 12];
        let area = backing.as_mut_ptr().cast::<u8>();
        let src: Vec<u8> = (1..=80).collect();
        for off in 0..9 {
            for len in 0..=(80 - off).min(70) {
                // SAFETY: off + len <= 80 < 96 bytes of the backing store.
                unsafe {
                    std::ptr::write_bytes(area, 0, 96);
                    store(&src[..len], area.add(off));
                }
                let mut out = vec![0xaau8; len];
                // SAFETY: as above.
                unsafe { load(area.add(off), &mut out) };
                assert_eq!(out, src[..len], "offset {off}, length {len}");
                // Nothing outside the range was touched.
                let mut all = vec![0u8; 96];
                // SAFETY: the whole backing store.
                unsafe { load(area, &mut all) };
                assert!(all[..off].iter().all(|&b| b == 0), "before, {off}/{len}");
                assert!(
                    all[off + len..].iter().all(|&b| b == 0),
                    "after, {off}/{len}"
                );
            }
        }
    }
}
