//! The hostile peer: a second mapping of a ring's memfd through which it writes any word or
//! byte of the header and data area, the way another process sharing the ring could.

use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};

use shm_ring::RingMemory;

use crate::input::Input;

/// Header word index of the write position (byte offset 64).
pub const WRITE_POS: usize = 8;
/// Header word index of the read position (byte offset 128).
pub const READ_POS: usize = 16;
/// Header word index of the producer's discard floor (byte offset 192).
pub const DISCARD_FLOOR: usize = 24;
/// Bytes before the data area.
pub const HEADER: usize = 256;
/// Bit 63 of a position word: the peer's sleep/wait flag.
pub const FLAG: u64 = 1 << 63;

/// A raw second mapping of a ring region.
#[derive(Debug)]
pub struct Peer {
    map: memmap2::MmapRaw,
}

impl Peer {
    /// Maps the region behind `mem` a second time.
    pub fn map(mem: &RingMemory) -> Peer {
        let fd = mem.fd().try_clone_to_owned().expect("dup ring memfd");
        Peer::map_file(&File::from(fd))
    }

    /// Maps a ring region received as a file.
    pub fn map_file(file: &File) -> Peer {
        let map = memmap2::MmapOptions::new()
            .map_raw(file)
            .expect("map ring memfd");
        Peer { map }
    }

    /// Bytes mapped (header plus data).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty mapping (never for a ring).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    fn word(&self, idx: usize) -> &AtomicU64 {
        assert!((idx + 1) * 8 <= self.map.len());
        // SAFETY: the word lies inside the live mapping (asserted), is 8-byte aligned (the
        // mapping is page aligned) and the ring side accesses header words only atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(idx * 8).cast()) }
    }

    /// Reads header (or data) word `idx`.
    pub fn load(&self, idx: usize) -> u64 {
        self.word(idx).load(SeqCst)
    }

    /// Overwrites word `idx`.
    pub fn store(&self, idx: usize, v: u64) {
        self.word(idx).store(v, SeqCst)
    }

    /// Overwrites the byte at `offset` from the start of the region.
    pub fn poke(&self, offset: usize, v: u8) {
        assert!(offset < self.map.len());
        // SAFETY: the byte lies inside the live mapping; the fuzz targets are single-threaded,
        // so no copy of the ring side runs at the same time.
        unsafe { AtomicU8::from_ptr(self.map.as_mut_ptr().add(offset)) }.store(v, SeqCst)
    }

    /// Writes a header word chosen and shaped by the input, biased towards the two
    /// positions and towards values close to the current ones. Returns the word index.
    pub fn scribble_header(&self, inp: &mut Input<'_>, cap: u64) -> usize {
        let sel = inp.u8();
        let idx = match sel {
            0..=95 => WRITE_POS,
            96..=191 => READ_POS,
            _ => sel as usize % (HEADER / 8),
        };
        let cur = self.load(idx);
        let v = match inp.u8() % 8 {
            0 => inp.u64(),
            1 => cur.wrapping_add(inp.u16() as i16 as i64 as u64),
            2 => cur ^ FLAG,
            3 => cur.wrapping_add(cap * u64::from(inp.u8() % 4 + 1)),
            4 => cur.wrapping_sub(1 + u64::from(inp.u8())),
            5 => {
                [0, u64::MAX, FLAG - 1, FLAG, 1 << 62, cap, cap - 1, cap + 1][inp.u8() as usize % 8]
            }
            6 => self
                .load(if idx == WRITE_POS {
                    READ_POS
                } else {
                    WRITE_POS
                })
                .wrapping_add(u64::from(inp.u8())),
            _ => (cur & FLAG) | (inp.u32() as u64),
        };
        self.store(idx, v);
        idx
    }

    /// Writes a few data bytes at an offset chosen by the input.
    pub fn scribble_data(&self, inp: &mut Input<'_>) {
        let data = self.map.len() - HEADER;
        let at = inp.u16() as usize % data;
        let n = inp.u8() as usize % 9;
        for (i, &b) in inp.bytes(n).iter().enumerate() {
            self.poke(HEADER + (at + i) % data, b);
        }
    }
}
