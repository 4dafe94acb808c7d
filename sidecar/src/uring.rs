//! The ingest thread's io_uring, behind a safe interface. This is the only module of the
//! sidecar with `unsafe` code.
//!
//! Callers identify every operation with a `u64` token and get it back in a [`Completion`].
//! The two kinds of operation the ingest needs are multishot polls (doorbells, sockets)
//! and positioned writes into spool files. A write takes ownership of its buffer and the
//! buffer comes back with the completion, so it cannot be freed or changed while the
//! kernel may still read it. Dropping the ring waits for every write in flight first.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, types, IoUring};

/// One finished (or, for a multishot poll, fired) operation.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The token given when the operation was submitted.
    pub token: u64,
    /// The kernel's result: a poll mask, a byte count, or a negated errno.
    pub result: i32,
    /// A multishot operation stays armed (false: it ended and must be re-armed if wanted).
    pub more: bool,
    /// For writes: the buffer that was written, given back.
    pub buffer: Option<Vec<u8>>,
}

/// What a write in flight holds on to until it completes.
struct InFlight {
    buffer: Vec<u8>,
    /// Keeps the file open for as long as the kernel may use its descriptor number.
    _file: Arc<File>,
}

/// The ring plus the buffers of writes in flight.
pub(crate) struct Uring {
    ring: IoUring,
    writes: HashMap<u64, InFlight>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("writes_in_flight", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// A ring with room for `entries` submissions at once (completions: twice that).
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)?;
        Ok(Uring {
            ring,
            writes: HashMap::new(),
        })
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry built in this module refers either to no memory at all
            // (polls, cancels) or to a buffer owned by `self.writes` until its completion is
            // reaped, so whatever the entry points to outlives the operation.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            // The submission queue is full: hand what is there to the kernel and retry.
            self.ring.submit()?;
        }
    }

    /// Arms a multishot poll for `mask` (`libc`-style `POLLIN` etc.) on `fd`. The poll
    /// holds its own reference to the file, so closing `fd` does not end it: cancel it.
    pub fn poll_multishot(&mut self, fd: BorrowedFd<'_>, mask: u32, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd.as_raw_fd()), mask)
            .multi(true)
            .build()
            .user_data(token);
        self.push(&entry)
    }

    /// Cancels the operation submitted with `token` (its final completion still arrives).
    pub fn cancel(&mut self, token: u64) -> io::Result<()> {
        // The cancel request itself completes with a token nobody uses.
        let entry = opcode::AsyncCancel::new(token)
            .build()
            .user_data(CANCEL_TOKEN);
        self.push(&entry)
    }

    /// Writes the first `len` bytes of `buffer` at `offset` of `file`. The buffer comes
    /// back with the completion.
    pub fn write_at(
        &mut self,
        file: Arc<File>,
        offset: u64,
        buffer: Vec<u8>,
        len: usize,
        token: u64,
    ) -> io::Result<()> {
        let len = u32::try_from(len.min(buffer.len())).unwrap_or(u32::MAX);
        let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buffer.as_ptr(), len)
            .offset(offset)
            .build()
            .user_data(token);
        // The buffer moves into the map before the kernel sees the entry; moving a Vec
        // does not move its heap allocation, which is what the entry points to.
        let old = self.writes.insert(
            token,
            InFlight {
                buffer,
                _file: file,
            },
        );
        debug_assert!(old.is_none(), "two writes with one token");
        if let Err(e) = self.push(&entry) {
            self.writes.remove(&token);
            return Err(e);
        }
        Ok(())
    }

    /// Submits what is queued and waits until at least one completion is there (or `wait`
    /// is false), then moves all completions into `out`.
    pub fn submit_and_reap(&mut self, wait: bool, out: &mut Vec<Completion>) -> io::Result<()> {
        let want = usize::from(wait && self.ring.completion().is_empty());
        match self.ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc_eintr()) => {}
            Err(e) if e.raw_os_error() == Some(libc_ebusy()) => {}
            Err(e) => return Err(e),
        }
        for cqe in self.ring.completion() {
            let token = cqe.user_data();
            if token == CANCEL_TOKEN {
                continue;
            }
            let more = cqueue::more(cqe.flags());
            let buffer = self.writes.remove(&token).map(|w| w.buffer);
            out.push(Completion {
                token,
                result: cqe.result(),
                more,
                buffer,
            });
        }
        Ok(())
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still be reading the buffers of writes in flight: wait for them
        // before the buffers are freed.
        let mut done = Vec::new();
        while !self.writes.is_empty() {
            done.clear();
            if self.submit_and_reap(true, &mut done).is_err() {
                // Cannot wait any more: leak the buffers rather than free memory the
                // kernel may still read.
                for (_, w) in self.writes.drain() {
                    std::mem::forget(w);
                }
                break;
            }
        }
    }
}

/// Token of cancel requests (their completions are ignored).
const CANCEL_TOKEN: u64 = u64::MAX;

fn libc_eintr() -> i32 {
    rustix::io::Errno::INTR.raw_os_error()
}

fn libc_ebusy() -> i32 {
    rustix::io::Errno::BUSY.raw_os_error()
}

/// Poll masks (from `<poll.h>`).
pub(crate) mod mask {
    /// Readable.
    pub const IN: u32 = 0x001;
    /// Error.
    pub const ERR: u32 = 0x008;
    /// Hang-up.
    pub const HUP: u32 = 0x010;
    /// Peer closed its writing side.
    pub const RDHUP: u32 = 0x2000;
}
