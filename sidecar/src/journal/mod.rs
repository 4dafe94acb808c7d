//! A console device's journal: every byte it ever produced, addressed by its absolute
//! offset, kept in a RAM window (the newest bytes) and in disk segments (the spool).
//!
//! On disk, a device has a directory `<state>/<vm>/<device>/` holding
//!
//! * `<offset>.log`: segments, named by the journal offset of their first byte (20 digits,
//!   so they sort). A segment holds contiguous bytes: bytes that were lost (flight
//!   recorder) end a segment, and the next one starts after the hole.
//! * `current.log`: a symlink to the segment being written, for `tail -F`.
//! * `device.meta`: names, the current ring session and where it starts in the journal.
//!
//! Directories are created `0700` and files `0600` (see `private`).
//!
//! The journal never writes to disk itself: the ingest thread asks for the place to write
//! ([`Journal::spool_target`]), writes through its io_uring, and then [`Journal::commit`]s.
//! Subscribers read with [`Journal::read_at`], which answers from RAM or says which file
//! holds the bytes (they read it themselves, without holding the journal's lock).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::Error;

mod head;
mod meta;
mod read;
use head::Head;
use meta::META;
pub(crate) use meta::{read_meta, Meta};
pub(crate) use read::ReadAt;

/// Largest RAM block, and largest chunk handed to a subscriber at once from RAM.
pub(crate) const BLOCK: usize = 64 * 1024;
/// Largest chunk handed to a subscriber at once from disk: fewer reads and wakeups for a
/// reader catching up.
pub(crate) const DISK_READ: usize = 256 * 1024;
const CURRENT: &str = "current.log";

/// Sizes and ages that shape a journal.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Bytes kept in RAM per device.
    pub window: usize,
    /// A segment is closed once it holds this many bytes.
    pub segment_size: u64,
    /// A segment is closed once it is this old (checked when bytes arrive).
    pub segment_age: Duration,
    /// Disk bytes kept per device; the oldest segments are deleted beyond that.
    pub retention: u64,
}

pub use protocol::codec::GapReason;

#[derive(Debug)]
struct Block {
    start: u64,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    len: u64,
    path: PathBuf,
    created: SystemTime,
}

/// One device's journal.
#[derive(Debug)]
pub(crate) struct Journal {
    cfg: JournalConfig,
    dir: PathBuf,
    spool: bool,
    ram: VecDeque<Block>,
    ram_bytes: usize,
    segments: VecDeque<Segment>,
    disk_bytes: u64,
    current: Option<Arc<File>>,
    end: u64,
    meta: Meta,
    /// Bytes that left the RAM window while the spool was off: gone for good.
    ram_only_dropped: u64,
    /// Spool failures found here (creating, reopening or truncating a segment); failed
    /// writes are counted by the ingest thread.
    spool_failures: u64,
    /// The first bytes: is this console a QEMU monitor.
    head: Head,
}

