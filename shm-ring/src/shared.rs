//! Copies between this process's buffers and the ring's data area, which the peer may
//! write at any moment.
//!
//! A plain copy (`ptr::copy_nonoverlapping`, memcpy) that overlaps a concurrent write is a
//! data race, which Rust's memory model makes undefined behaviour even when the value read
//! is thrown away afterwards. These copies are made of relaxed atomic byte accesses
//! instead: on x86-64, inline assembly whose moves the architecture defines as such (see
//! `x86`: overlapping vector moves up to 64 bytes, `rep movsb` above); elsewhere and under
//! Miri, relaxed atomic 8-byte words in the middle and single bytes at the unaligned ends
//! (the approach of the `atomic-memcpy` crate). A racing write then yields bytes of
//! unspecified value, never UB, and the ring protocol validates the positions after the
//! copy and discards such bytes.
//!
//! Ordering comes from the positions: the producer's Release publish after `store`, the
//! consumer's Acquire load before `load`. Relaxed is enough for the bytes themselves.
//!
//! One location may be written as a byte and later read as part of a word (the two sides
//! split a copy at different places). Between honest sides such accesses never race: the
//! positions order them. Only a misbehaving peer races with a copy, and the peer is another
//! process; what this side then reads is of unspecified value and discarded. Miri's
//! weak-memory emulation cannot represent this mix of sizes (scripts/miri.sh turns it off).

#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

/// How many leading bytes go one by one before `p` is 8-byte aligned (at most `len`).
#[cfg(not(loom))]
fn head_len(p: *const u8, len: usize) -> usize {
    // align_offset may answer usize::MAX ("cannot say", e.g. under Miri's symbolic
    // alignment): then every byte goes one by one, which is still correct.
    p.align_offset(8).min(len)
}

