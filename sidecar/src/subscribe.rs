//! Subscriptions: a reader's own cursor over a console journal, or its own bounded queue of
//! audio periods. Readers never hold up the ingest: they copy from the journal under its
//! lock for at most one block, and read spooled bytes from disk without the lock.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::device::{lock, AudioPeriod, AudioQueue, Device};
use crate::error::Error;
use crate::journal::{GapReason, ReadAt, DISK_READ};
use crate::names::DeviceKey;
use crate::transcode::OpusConfig;
use protocol::codec::OpusParams;

pub use protocol::codec::StartAt;

/// Bytes of a console journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Journal offset of the first byte.
    pub offset: u64,
    /// The bytes.
    pub bytes: Bytes,
}

/// Offsets whose bytes the subscriber cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First offset of the gap.
    pub offset: u64,
    /// Number of bytes missing.
    pub len: u64,
    /// Why they are missing.
    pub reason: GapReason,
}

/// What a console subscription yields, in offset order, without holes between items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Bytes.
    Chunk(Chunk),
    /// Bytes that are not available.
    Gap(Gap),
}

impl Item {
    /// The offset after this item.
    pub fn end(&self) -> u64 {
        match self {
            Item::Chunk(c) => c.offset + c.bytes.len() as u64,
            Item::Gap(g) => g.offset + g.len,
        }
    }
}

/// A reader of one console's journal with its own cursor.
#[derive(Debug)]
pub struct ConsoleSubscription {
    device: Arc<Device>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    cursor: u64,
    file: Option<(u64, File)>,
}

impl ConsoleSubscription {
    pub(crate) fn new(
        device: Arc<Device>,
        closed: Arc<std::sync::atomic::AtomicBool>,
        start: StartAt,
    ) -> Self {
        let cursor = {
            let j = lock(
                device
                    .journal
                    .as_ref()
                    .expect("console devices have a journal"),
            );
            match start {
                StartAt::Offset(o) => o,
                StartAt::TailBytes(n) => j.end().saturating_sub(n).max(j.available_from()),
                StartAt::Now => j.end(),
            }
        };
        device.counters.subscribers.fetch_add(1, Relaxed);
        ConsoleSubscription {
            device,
            closed,
            cursor,
            file: None,
        }
    }

    /// The device.
    pub fn device(&self) -> &DeviceKey {
        &self.device.key
    }

    /// The offset of the next item.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// The next item if there is one now. Never blocks on the ingest; may read the disk.
    ///
    /// Fails with [`Error::JournalUnreadable`] when a segment the journal still lists cannot
    /// be read (deleted or truncated behind ringcastd's back): the bytes it held are gone
    /// and asking again would never succeed, so the subscription ends with the reason.
    pub fn try_next(&mut self) -> Result<Option<Item>, Error> {
        self.step(|read| read())
    }

    /// [`ConsoleSubscription::try_next`] with disk reads run by `blocking` (the async
    /// `next` moves them off the runtime's workers).
    fn step(
        &mut self,
        blocking: impl Fn(&mut dyn FnMut() -> Result<Bytes, String>) -> Result<Bytes, String>,
    ) -> Result<Option<Item>, Error> {
        let device = self.device.clone();
        let Some(journal) = device.journal.as_ref() else {
            return Ok(None);
        };
        loop {
            let at = lock(journal).read_at(self.cursor, DISK_READ);
            let item = match at {
                ReadAt::Pending => return Ok(None),
                ReadAt::Bytes(bytes) => Item::Chunk(Chunk {
                    offset: self.cursor,
                    bytes,
                }),
                ReadAt::Gap { len, reason } => {
                    if reason == GapReason::Retention {
                        self.device
                            .counters
                            .subscriber_gap_bytes
                            .fetch_add(len, Relaxed);
                    }
                    Item::Gap(Gap {
                        offset: self.cursor,
                        len,
                        reason,
                    })
                }
                ReadAt::Disk {
                    path,
                    seg_start,
                    file_offset,
                    len,
                } => match blocking(&mut || self.read_disk(&path, seg_start, file_offset, len)) {
                    Ok(bytes) => Item::Chunk(Chunk {
                        offset: self.cursor,
                        bytes,
                    }),
                    Err(reason) => {
                        // Retention removes a segment from the listing under the journal's
                        // lock before deleting its file: a segment still listed now was
                        // deleted or cut by someone else, and will never be readable.
                        if lock(journal).lists_segment(seg_start, self.cursor) {
                            return Err(self.unreadable(&path, reason));
                        }
                        continue;
                    }
                },
            };
            self.cursor = item.end();
            return Ok(Some(item));
        }
    }

