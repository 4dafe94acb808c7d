//! Doorbells: non-blocking eventfds that wake a sleeping peer.
//!
//! A doorbell is rung only when the ring protocol says the peer sleeps (see `byte_ring`),
//! so a busy stream costs no syscall. Ringing never blocks: a saturated counter already
//! means "wake up".

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::io::Errno;

use crate::error::RingError;

/// One eventfd used as a wakeup signal.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A new, unsignalled doorbell.
    pub fn new() -> Result<Self, RingError> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| RingError::io("eventfd", e))?;
        Ok(Doorbell { fd })
    }

    /// Wraps a doorbell received from a peer: it must be an eventfd (anything else, a pipe
    /// or a socket or a FIFO, could block a reader or fill up), and it is forced
    /// non-blocking so that the peer cannot make us block on it either.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, RingError> {
        let what = fd_kind(fd.as_fd());
        if what != EVENTFD_LINK {
            return Err(RingError::NotAnEventfd(what));
        }
        let fl = fcntl_getfl(&fd).map_err(|e| RingError::io("fcntl(F_GETFL) doorbell", e))?;
        fcntl_setfl(&fd, fl | OFlags::NONBLOCK)
            .map_err(|e| RingError::io("fcntl(F_SETFL) doorbell", e))?;
        Ok(Doorbell { fd })
    }

    /// Wakes the peer. Errors are ignored on purpose: EAGAIN means the counter is already
    /// non-zero (the peer will wake), and a broken peer must not break us.
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Clears the signal. Returns true when it had been rung.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(8) => return true,
                Ok(_) => return false,
                Err(Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Blocks until the doorbell rings or `timeout_ms` passes (-1: forever). For threads
    /// that may block (the sidecar and tests), never for QEMU's main loop.
    pub fn wait(&self, timeout_ms: i32) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = (timeout_ms >= 0).then(|| rustix::event::Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        });
        matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(n) if n > 0)
    }

    /// Duplicates the doorbell (both handles ring the same eventfd).
    pub fn try_clone(&self) -> Result<Self, RingError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| RingError::io("dup doorbell", e))?;
        Ok(Doorbell { fd })
    }
}

/// What /proc/self/fd shows for an eventfd.
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

/// What a descriptor is, as /proc/self/fd names it ("anon_inode:[eventfd]", "pipe:[123]",
/// a path...), or why that cannot be told.
fn fd_kind(fd: BorrowedFd<'_>) -> String {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => format!("of unknown kind (/proc/self/fd: {e})"),
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_eventfd_is_accepted_as_a_doorbell() {
        let bell = Doorbell::new().unwrap();
        let ok = Doorbell::from_fd(bell.as_fd().try_clone_to_owned().unwrap()).unwrap();
        ok.ring();
        assert!(bell.drain());

        let (r, _w) = rustix::pipe::pipe().unwrap();
        let err = Doorbell::from_fd(r).unwrap_err().to_string();
        assert!(
            err.contains("pipe:[") && err.contains("not an eventfd"),
            "{err}"
        );

        let mem = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let err = Doorbell::from_fd(mem).unwrap_err().to_string();
        assert!(
            err.contains("memfd:x") && err.contains("not an eventfd"),
            "{err}"
        );
    }
}