/// [`load`] made of relaxed atomic words and bytes: where there is no x86-64 copy (and
/// under Miri, which cannot run inline assembly).
///
/// # Safety
/// As for [`load`].
#[cfg(not(loom))]
#[cfg_attr(all(target_arch = "x86_64", not(miri)), allow(dead_code))]
unsafe fn load_words(src: *const u8, dst: &mut [u8]) {
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

/// [`store`] made of relaxed atomic words and bytes.
///
/// # Safety
/// As for [`store`].
#[cfg(not(loom))]
#[cfg_attr(all(target_arch = "x86_64", not(miri)), allow(dead_code))]
unsafe fn store_words(src: &[u8], dst: *mut u8) {
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

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
/// `src` is valid for reads of `dst.len()` bytes for the duration of the call, and this
/// process accesses those bytes only through atomics (this module) while they are shared.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) unsafe fn load(src: *const u8, dst: &mut [u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: the caller's contract; `dst` is an exclusive buffer of `dst.len()` bytes.
    unsafe {
        x86::copy(src, dst.as_mut_ptr(), dst.len())
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        load_words(src, dst)
    }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes for the duration of the call, and this
/// process accesses those bytes only through atomics (this module) while they are shared.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) unsafe fn store(src: &[u8], dst: *mut u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: the caller's contract; `src` is a Rust buffer of `src.len()` bytes.
    unsafe {
        x86::copy(src.as_ptr(), dst, src.len())
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    // SAFETY: the caller's contract, forwarded.
    unsafe {
        store_words(src, dst)
    }
}

/// The x86-64 copies: inline assembly whose memory accesses are, by the architecture, a
/// set of single-copy-atomic byte accesses (x86-64 never tears a byte, whatever the width
/// or alignment of the instruction that moves it). That is exactly what a loop of relaxed
/// `AtomicU8` loads and stores does, in an unspecified order, so the copy has the same
/// defined behaviour under a concurrent peer write: bytes of unspecified value, never UB
/// (inline assembly may do what Rust code could do, and the compiler treats the block as
/// an opaque access to the memory it is given). Ordering comes from the positions, as for
/// the portable copies: each block is also a compiler barrier for memory.
///
/// Up to 64 bytes (a console line, the common write) the copy is two or four overlapping
/// unaligned vector or word moves, with no loop and no branch on alignment; larger copies
/// are one `rep movsb`, which current cores run at the speed of `memcpy`.
#[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
mod x86 {
    use std::arch::asm;

    /// Copies `len` bytes from `src` to `dst` (non-overlapping ranges).
    ///
    /// # Safety
    /// `src` is valid for reads and `dst` for writes of `len` bytes, and the ranges do not
    /// overlap.
    #[inline(always)]
    pub(super) unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: each move below reads `src + i .. src + i + w` and writes
        // `dst + i .. dst + i + w` with `0 <= i` and `i + w <= len`: inside the caller's
        // ranges. No stack use; the flags are not touched (`rep movsb` runs forwards: the
        // ABI keeps the direction flag clear).
        unsafe {
            if len >= 32 {
                if len > 64 {
                    asm!(
                        "rep movsb",
                        inout("rcx") len => _,
                        inout("rsi") src => _,
                        inout("rdi") dst => _,
                        options(nostack, preserves_flags)
                    );
                } else {
                    // 32..=64: the first 32 and the last 32 bytes.
                    asm!(
                        "movdqu {a}, xmmword ptr [{s}]",
                        "movdqu {b}, xmmword ptr [{s} + 16]",
                        "movdqu {c}, xmmword ptr [{s} + {n} - 32]",
                        "movdqu {e}, xmmword ptr [{s} + {n} - 16]",
                        "movdqu xmmword ptr [{d}], {a}",
                        "movdqu xmmword ptr [{d} + 16], {b}",
                        "movdqu xmmword ptr [{d} + {n} - 32], {c}",
                        "movdqu xmmword ptr [{d} + {n} - 16], {e}",
                        s = in(reg) src,
                        d = in(reg) dst,
                        n = in(reg) len,
                        a = out(xmm_reg) _,
                        b = out(xmm_reg) _,
                        c = out(xmm_reg) _,
                        e = out(xmm_reg) _,
                        options(nostack, preserves_flags)
                    );
                }
            } else if len >= 16 {
                // 16..32: the first 16 and the last 16 bytes.
                asm!(
                    "movdqu {a}, xmmword ptr [{s}]",
                    "movdqu {b}, xmmword ptr [{s} + {n} - 16]",
                    "movdqu xmmword ptr [{d}], {a}",
                    "movdqu xmmword ptr [{d} + {n} - 16], {b}",
                    s = in(reg) src,
                    d = in(reg) dst,
                    n = in(reg) len,
                    a = out(xmm_reg) _,
                    b = out(xmm_reg) _,
                    options(nostack, preserves_flags)
                );
            } else if len >= 8 {
                // 8..16: the first 8 and the last 8 bytes.
                asm!(
                    "mov {a}, qword ptr [{s}]",
                    "mov {b}, qword ptr [{s} + {n} - 8]",
                    "mov qword ptr [{d}], {a}",
                    "mov qword ptr [{d} + {n} - 8], {b}",
                    s = in(reg) src,
                    d = in(reg) dst,
                    n = in(reg) len,
                    a = out(reg) _,
                    b = out(reg) _,
                    options(nostack, preserves_flags)
                );
            } else if len >= 4 {
                // 4..8: the first 4 and the last 4 bytes.
                asm!(
                    "mov {a:e}, dword ptr [{s}]",
                    "mov {b:e}, dword ptr [{s} + {n} - 4]",
                    "mov dword ptr [{d}], {a:e}",
                    "mov dword ptr [{d} + {n} - 4], {b:e}",
                    s = in(reg) src,
                    d = in(reg) dst,
                    n = in(reg) len,
                    a = out(reg) _,
                    b = out(reg) _,
                    options(nostack, preserves_flags)
                );
            } else {
                // 0..4: byte by byte.
                for i in 0..len {
                    asm!(
                        "mov {a}, byte ptr [{s}]",
                        "mov byte ptr [{d}], {a}",
                        s = in(reg) src.add(i),
                        d = in(reg) dst.add(i),
                        a = out(reg_byte) _,
                        options(nostack, preserves_flags)
                    );
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_offset_and_length_copies_exactly_in_both_directions() {
        check_copies(
            // SAFETY: forwarded from the caller (ranges inside the backing store).
            |s, d| unsafe { load(s, d) },
            // SAFETY: as above.
            |s, d| unsafe { store(s, d) },
        );
    }

    #[test]
    fn the_portable_word_copies_copy_exactly_too() {
        check_copies(
            // SAFETY: forwarded from the caller (ranges inside the backing store).
            |s, d| unsafe { load_words(s, d) },
            // SAFETY: as above.
            |s, d| unsafe { store_words(s, d) },
        );
    }

    fn check_copies(load: impl Fn(*const u8, &mut [u8]), store: impl Fn(&[u8], *mut u8)) {
        // A u64-aligned backing store, so offsets 0..8 cover every alignment of the ends;
        // lengths up to 150 cover every size class of the copies.
        const AREA: usize = 192;
        let mut backing = vec![0u64; AREA / 8];
        let area = backing.as_mut_ptr().cast::<u8>();
        let src: Vec<u8> = (1..=160).collect();
        for off in 0..9 {
            for len in 0..=150 {
                // SAFETY: off + len <= 158 < AREA bytes of the backing store.
                unsafe { std::ptr::write_bytes(area, 0, AREA) };
                // SAFETY: off <= 8 is inside the backing store.
                let at = unsafe { area.add(off) };
                store(&src[..len], at);
                let mut out = vec![0xaau8; len];
                load(at, &mut out);
                assert_eq!(out, src[..len], "offset {off}, length {len}");
                // Nothing outside the range was touched.
                let mut all = vec![0u8; AREA];
                load(area, &mut all);
                assert!(all[..off].iter().all(|&b| b == 0), "before, {off}/{len}");
                assert!(
                    all[off + len..].iter().all(|&b| b == 0),
                    "after, {off}/{len}"
                );
            }
        }
    }
}
