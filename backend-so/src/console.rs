//! A character device: guest output into the output ring, input ring into the guest.
//!
//! Loss policy: while the daemon is attached, output gets backpressure (a short write and a
//! watch that fires only when the ring really has space); while it is not, the output ring
//! is a flight recorder that keeps the newest bytes and counts what it drops. Input is
//! handed to the guest never faster than the frontend says it can take.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use shm_ring::handover::{DeviceDescription, DeviceKind};
use shm_ring::{ByteConsumer, ByteProducer, Doorbell, Poison, RingError, RingKind, RingMemory};

use crate::abi::QbpChardevFrontend;

/// The frontend's two functions, copied out of the table QEMU passed to `open`.
pub(crate) struct Frontend {
    opaque: *mut std::ffi::c_void,
    can_write: unsafe extern "C" fn(*mut std::ffi::c_void) -> usize,
    write: unsafe extern "C" fn(*mut std::ffi::c_void, *const u8, usize),
}

impl Frontend {
    pub(crate) fn from_table(t: &QbpChardevFrontend) -> Result<Self, String> {
        match (t.can_write, t.write) {
            (Some(can_write), Some(write)) => Ok(Frontend {
                opaque: t.opaque,
                can_write,
                write,
            }),
            _ => Err("frontend table lacks can_write or write".into()),
        }
    }

    fn can_write(&self) -> usize {
        // SAFETY: QEMU guarantees the frontend functions and opaque stay valid until close.
        unsafe { (self.can_write)(self.opaque) }
    }

    fn write(&self, buf: &[u8]) {
        // SAFETY: as above; `buf` is valid for `buf.len()` bytes during the call.
        unsafe { (self.write)(self.opaque, buf.as_ptr(), buf.len()) }
    }
}

/// Loss counters of a console.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConsoleStats {
    /// Output bytes the flight recorder discarded (no daemon attached).
    pub flight_dropped: u64,
    /// Output bytes accepted from the guest.
    pub written: u64,
    /// Input bytes handed to the guest.
    pub input: u64,
}

pub(crate) struct Console {
    pub session: u64,
    out: ByteProducer,
    out_data: Doorbell,
    out_space: Doorbell,
    input: ByteConsumer,
    in_data: Doorbell,
    in_space: Doorbell,
    frontend: Frontend,
    pub stats: ConsoleStats,
}

/// Why a console operation stopped: the daemon broke a ring.
pub(crate) struct RingPoisoned(pub Poison);

impl Console {
    pub(crate) fn new(
        name: &str,
        out_bytes: u64,
        in_bytes: u64,
        frontend: Frontend,
    ) -> Result<Self, RingError> {
        let out_mem = Arc::new(RingMemory::create(name, RingKind::Bytes, out_bytes, 0)?);
        let in_mem = Arc::new(RingMemory::create(name, RingKind::Bytes, in_bytes, 0)?);
        let mut input = ByteConsumer::new(in_mem)?;
        // Sleep on the input doorbell from the start: the daemon rings it only once this
        // flag is up, and nothing else would raise it before the first input arrives.
        input.prepare_sleep()?;
        Ok(Console {
            session: crate::new_session_id(),
            out: ByteProducer::new(out_mem)?,
            out_data: Doorbell::new()?,
            out_space: Doorbell::new()?,
            input,
            in_data: Doorbell::new()?,
            in_space: Doorbell::new()?,
            frontend,
            stats: ConsoleStats::default(),
        })
    }

    /// Replaces the rings after the daemon broke them; keeps the frontend.
    pub(crate) fn renew(self, name: &str) -> Result<Self, RingError> {
        let out_bytes = self.out.memory().geometry().capacity;
        let in_bytes = self.input.memory().geometry().capacity;
        let stats = self.stats;
        let mut c = Console::new(name, out_bytes, in_bytes, self.frontend)?;
        c.stats = stats;
        Ok(c)
    }

    /// The fds sent to the daemon, in the order `shm_ring::handover` documents.
    pub(crate) fn handover_fds(&self) -> [BorrowedFd<'_>; 6] {
        [
            self.out.memory().fd(),
            self.out_data.as_fd(),
            self.out_space.as_fd(),
            self.input.memory().fd(),
            self.in_data.as_fd(),
            self.in_space.as_fd(),
        ]
    }

    pub(crate) fn describe(&self, base: DeviceDescription) -> DeviceDescription {
        DeviceDescription {
            kind: DeviceKind::Console,
            session: self.session,
            audio: None,
            ..base
        }
    }

    /// Guest output. Returns the bytes accepted.
    pub(crate) fn write(&mut self, buf: &[u8], attached: bool) -> Result<usize, RingPoisoned> {
        let w = if attached {
            self.out.write(buf)
        } else {
            self.out.write_overwriting(buf)
        }
        .map_err(RingPoisoned)?;
        if w.wake_consumer {
            self.out_data.ring();
        }
        self.stats.flight_dropped += w.dropped;
        self.stats.written += w.bytes as u64;
        Ok(w.bytes)
    }

    /// Whether a write would accept a byte now; arms the space doorbell when not.
    pub(crate) fn write_ready(&mut self, attached: bool) -> Result<bool, RingPoisoned> {
        if !attached {
            return Ok(true);
        }
        let space = &self.out_space;
        self.out
            .space_or_arm(1, || {
                space.drain();
            })
            .map_err(RingPoisoned)
    }

    pub(crate) fn write_wait_fd(&self) -> i32 {
        self.out_space.as_fd().as_raw_fd()
    }

    /// Wakes whoever waits on the space doorbell (used when the wait is moot, e.g. the
    /// daemon went away and writes are accepted again).
    pub(crate) fn kick_writer(&self) {
        self.out_space.ring();
    }

    pub(crate) fn input_fd(&self) -> i32 {
        self.in_data.as_fd().as_raw_fd()
    }

    /// Moves input to the guest while it can take it. Returns when the ring is empty (and
    /// the data doorbell is armed) or the frontend is full (resumed by accept_input).
    pub(crate) fn pump_input(&mut self) -> Result<(), RingPoisoned> {
        self.in_data.drain();
        let mut buf = [0u8; 512];
        loop {
            let room = self.frontend.can_write().min(buf.len());
            if room == 0 {
                return Ok(());
            }
            let r = self.input.read(&mut buf[..room]).map_err(RingPoisoned)?;
            if r.wake_producer {
                self.in_space.ring();
            }
            if r.bytes == 0 {
                if self.input.prepare_sleep().map_err(RingPoisoned)? {
                    return Ok(());
                }
                continue;
            }
            self.stats.input += r.bytes as u64;
            self.frontend.write(&buf[..r.bytes]);
        }
    }
}
