//! Reads an operation stream out of the fuzzer's bytes. Running out of bytes reads zeros,
//! so every input is a valid (possibly short) program.

/// A cursor over the fuzzer's input.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or None at the end (used to end the operation loop).
    pub fn op(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (h, t) = self.data.split_at(n);
        self.data = t;
        h
    }

    /// The next byte, 0 at the end.
    pub fn u8(&mut self) -> u8 {
        self.op().unwrap_or(0)
    }

    /// A little-endian u16, zero-padded at the end.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let src = self.bytes(2);
        b[..src.len()].copy_from_slice(src);
        u16::from_le_bytes(b)
    }

    /// A little-endian u32, zero-padded at the end.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let src = self.bytes(4);
        b[..src.len()].copy_from_slice(src);
        u32::from_le_bytes(b)
    }

    /// A little-endian u64, zero-padded at the end.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let src = self.bytes(8);
        b[..src.len()].copy_from_slice(src);
        u64::from_le_bytes(b)
    }

    /// A length below `max` (exclusive), biased towards small values and the edges.
    pub fn len(&mut self, max: usize) -> usize {
        if max == 0 {
            return 0;
        }
        match self.u8() % 8 {
            0 => 0,
            1 => max - 1,
            2 => (self.u8() as usize) % max,
            _ => (self.u16() as usize) % max,
        }
    }
}
