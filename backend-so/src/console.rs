//! A character device: guest output into the output ring, input ring into the guest.
//!
//! Loss policy: while the daemon is attached, and for the restart grace after it went away,
//! output gets backpressure (a short write and a watch that fires only when the ring really
//! has space); otherwise the output ring is a flight recorder that keeps the newest bytes
//! and counts what it drops. Input is
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
    /// Output bytes the daemon had not taken when it broke the ring (lost with it).
    pub poison_lost: u64,
    /// Output bytes accepted from the guest.
    pub written: u64,
    /// Input bytes handed to the guest.
    pub input: u64,
}

/// The part of a console that the daemon shares, replaced whole when it breaks a ring.
struct Rings {
    session: u64,
    out: ByteProducer,
    out_data: Doorbell,
    input: ByteConsumer,
    in_data: Doorbell,
    in_space: Doorbell,
}

impl Rings {
    fn new(name: &str, out_bytes: u64, in_bytes: u64) -> Result<Self, RingError> {
        let out_mem = Arc::new(RingMemory::create(name, RingKind::Bytes, out_bytes, 0)?);
        let in_mem = Arc::new(RingMemory::create(name, RingKind::Bytes, in_bytes, 0)?);
        let mut input = ByteConsumer::new(in_mem)?;
        // Sleep on the input doorbell from the start: the daemon rings it only once this
        // flag is up, and nothing else would raise it before the first input arrives.
        input.prepare_sleep()?;
        Ok(Rings {
            session: crate::new_session_id(),
            out: ByteProducer::new(out_mem)?,
            out_data: Doorbell::new()?,
            input,
            in_data: Doorbell::new()?,
            in_space: Doorbell::new()?,
        })
    }
}

pub(crate) struct Console {
    rings: Rings,
    /// The space doorbell QEMU waits on (`write_wait_fd`): kept across renewals, so a
    /// writer waiting while the rings are replaced is woken through the fd it watches.
    out_space: Doorbell,
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
        Ok(Console {
            rings: Rings::new(name, out_bytes, in_bytes)?,
            out_space: Doorbell::new()?,
            frontend,
            stats: ConsoleStats::default(),
        })
    }

    /// Output bytes the daemon had not taken yet (as far as this side knows): what is lost
    /// if the rings are abandoned now.
    pub(crate) fn undelivered(&self) -> u64 {
        self.rings.out.unconsumed()
    }

    /// Replaces the rings after the daemon broke one (a new session); keeps the frontend,
    /// the counters and the space doorbell. On failure the old rings stay.
    pub(crate) fn renew(&mut self, name: &str) -> Result<(), RingError> {
        let out_bytes = self.rings.out.memory().geometry().capacity;
        let in_bytes = self.rings.input.memory().geometry().capacity;
        self.rings = Rings::new(name, out_bytes, in_bytes)?;
        Ok(())
    }

    /// The fds sent to the daemon, in the order `shm_ring::handover` documents.
    pub(crate) fn handover_fds(&self) -> [BorrowedFd<'_>; 6] {
        [
            self.rings.out.memory().fd(),
            self.rings.out_data.as_fd(),
            self.out_space.as_fd(),
            self.rings.input.memory().fd(),
            self.rings.in_data.as_fd(),
            self.rings.in_space.as_fd(),
        ]
    }

    pub(crate) fn describe(&self, base: DeviceDescription) -> DeviceDescription {
        DeviceDescription {
            kind: DeviceKind::Console,
            session: self.rings.session,
            audio: None,
            ..base
        }
    }

    /// Guest output. `lossless`: backpressure (a daemon is attached, or may come back within
    /// the restart grace); otherwise the flight recorder. Returns the bytes accepted.
    pub(crate) fn write(&mut self, buf: &[u8], lossless: bool) -> Result<usize, RingPoisoned> {
        let w = if lossless {
            self.rings.out.write(buf)
        } else {
            self.rings.out.write_overwriting(buf)
        }
        .map_err(RingPoisoned)?;
        if w.wake_consumer {
            self.rings.out_data.ring();
        }
        self.stats.flight_dropped += w.dropped;
        self.stats.written += w.bytes as u64;
        Ok(w.bytes)
    }

    /// Whether a write would accept a byte now; arms the space doorbell when not.
    pub(crate) fn write_ready(&mut self, lossless: bool) -> Result<bool, RingPoisoned> {
        if !lossless {
            return Ok(true);
        }
        let space = &self.out_space;
        self.rings
            .out
            .space_or_arm(1, || {
                space.drain();
            })
            .map_err(RingPoisoned)
    }

    pub(crate) fn write_wait_fd(&self) -> i32 {
        self.out_space.as_fd().as_raw_fd()
    }

    /// Wakes whoever waits on the space doorbell (used when the wait is moot: the restart
    /// grace ended and writes are accepted again, or the rings were replaced).
    pub(crate) fn kick_writer(&self) {
        self.out_space.ring();
    }

    pub(crate) fn input_fd(&self) -> i32 {
        self.rings.in_data.as_fd().as_raw_fd()
    }

    /// Moves input to the guest while it can take it. Returns when the ring is empty (and
    /// the data doorbell is armed) or the frontend is full (resumed by accept_input).
    pub(crate) fn pump_input(&mut self) -> Result<(), RingPoisoned> {
        self.rings.in_data.drain();
        let mut buf = [0u8; 512];
        loop {
            let room = self.frontend.can_write().min(buf.len());
            if room == 0 {
                return Ok(());
            }
            let r = self
                .rings
                .input
                .read(&mut buf[..room])
                .map_err(RingPoisoned)?;
            if r.wake_producer {
                self.rings.in_space.ring();
            }
            if r.bytes == 0 {
                if self.rings.input.prepare_sleep().map_err(RingPoisoned)? {
                    return Ok(());
                }
                continue;
            }
            self.stats.input += r.bytes as u64;
            self.frontend.write(&buf[..r.bytes]);
        }
    }
}
