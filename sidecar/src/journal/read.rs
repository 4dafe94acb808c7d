//! Reading a journal: where the bytes at an offset are (RAM, a segment file, or a gap).

use super::*;

/// Where the bytes at a cursor are.
#[derive(Debug)]
pub(crate) enum ReadAt {
    /// Nothing there yet.
    Pending,
    /// Bytes copied out of RAM.
    Bytes(Bytes),
    /// Bytes in a segment file.
    Disk {
        path: PathBuf,
        seg_start: u64,
        file_offset: u64,
        len: usize,
    },
    /// The bytes from the cursor on are not available.
    Gap { len: u64, reason: GapReason },
}

impl Journal {
    /// Whether the segment starting at `seg_start` is still listed and holds `cursor`.
    pub fn lists_segment(&self, seg_start: u64, cursor: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.start == seg_start && cursor < s.start + s.len)
    }

    /// Where the bytes at `cursor` are (at most `max` of them, and at most one RAM block or
    /// [`DISK_READ`] bytes of one segment).
    pub fn read_at(&self, cursor: u64, max: usize) -> ReadAt {
        if cursor >= self.end {
            return ReadAt::Pending;
        }
        let max = max.clamp(1, DISK_READ);
        let ri = self.ram.partition_point(|b| b.start <= cursor);
        if ri > 0 {
            let b = &self.ram[ri - 1];
            let b_end = b.start + b.data.len() as u64;
            if cursor < b_end {
                let from = (cursor - b.start) as usize;
                let n = (b.data.len() - from).min(max);
                return ReadAt::Bytes(Bytes::copy_from_slice(&b.data[from..from + n]));
            }
        }
        let si = self.segments.partition_point(|s| s.start <= cursor);
        if si > 0 {
            let s = &self.segments[si - 1];
            if cursor < s.start + s.len {
                let n = (s.start + s.len - cursor).min(max as u64) as usize;
                return ReadAt::Disk {
                    path: s.path.clone(),
                    seg_start: s.start,
                    file_offset: cursor - s.start,
                    len: n,
                };
            }
        }
        let mut next = self.end;
        if let Some(b) = self.ram.get(ri) {
            next = next.min(b.start);
        }
        if let Some(s) = self.segments.iter().skip(si).find(|s| s.len > 0) {
            next = next.min(s.start);
        }
        if cursor < self.meta.pruned_to {
            ReadAt::Gap {
                len: next.min(self.meta.pruned_to) - cursor,
                reason: GapReason::Retention,
            }
        } else {
            ReadAt::Gap {
                len: next - cursor,
                reason: GapReason::Lost,
            }
        }
    }
}