impl Journal {
    /// Opens (creating or recovering) the journal in `dir`. `meta` supplies the names for
    /// a new directory; a recovered one keeps what it stored.
    pub fn open(dir: PathBuf, cfg: JournalConfig, meta: Meta) -> Result<Journal, Error> {
        if let Err(e) = crate::private::create_dir(&dir) {
            // A full or read-only disk must not cost the console: it is served from RAM.
            tracing::error!(dir = %dir.display(), error = %e,
                "cannot create the journal directory; this device's journal is kept in RAM only");
            return Ok(Journal {
                cfg,
                dir,
                spool: false,
                ram: VecDeque::new(),
                ram_bytes: 0,
                segments: VecDeque::new(),
                disk_bytes: 0,
                current: None,
                end: 0,
                meta,
                ram_only_dropped: 0,
                spool_failures: 1,
                head: Head::default(),
            });
        }
        let meta = match read_meta(&dir) {
            // A directory that holds another device's journal is never shared.
            Some(stored) if (&stored.vm, &stored.device) != (&meta.vm, &meta.device) => {
                return Err(Error::JournalOfAnother {
                    dir,
                    owner: format!(
                        "{}",
                        crate::DeviceKey::new(stored.vm.as_str(), stored.device.as_str())
                    ),
                });
            }
            Some(stored) => stored,
            None => meta,
        };
        let mut segments = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(digits) = name.strip_suffix(".log") else {
                continue;
            };
            if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(start) = digits.parse::<u64>() else {
                continue;
            };
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            segments.push(Segment {
                start,
                len: md.len(),
                path: entry.path(),
                created: md.modified().unwrap_or_else(|_| SystemTime::now()),
            });
        }
        segments.sort_by_key(|s| s.start);
        // Segments never overlap; a later one that does (it cannot, unless files were
        // copied in by hand) would make offsets ambiguous: keep the earlier bytes.
        let mut clean: VecDeque<Segment> = VecDeque::new();
        for s in segments {
            if let Some(last) = clean.back() {
                if s.start < last.start + last.len {
                    tracing::warn!(path = %s.path.display(), "ignoring an overlapping segment");
                    continue;
                }
            }
            clean.push_back(s);
        }
        let end = clean
            .back()
            .map_or(meta.pruned_to, |s| s.start + s.len)
            .max(meta.pruned_to);
        let disk_bytes = clean.iter().map(|s| s.len).sum();
        let head = match clean.front() {
            Some(s) if s.start == 0 => Head::recover(&s.path),
            _ => Head::default(),
        };
        let mut j = Journal {
            cfg,
            dir,
            spool: true,
            ram: VecDeque::new(),
            ram_bytes: 0,
            segments: clean,
            disk_bytes,
            current: None,
            end,
            meta,
            ram_only_dropped: 0,
            spool_failures: 0,
            head,
        };
        if let Err(e) = j.write_meta() {
            tracing::error!(dir = %j.dir.display(), error = %e,
                "cannot write the journal's metadata; this device's journal is kept in RAM only");
            j.spool_failures += 1;
            j.disable_spool();
        }
        Ok(j)
    }

    /// Whether the console is a QEMU monitor (by its first bytes).
    pub fn is_monitor(&self) -> bool {
        self.head.is_monitor()
    }

    /// The directory of this journal.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next byte gets.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The lowest offset that can still be read.
    pub fn available_from(&self) -> u64 {
        let disk = self.segments.iter().find(|s| s.len > 0).map(|s| s.start);
        let ram = self.ram.front().map(|b| b.start);
        match (disk, ram) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.end,
        }
    }

    /// Bytes that left the RAM window while the spool was off (lost for good).
    pub fn ram_only_dropped(&self) -> u64 {
        self.ram_only_dropped
    }

    /// Spool failures the journal ran into itself (segment create, reopen, truncate).
    pub fn spool_failures(&self) -> u64 {
        self.spool_failures
    }

    /// The persistent description.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    fn write_meta(&self) -> Result<(), Error> {
        let tmp = self.dir.join(".device.meta.tmp");
        crate::private::file_options()
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(self.meta.encode().as_bytes()))
            .map_err(|e| Error::io("write", &tmp, e))?;
        let dst = self.dir.join(META);
        fs::rename(&tmp, &dst).map_err(|e| Error::io("rename into", &dst, e))
    }

    /// Binds the journal to the VM with this UUID.
    pub fn set_uuid(&mut self, uuid: &str) {
        self.meta.uuid = uuid.to_owned();
        if let Err(e) = self.write_meta() {
            tracing::error!(error = %e, "cannot save the VM's UUID");
        }
    }

    /// Records a new ring session starting at journal offset `base`.
    pub fn set_session(&mut self, session: u64, base: u64) {
        self.meta.session = Some(session);
        self.meta.base = base;
        if let Err(e) = self.write_meta() {
            tracing::error!(error = %e, "cannot save the device's session");
        }
    }

    /// `len` bytes that will never come: the offsets advance past them.
    pub fn record_gap(&mut self, len: u64) {
        self.end += len;
    }

    /// Where the next bytes go on disk: the file and the position in it. Rotates segments
    /// by size and age. None when the spool is off.
    pub fn spool_target(&mut self, now: SystemTime) -> Option<(Arc<File>, u64)> {
        if !self.spool {
            return None;
        }
        let rotate = match self.segments.back() {
            None => true,
            Some(s) if s.start == self.end && s.len == 0 => false,
            Some(s) => {
                s.start + s.len != self.end
                    || s.len >= self.cfg.segment_size
                    || now.duration_since(s.created).unwrap_or_default() >= self.cfg.segment_age
            }
        };
        if rotate {
            if let Err(e) = self.new_segment(now) {
                tracing::error!(error = %e, "cannot start a spool segment; keeping bytes in RAM only");
                self.spool_failures += 1;
                self.disable_spool();
                return None;
            }
        }
        if self.current.is_none() {
            let seg = self.segments.back()?;
            match OpenOptions::new().write(true).open(&seg.path) {
                Ok(f) => self.current = Some(Arc::new(f)),
                Err(e) => {
                    tracing::error!(path = %seg.path.display(), error = %e,
                        "cannot reopen the spool segment; keeping bytes in RAM only");
                    self.spool_failures += 1;
                    self.disable_spool();
                    return None;
                }
            }
        }
        let seg = self.segments.back()?;
        Some((self.current.clone()?, self.end - seg.start))
    }

    fn new_segment(&mut self, now: SystemTime) -> Result<(), Error> {
        let name = format!("{:020}.log", self.end);
        let path = self.dir.join(&name);
        let f = crate::private::file_options()
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io("create segment", &path, e))?;
        self.current = Some(Arc::new(f));
        self.segments.push_back(Segment {
            start: self.end,
            len: 0,
            path,
            created: now,
        });
        let tmp = self.dir.join(".current.log.tmp");
        let _ = fs::remove_file(&tmp);
        let link = std::os::unix::fs::symlink(&name, &tmp)
            .and_then(|()| fs::rename(&tmp, self.dir.join(CURRENT)));
        if let Err(e) = link {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot update current.log");
        }
        self.prune();
        Ok(())
    }

    fn prune(&mut self) {
        let mut pruned = false;
        while self.disk_bytes > self.cfg.retention && self.segments.len() > 1 {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            if let Err(e) = fs::remove_file(&old.path) {
                tracing::warn!(path = %old.path.display(), error = %e, "cannot delete an old segment");
            }
            self.disk_bytes -= old.len;
            self.meta.pruned_to = self.segments.front().map_or(self.end, |s| s.start);
            pruned = true;
        }
        if pruned {
            if let Err(e) = self.write_meta() {
                tracing::warn!(error = %e, "cannot save the retention mark");
            }
        }
    }

    /// Stops writing to disk (after a write error); bytes stay in RAM only.
    pub fn disable_spool(&mut self) {
        self.spool = false;
        self.current = None;
    }

    /// Bytes written at the spool target were void (the producer overwrote them while they
    /// were copied): cut the segment file back to what is committed.
    pub fn void_uncommitted(&mut self) {
        if let (Some(f), Some(seg)) = (&self.current, self.segments.back()) {
            if let Err(e) = f.set_len(seg.len) {
                tracing::error!(path = %seg.path.display(), error = %e, "cannot truncate a segment");
                self.spool_failures += 1;
                self.disable_spool();
            }
        }
    }

    /// Appends `bytes` at the end. `on_disk`: they were written at the spool target.
    pub fn commit(&mut self, bytes: &[u8], on_disk: bool) {
        if on_disk {
            if let Some(seg) = self.segments.back_mut() {
                seg.len += bytes.len() as u64;
                self.disk_bytes += bytes.len() as u64;
            }
        }
        let start = self.end;
        self.head.observe(start, bytes);
        self.end += bytes.len() as u64;
        let mut off = 0;
        while off < bytes.len() {
            let pos = start + off as u64;
            let fresh = match self.ram.back() {
                Some(b) => b.start + b.data.len() as u64 != pos || b.data.len() >= BLOCK,
                None => true,
            };
            if fresh {
                self.ram.push_back(Block {
                    start: pos,
                    data: Vec::new(),
                });
            }
            let Some(b) = self.ram.back_mut() else { break };
            let n = (BLOCK - b.data.len()).min(bytes.len() - off);
            let want = b.data.len() + n;
            if b.data.capacity() < want {
                // Grow in steps but never past one block, so RAM use stays near the window.
                let target = want.max(b.data.capacity() * 2).clamp(4096, BLOCK);
                b.data.reserve_exact(target - b.data.len());
            }
            b.data.extend_from_slice(&bytes[off..off + n]);
            off += n;
            self.ram_bytes += n;
        }
        while self.ram_bytes > self.cfg.window {
            let Some(old) = self.ram.pop_front() else {
                break;
            };
            self.ram_bytes -= old.data.len();
            if !self.spool {
                // Without a spool, what leaves RAM is gone for good: count what the disk
                // does not have.
                let old_end = old.start + old.data.len() as u64;
                let on_disk = self.segments.back().map_or(0, |s| s.start + s.len);
                let from = old.start.max(on_disk).max(self.meta.pruned_to);
                self.ram_only_dropped += old_end.saturating_sub(from);
                self.meta.pruned_to = self.meta.pruned_to.max(old_end);
            }
        }
    }
}

#[cfg(test)]
mod tests;