    fn unreadable(&self, path: &std::path::Path, reason: String) -> Error {
        self.device
            .counters
            .journal_read_errors
            .fetch_add(1, Relaxed);
        tracing::error!(device = %self.device.key, path = %path.display(), offset = self.cursor,
            %reason, "a journal segment cannot be read; ending the subscription");
        Error::JournalUnreadable {
            device: self.device.key.to_string(),
            offset: self.cursor,
            path: path.to_owned(),
            reason,
        }
    }

    /// Reads `len` bytes at `off` of the segment starting at journal offset `seg`. Short
    /// reads return what was there; nothing at all is an error saying why.
    fn read_disk(
        &mut self,
        path: &std::path::Path,
        seg: u64,
        off: u64,
        len: usize,
    ) -> Result<Bytes, String> {
        if self.file.as_ref().map(|(s, _)| *s) != Some(seg) {
            self.file = None;
            let f = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
            self.file = Some((seg, f));
        }
        let Some((_, f)) = self.file.as_ref() else {
            return Err("not open".into());
        };
        let mut buf = vec![0u8; len];
        let mut got = 0;
        let mut failure = None;
        while got < len {
            match f.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if got == 0 {
            self.file = None;
            return Err(match failure {
                Some(e) => format!("cannot read at {off}: {e}"),
                None => format!("it ends before {off} (truncated)"),
            });
        }
        buf.truncate(got);
        Ok(Bytes::from(buf))
    }

    /// Waits up to `timeout` for the next item (for tests and blocking callers).
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<Item>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.device.signal.generation();
            if let Some(item) = self.try_next()? {
                return Ok(Some(item));
            }
            if self.closed.load(Relaxed) {
                return Err(Error::Closed);
            }
            if !self.device.signal.wait_blocking(seen, deadline) {
                return Ok(None);
            }
        }
    }

    /// The next item, waiting for it. Fails when the daemon shuts down or the journal
    /// cannot be read ([`Error::JournalUnreadable`]).
    ///
    /// A read from the disk (a replay from before the RAM window) runs as blocking work, so
    /// it does not hold up the other connections the runtime's worker serves.
    pub async fn next(&mut self) -> Result<Item, Error> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        loop {
            let seen = self.device.signal.generation();
            let next = self.step(|read| {
                if multi_thread {
                    tokio::task::block_in_place(read)
                } else {
                    read()
                }
            });
            if let Some(item) = next? {
                return Ok(item);
            }
            if self.closed.load(Relaxed) {
                return Err(Error::Closed);
            }
            self.device.signal.changed(seen).await;
        }
    }
}

impl Drop for ConsoleSubscription {
    fn drop(&mut self) {
        self.device.counters.subscribers.fetch_sub(1, Relaxed);
    }
}

/// A live listener of one audio device, with a bounded queue: when it falls behind, the
/// oldest periods are dropped and counted (`AudioPeriod::skipped_before`).
#[derive(Debug)]
pub struct AudioSubscription {
    device: Arc<Device>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    queue: Arc<AudioQueue>,
    /// Fed Opus frames by the device's encoder (else PCM periods by the ingest).
    opus: Option<OpusParams>,
}

