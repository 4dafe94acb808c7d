//! Received console bytes to a file without copying them: the chunks a [`ConsoleStream`]
//! hands out (slices of what the connection received) are gathered and written with one
//! vectored write per batch, straight from where they arrived.
//!
//! [`ConsoleStream`]: crate::ConsoleStream

use std::io::{self, IoSlice, Seek, SeekFrom, Write};

use bytes::Bytes;

/// Bytes gathered before they are written (one `writev`).
pub const BATCH: usize = 1 << 20;
/// Most chunks in one write (Linux takes up to 1024 slices per `writev`).
const MAX_SLICES: usize = 512;

/// Gathers chunks and writes them to `W` in large vectored writes; what a failed write
/// left unwritten stays queued (a later [`ChunkWriter::flush`] retries it from there).
/// Dropping it writes what is queued, ignoring errors, as `std::io::BufWriter` does: call
/// [`ChunkWriter::flush`] or [`ChunkWriter::into_inner`] to see them.
#[derive(Debug)]
pub struct ChunkWriter<W: Write> {
    /// Always `Some`, except after [`ChunkWriter::into_inner`] took it.
    inner: Option<W>,
    chunks: Vec<Bytes>,
    queued: usize,
    batch: usize,
}

impl<W: Write> ChunkWriter<W> {
    /// A writer to `inner` writing [`BATCH`] bytes at a time.
    pub fn new(inner: W) -> Self {
        Self::with_batch(inner, BATCH)
    }

    /// A writer to `inner` writing once `batch` bytes (or 512 chunks) are queued.
    pub fn with_batch(inner: W, batch: usize) -> Self {
        ChunkWriter {
            inner: Some(inner),
            chunks: Vec::new(),
            queued: 0,
            batch: batch.max(1),
        }
    }

    /// Queues `bytes` (no copy), writing the queue once a batch is full.
    pub fn push(&mut self, bytes: Bytes) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.queued += bytes.len();
        self.chunks.push(bytes);
        if self.queued >= self.batch || self.chunks.len() >= MAX_SLICES {
            self.write_queued()?;
        }
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Writes what is queued and flushes the writer beneath.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_queued()?;
        self.inner_mut()?.flush()
    }

    /// Writes what is queued and returns the writer beneath.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.write_queued()?;
        self.inner.take().ok_or_else(gone)
    }

    fn inner_mut(&mut self) -> io::Result<&mut W> {
        self.inner.as_mut().ok_or_else(gone)
    }

    /// Writes the queue in vectored writes, dropping each chunk once written.
    fn write_queued(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.chunks.len() {
                break Ok(());
            }
            let slices: Vec<IoSlice<'_>> = self.chunks[done..]
                .iter()
                .map(|c| IoSlice::new(c))
                .collect();
            let Some(inner) = self.inner.as_mut() else {
                break Err(gone());
            };
            let mut n = match inner.write_vectored(&slices) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            drop(slices);
            self.queued -= n;
            while n > 0 {
                let c = &mut self.chunks[done];
                if n >= c.len() {
                    n -= c.len();
                    done += 1;
                } else {
                    let _ = c.split_to(n);
                    n = 0;
                }
            }
        };
        self.chunks.drain(..done);
        result
    }
}

impl<W: Write + Seek> ChunkWriter<W> {
    /// Writes what is queued, then moves the writer to `offset` (a console gap becomes a
    /// hole in the file).
    pub fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        self.write_queued()?;
        self.inner_mut()?.seek(SeekFrom::Start(offset)).map(|_| ())
    }
}

impl<W: Write> Drop for ChunkWriter<W> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = self.write_queued();
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the chunk writer's file was already handed back")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer taking at most `max` bytes per call and failing once after `fail_after`
    /// bytes, to exercise partial and failed writes.
    struct Stingy {
        out: Vec<u8>,
        max: usize,
        fail_after: Option<usize>,
        calls: usize,
    }

    impl Write for Stingy {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.fail_after.is_some_and(|f| self.out.len() >= f) {
                self.fail_after = None;
                return Err(io::Error::other("disk full"));
            }
            let mut n = 0;
            for b in bufs {
                let k = (self.max - n).min(b.len());
                self.out.extend_from_slice(&b[..k]);
                n += k;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn partial_writes_keep_every_byte_in_order() {
        let data = pattern(100_000);
        let inner = Stingy {
            out: Vec::new(),
            max: 3001,
            fail_after: None,
            calls: 0,
        };
        let mut w = ChunkWriter::with_batch(inner, 10_000);
        let all = Bytes::from(data.clone());
        let mut at = 0;
        for (i, size) in [1usize, 999, 4096, 65536, 17, 0, 28_000]
            .iter()
            .cycle()
            .enumerate()
        {
            let k = (*size).min(data.len() - at);
            w.push(all.slice(at..at + k)).unwrap();
            at += k;
            if at == data.len() || i > 1000 {
                break;
            }
        }
        assert_eq!(at, data.len());
        let inner = w.into_inner().unwrap();
        assert_eq!(inner.out, data);
        // Batched: far fewer writes than a write per 3001 bytes of each chunk would take.
        assert!(
            inner.calls <= data.len() / 3001 + 8,
            "{} calls",
            inner.calls
        );
    }

    #[test]
    fn a_failed_write_keeps_what_it_did_not_write() {
        let data = pattern(50_000);
        let inner = Stingy {
            out: Vec::new(),
            max: 7000,
            fail_after: Some(20_000),
            calls: 0,
        };
        let mut w = ChunkWriter::with_batch(inner, usize::MAX);
        for c in data.chunks(4000) {
            w.push(Bytes::copy_from_slice(c)).unwrap();
        }
        assert!(w.flush().is_err());
        assert_eq!(w.queued(), 50_000 - 21_000);
        w.flush().unwrap();
        assert_eq!(w.queued(), 0);
        assert_eq!(w.into_inner().unwrap().out, data);
    }

    #[test]
    fn gaps_become_holes_and_a_drop_writes_what_is_queued() {
        let path = std::env::temp_dir().join(format!("chunk-writer-{}", std::process::id()));
        {
            let mut w = ChunkWriter::new(std::fs::File::create(&path).unwrap());
            w.push(Bytes::from_static(b"abc")).unwrap();
            w.seek_to(10).unwrap();
            w.push(Bytes::from_static(b"xyz")).unwrap();
        }
        let got = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(got, b"abc\0\0\0\0\0\0\0xyz");
    }
}
