//! The guest's deterministic byte stream (`rcguest gen`), reimplemented for the host side:
//! xorshift64* with the seed rule and byte order documented in `testbed/guest/README.md`.

/// An endless stream of pseudo-random bytes from a seed.
#[derive(Debug, Clone)]
pub struct GuestStream {
    x: u64,
    block: [u8; 8],
    used: usize,
}

impl GuestStream {
    /// The stream `rcguest gen --seed SEED` writes.
    pub fn new(seed: u64) -> Self {
        GuestStream {
            x: if seed != 0 {
                seed
            } else {
                0x9E37_79B9_7F4A_7C15
            },
            block: [0; 8],
            used: 8,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.x ^= self.x >> 12;
                self.x ^= self.x << 25;
                self.x ^= self.x >> 27;
                self.block = self.x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                self.used = 0;
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }

    /// The first `n` bytes of the stream for `seed`.
    pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        GuestStream::new(seed).fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn matches_the_vectors_pinned_for_the_guest_generator() {
        assert_eq!(
            hex(&GuestStream::bytes(1, 20)),
            "1ddd6c894bcee4471d6579e0a8a6cfab571f73eb"
        );
        assert_eq!(
            hex(&GuestStream::bytes(0, 20)),
            "7a48219ae2b3830d679dfef1794cc454780e7a00"
        );
        assert_eq!(
            hex(&GuestStream::bytes(0xdeadbeef, 13)),
            "daba81b651121546a6f23e26d8"
        );
    }

    #[test]
    fn chunked_fill_equals_one_fill() {
        let whole = GuestStream::bytes(42, 1000);
        let mut s = GuestStream::new(42);
        let mut parts = vec![0; 1000];
        for c in parts.chunks_mut(7) {
            s.fill(c);
        }
        assert_eq!(whole, parts);
    }
}