impl AudioSubscription {
    pub(crate) fn new(
        device: Arc<Device>,
        closed: Arc<std::sync::atomic::AtomicBool>,
        capacity: usize,
    ) -> Self {
        let queue = Arc::new(AudioQueue::new(capacity));
        lock(&device.state).audio_queues.push(queue.clone());
        device.counters.subscribers.fetch_add(1, Relaxed);
        AudioSubscription {
            device,
            closed,
            queue,
            opus: None,
        }
    }

    /// A subscriber of the device's Opus frames (starting its encoder if it is the first),
    /// with a queue of `capacity` frames.
    pub(crate) fn new_opus(
        device: Arc<Device>,
        closed: Arc<std::sync::atomic::AtomicBool>,
        capacity: usize,
        config: &OpusConfig,
    ) -> Result<Self, Error> {
        let queue = Arc::new(AudioQueue::new(capacity));
        let params = lock(&device.state)
            .audio_format
            .and_then(|f| config.params_for(&f));
        let params = params.ok_or_else(|| Error::NoOpus(device.key.to_string()))?;
        crate::transcode::join(&device, &closed, config, queue.clone())
            .map_err(|reason| Error::Opus(device.key.to_string(), reason))?;
        device.counters.subscribers.fetch_add(1, Relaxed);
        Ok(AudioSubscription {
            device,
            closed,
            queue,
            opus: Some(params),
        })
    }

    /// The Opus stream's parameters, if this subscriber receives Opus.
    pub fn opus(&self) -> Option<OpusParams> {
        self.opus
    }

    /// The device.
    pub fn device(&self) -> &DeviceKey {
        &self.device.key
    }

    /// The device's PCM format (known once it registered).
    pub fn format(&self) -> Option<shm_ring::handover::AudioFormat> {
        lock(&self.device.state).audio_format
    }

    /// The next period if one is queued.
    pub fn try_next(&mut self) -> Option<AudioPeriod> {
        lock(&self.queue.state).items.pop_front()
    }

    /// Err(NotAttached) once the device's QEMU is gone and every queued period was taken.
    fn check_ended(&self) -> Result<(), Error> {
        let s = lock(&self.queue.state);
        if s.ended && s.items.is_empty() {
            return Err(Error::NotAttached(self.device.key.to_string()));
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next period. Fails with [`Error::NotAttached`] once the
    /// device's QEMU went away (after the queued periods), and [`Error::Closed`] on shutdown.
    pub fn next_blocking(&mut self, timeout: Duration) -> Result<Option<AudioPeriod>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.queue.signal.generation();
            if let Some(p) = self.try_next() {
                return Ok(Some(p));
            }
            if self.closed.load(Relaxed) {
                return Err(Error::Closed);
            }
            self.check_ended()?;
            if !self.queue.signal.wait_blocking(seen, deadline) {
                return Ok(None);
            }
        }
    }

    /// The next period, waiting for it. Fails when the device's QEMU went away
    /// ([`Error::NotAttached`], after the queued periods) or the daemon shuts down.
    pub async fn next(&mut self) -> Result<AudioPeriod, Error> {
        loop {
            let seen = self.queue.signal.generation();
            if let Some(p) = self.try_next() {
                return Ok(p);
            }
            if self.closed.load(Relaxed) {
                return Err(Error::Closed);
            }
            self.check_ended()?;
            self.queue.signal.changed(seen).await;
        }
    }
}

impl Drop for AudioSubscription {
    fn drop(&mut self) {
        let mut s = lock(&self.device.state);
        let queues = if self.opus.is_some() {
            &mut s.opus_queues
        } else {
            &mut s.audio_queues
        };
        queues.retain(|q| !Arc::ptr_eq(q, &self.queue));
        drop(s);
        self.device.counters.subscribers.fetch_sub(1, Relaxed);
    }
}
