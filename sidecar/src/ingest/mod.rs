//! The ingest thread: one io_uring over the registration socket, every QEMU connection and
//! every data doorbell. It maps registered rings, drains them in batches, writes console
//! bytes to the spool through the same ring and only then releases them in the ring, and
//! fans audio periods out to subscribers. With nothing to do it sleeps in the kernel.
//!
//! Modules: this one (the loop and what its completions mean), `token` (what an io_uring
//! completion is for), `registration` (QEMU connecting, a device registered or refused,
//! QEMU gone), `drain` (rings drained into journals and to subscribers), `rings` (the
//! rings of a registration mapped and checked).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use shm_ring::handover::{self, Ack, DeviceDescription};
use shm_ring::{
    ByteConsumer, ByteProducer, Consumed, Doorbell, Poison, RecordConsumer, RingKind, RingMemory,
};

use crate::daemon::Registry;
use crate::device::{lock, AudioPeriod, Device, DeviceKind, DeviceState, InputSide};
use crate::names::{utc_timestamp, DeviceKey};
use crate::uring::{mask, Completion, Uring};

mod admission;
mod drain;
mod registration;
mod rings;
mod token;

use admission::Deadlines;
use rings::*;
use token::Token;

/// Largest console drain per spool write.
pub(super) const DRAIN_BYTES: usize = 64 * 1024;
/// Ring drains done in one go before other devices get their turn.
pub(super) const BATCH: usize = 64;

pub(super) struct Registration {
    pub(super) fd: OwnedFd,
    pub(super) uid: u32,
    pub(super) pid: u32,
    pub(super) attachment: Option<u64>,
    /// When the connection is closed unless it registered a device by then (and for a
    /// refused one, when it is closed at the latest).
    pub(super) deadline: Option<std::time::Instant>,
    /// Refused at accept: never read, closed at its deadline or when the peer hangs up.
    pub(super) refused: bool,
}

pub(super) enum Ring {
    Console(ByteConsumer),
    Audio {
        rx: RecordConsumer,
        payload: Vec<u8>,
        next_seq: Option<u64>,
    },
}

pub(super) enum Pending {
    Marker(usize),
    Ring(usize),
}

pub(super) struct Attached {
    pub(super) registration: u64,
    pub(super) dev: Arc<Device>,
    pub(super) session: u64,
    pub(super) base: u64,
    pub(super) ring: Ring,
    pub(super) out_data: Doorbell,
    pub(super) out_space: Option<Doorbell>,
    pub(super) in_space: Option<Doorbell>,
    pub(super) writing: Option<Pending>,
    pub(super) buf: Option<Vec<u8>>,
    pub(super) marker: Vec<u8>,
    /// The QEMU went away: drain what is left, then detach.
    pub(super) closing: bool,
    /// The ring broke: detach as soon as no write is in flight.
    pub(super) poisoned: bool,
}

pub(super) struct Ingest {
    pub(super) uring: Uring,
    pub(super) reg: Arc<Registry>,
    pub(super) listener: OwnedFd,
    pub(super) stop: Doorbell,
    pub(super) registrations: HashMap<u64, Registration>,
    pub(super) attached: HashMap<u64, Attached>,
    pub(super) ready: VecDeque<u64>,
    pub(super) next_id: u64,
    pub(super) uid: u32,
    pub(super) stopping: bool,
    pub(super) deadlines: Deadlines,
}

/// Runs the ingest loop until `stop` rings.
pub(crate) fn run(uring: Uring, reg: Arc<Registry>, listener: OwnedFd, stop: Doorbell) {
    let deadlines = match Deadlines::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the registration timer; ringcastd cannot ingest");
            return;
        }
    };
    let mut ing = Ingest {
        deadlines,
        uring,
        reg,
        listener,
        stop,
        registrations: HashMap::new(),
        attached: HashMap::new(),
        ready: VecDeque::new(),
        next_id: 1,
        uid: rustix::process::getuid().as_raw(),
        stopping: false,
    };
    if let Err(e) = ing.arm_static() {
        tracing::error!(error = %e, "cannot arm the io_uring polls; ringcastd cannot ingest");
        return;
    }
    let mut done = Vec::new();
    while !ing.stopping {
        done.clear();
        let wait = ing.ready.is_empty();
        if let Err(e) = ing.uring.submit_and_reap(wait, &mut done) {
            tracing::error!(error = %e, "io_uring failed; ringcastd stops ingesting");
            break;
        }
        for c in done.drain(..) {
            ing.dispatch(c);
        }
        // Devices that had more than one batch to drain get another turn now.
        for _ in 0..ing.ready.len() {
            if let Some(id) = ing.ready.pop_front() {
                ing.drain(id);
            }
        }
    }
    for (_, att) in ing.attached.drain() {
        att.dev.set_attachment(DeviceState::Gone, None);
    }
    ing.reg.changed.notify();
    tracing::info!("ingest stopped");
}

impl Ingest {
    pub(super) fn arm_static(&mut self) -> std::io::Result<()> {
        self.uring
            .poll_multishot(self.listener.as_fd(), mask::IN, Token::Listener.encode())?;
        self.uring
            .poll_multishot(self.stop.as_fd(), mask::IN, Token::Stop.encode())?;
        self.uring.poll_multishot(
            self.deadlines.timer.as_fd(),
            mask::IN,
            Token::Deadline.encode(),
        )?;
        Ok(())
    }

    pub(super) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn dispatch(&mut self, c: Completion) {
        match Token::decode(c.token) {
            Some(Token::Listener) => {
                self.accept_all();
                if !c.more {
                    let _ = self
                        .uring
                        .poll_multishot(self.listener.as_fd(), mask::IN, c.token);
                }
            }
            Some(Token::Stop) => self.stopping = true,
            Some(Token::Deadline) => {
                self.deadlines.drain();
                if !c.more {
                    let _ =
                        self.uring
                            .poll_multishot(self.deadlines.timer.as_fd(), mask::IN, c.token);
                }
                self.expire();
            }
            Some(Token::Registration(id)) => {
                if !self.registrations.contains_key(&id) {
                    return;
                }
                self.on_registration_event(id, c.result);
                if !c.more {
                    if let Some(conn) = self.registrations.get(&id) {
                        let _ = self.uring.poll_multishot(
                            conn.fd.as_fd(),
                            mask::IN | mask::RDHUP,
                            c.token,
                        );
                    }
                }
            }
            Some(Token::OutData(id)) => {
                let Some(att) = self.attached.get(&id) else {
                    return;
                };
                att.out_data.drain();
                if !c.more && !att.closing && !att.poisoned {
                    let _ = self
                        .uring
                        .poll_multishot(att.out_data.as_fd(), mask::IN, c.token);
                }
                self.drain(id);
            }
            Some(Token::InSpace(id)) => {
                let Some(att) = self.attached.get(&id) else {
                    return;
                };
                if let Some(bell) = &att.in_space {
                    bell.drain();
                    if !c.more && !att.closing && !att.poisoned {
                        let _ = self.uring.poll_multishot(bell.as_fd(), mask::IN, c.token);
                    }
                }
                att.dev.input_signal.notify();
            }
            Some(Token::Write(id)) => self.write_done(id, c.result, c.buffer),
            None => {}
        }
    }
}
