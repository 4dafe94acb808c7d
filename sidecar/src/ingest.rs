//! The ingest thread: one io_uring over the registration socket, every QEMU connection and
//! every data doorbell. It maps registered rings, drains them in batches, writes console
//! bytes to the spool through the same ring and only then releases them in the ring, and
//! fans audio periods out to subscribers. With nothing to do it sleeps in the kernel.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use shm_ring::handover::{self, Ack, DeviceDescription, DeviceKind};
use shm_ring::{
    ByteConsumer, ByteProducer, Consumed, Doorbell, Poison, RecordConsumer, RingKind, RingMemory,
};

use crate::daemon::Registry;
use crate::device::{lock, Attachment, AudioPeriod, Device, InputSide, Kind};
use crate::names::{utc_timestamp, DeviceKey};
use crate::uring::{mask, Completion, Uring};

const LISTENER: u64 = 1;
const STOP: u64 = 2;
const CONN: u64 = 3;
const OUT_DATA: u64 = 4;
const IN_SPACE: u64 = 5;
const WRITE: u64 = 6;

fn token(kind: u64, id: u64) -> u64 {
    (kind << 56) | (id & ((1 << 56) - 1))
}

fn split(token: u64) -> (u64, u64) {
    (token >> 56, token & ((1 << 56) - 1))
}

/// Largest console drain per spool write.
const DRAIN_BYTES: usize = 64 * 1024;
/// Ring drains done in one go before other devices get their turn.
const BATCH: usize = 64;

struct Conn {
    fd: OwnedFd,
    uid: u32,
    pid: u32,
    att: Option<u64>,
}

enum Ring {
    Console(ByteConsumer),
    Audio {
        rx: RecordConsumer,
        payload: Vec<u8>,
        next_seq: Option<u64>,
    },
}

enum Pending {
    Marker(usize),
    Ring(usize),
}

struct Att {
    conn: u64,
    dev: Arc<Device>,
    session: u64,
    base: u64,
    ring: Ring,
    out_data: Doorbell,
    out_space: Option<Doorbell>,
    in_space: Option<Doorbell>,
    writing: Option<Pending>,
    buf: Option<Vec<u8>>,
    marker: Vec<u8>,
    /// The QEMU went away: drain what is left, then detach.
    closing: bool,
    /// The ring broke: detach as soon as no write is in flight.
    poisoned: bool,
}

struct Ingest {
    uring: Uring,
    reg: Arc<Registry>,
    listener: OwnedFd,
    stop: Doorbell,
    conns: HashMap<u64, Conn>,
    atts: HashMap<u64, Att>,
    ready: VecDeque<u64>,
    next_id: u64,
    uid: u32,
    stopping: bool,
}

/// Runs the ingest loop until `stop` rings.
pub(crate) fn run(uring: Uring, reg: Arc<Registry>, listener: OwnedFd, stop: Doorbell) {
    let mut ing = Ingest {
        uring,
        reg,
        listener,
        stop,
        conns: HashMap::new(),
        atts: HashMap::new(),
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
    for (_, att) in ing.atts.drain() {
        att.dev.set_attachment(Attachment::Gone, None);
    }
    ing.reg.changed.notify();
    tracing::info!("ingest stopped");
}

impl Ingest {
    fn arm_static(&mut self) -> std::io::Result<()> {
        self.uring
            .poll_multishot(self.listener.as_fd(), mask::IN, token(LISTENER, 0))?;
        self.uring
            .poll_multishot(self.stop.as_fd(), mask::IN, token(STOP, 0))?;
        Ok(())
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn dispatch(&mut self, c: Completion) {
        let (kind, id) = split(c.token);
        match kind {
            LISTENER => {
                self.accept_all();
                if !c.more {
                    let _ = self
                        .uring
                        .poll_multishot(self.listener.as_fd(), mask::IN, c.token);
                }
            }
            STOP => self.stopping = true,
            CONN => {
                if !self.conns.contains_key(&id) {
                    return;
                }
                self.on_conn(id, c.result);
                if !c.more {
                    if let Some(conn) = self.conns.get(&id) {
                        let _ = self.uring.poll_multishot(
                            conn.fd.as_fd(),
                            mask::IN | mask::RDHUP,
                            c.token,
                        );
                    }
                }
            }
            OUT_DATA => {
                let Some(att) = self.atts.get(&id) else {
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
            IN_SPACE => {
                let Some(att) = self.atts.get(&id) else {
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
            WRITE => self.write_done(id, c.result, c.buffer),
            _ => {}
        }
    }

    fn accept_all(&mut self) {
        loop {
            let fd = match rustix::net::accept_with(
                &self.listener,
                rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            };
            let (uid, pid) = match rustix::net::sockopt::socket_peercred(&fd) {
                Ok(c) => (c.uid.as_raw(), c.pid.as_raw_nonzero().get() as u32),
                Err(_) => (u32::MAX, 0),
            };
            let id = self.id();
            if let Err(e) =
                self.uring
                    .poll_multishot(fd.as_fd(), mask::IN | mask::RDHUP, token(CONN, id))
            {
                tracing::warn!(error = %e, "cannot watch a new connection");
                continue;
            }
            self.conns.insert(
                id,
                Conn {
                    fd,
                    uid,
                    pid,
                    att: None,
                },
            );
        }
    }

    fn on_conn(&mut self, id: u64, revents: i32) {
        loop {
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            match handover::recv_with_fds(&conn.fd) {
                Ok(Some((msg, fds))) => self.register(id, &msg, fds),
                Ok(None) => return self.conn_closed(id),
                Err(shm_ring::RingError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    if revents > 0 && (revents as u32) & (mask::HUP | mask::ERR) != 0 {
                        self.conn_closed(id);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a registration connection");
                    return self.conn_closed(id);
                }
            }
        }
    }

    fn refuse(&mut self, conn_id: u64, why: String) {
        tracing::warn!(reason = %why, "registration refused");
        if let Some(conn) = self.conns.get(&conn_id) {
            let ack = Ack {
                accepted: false,
                message: why,
            };
            let _ = handover::send_with_fds(&conn.fd, &ack.encode(), &[]);
        }
        // The backend closes and retries later; closing here too frees the fds at once.
        self.close_conn(conn_id);
    }

    fn close_conn(&mut self, conn_id: u64) {
        if self.conns.remove(&conn_id).is_some() {
            let _ = self.uring.cancel(token(CONN, conn_id));
        }
    }

    fn conn_alive(&self, conn_id: u64) -> bool {
        let Some(conn) = self.conns.get(&conn_id) else {
            return false;
        };
        let mut fds = [rustix::event::PollFd::new(
            &conn.fd,
            rustix::event::PollFlags::RDHUP,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => true,
            Ok(_) => fds[0].revents().is_empty(),
            Err(_) => false,
        }
    }

    fn register(&mut self, conn_id: u64, msg: &[u8], fds: Vec<OwnedFd>) {
        let Some(conn) = self.conns.get(&conn_id) else {
            return;
        };
        let (uid, pid) = (conn.uid, conn.pid);
        if uid != self.uid && uid != 0 {
            return self.refuse(
                conn_id,
                format!(
                    "ringcastd runs as uid {} and accepts devices only from that user or root, \
                     not from uid {uid}; run QEMU and ringcastd as the same user",
                    self.uid
                ),
            );
        }
        if conn.att.is_some() {
            return self.refuse(conn_id, "one device per connection".into());
        }
        let desc = match DeviceDescription::decode(msg) {
            Ok(d) => d,
            Err(e) => return self.refuse(conn_id, e.to_string()),
        };
        if fds.len() != desc.kind.fd_count() {
            return self.refuse(
                conn_id,
                format!(
                    "expected {} file descriptors, got {}",
                    desc.kind.fd_count(),
                    fds.len()
                ),
            );
        }
        let key = DeviceKey::from_description(&desc);
        let kind = match desc.kind {
            DeviceKind::Console => Kind::Console,
            DeviceKind::Audio => Kind::Audio,
        };
        let dev = match self.reg.device_for(&key, kind) {
            Ok(d) => d,
            Err(why) => return self.refuse(conn_id, why),
        };
        let previous = self
            .atts
            .iter()
            .find(|(_, a)| Arc::ptr_eq(&a.dev, &dev))
            .map(|(id, a)| (*id, a.session, a.conn, a.writing.is_some()));
        if let Some((old_id, old_session, old_conn, writing)) = previous {
            if writing {
                return self.refuse(
                    conn_id,
                    format!("{key} is still being drained from its previous registration; retry"),
                );
            }
            if old_session != desc.session && self.conn_alive(old_conn) {
                let old_pid = self.conns.get(&old_conn).map_or(0, |c| c.pid);
                return self.refuse(
                    conn_id,
                    format!(
                        "{key} is attached to a running QEMU (pid {old_pid}); \
                         give this device or VM another name"
                    ),
                );
            }
            self.detach(old_id, Attachment::Gone, None);
            if old_conn != conn_id {
                self.close_conn(old_conn);
            }
        }
        let att = match open_rings(&desc, fds) {
            Ok(a) => a,
            Err(why) => return self.refuse(conn_id, format!("cannot use the rings: {why}")),
        };
        let (ring, out_data, out_space, in_space, input, capacity) = att;
        let mut marker = Vec::new();
        let mut base = 0;
        if let Some(j) = &dev.journal {
            let mut j = lock(j);
            let meta = j.meta().clone();
            if meta.session == Some(desc.session) {
                base = meta.base;
            } else if j.end() > 0 || meta.session.is_some() {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                marker = format!(
                    "\r\n--- ringcast: {key} restarted at {} ---\r\n",
                    utc_timestamp(now)
                )
                .into_bytes();
            } else {
                base = j.end();
                j.set_session(desc.session, base);
            }
        }
        let id = self.id();
        let _ = self
            .uring
            .poll_multishot(out_data.as_fd(), mask::IN, token(OUT_DATA, id));
        if let Some(bell) = &in_space {
            let _ = self
                .uring
                .poll_multishot(bell.as_fd(), mask::IN, token(IN_SPACE, id));
        }
        if let Some(c) = self.conns.get_mut(&conn_id) {
            c.att = Some(id);
        }
        dev.counters.ring_capacity.store(capacity, Relaxed);
        dev.counters.registrations.fetch_add(1, Relaxed);
        {
            let mut s = lock(&dev.state);
            s.audio_format = desc.audio;
        }
        *lock(&dev.input) = input;
        dev.set_attachment(Attachment::Attached, None);
        self.reg.changed.notify();
        tracing::info!(device = %key, pid, session = desc.session, "device attached");
        self.atts.insert(
            id,
            Att {
                conn: conn_id,
                dev,
                session: desc.session,
                base,
                ring,
                out_data,
                out_space,
                in_space,
                writing: None,
                buf: None,
                marker,
                closing: false,
                poisoned: false,
            },
        );
        // Acknowledge only now, so that input and subscriptions work as soon as the
        // backend knows it is attached.
        let ack = Ack {
            accepted: true,
            message: format!("ringcastd attached {key}"),
        };
        let sent = self
            .conns
            .get(&conn_id)
            .map(|c| handover::send_with_fds(&c.fd, &ack.encode(), &[]));
        if !matches!(sent, Some(Ok(()))) {
            return self.conn_closed(conn_id);
        }
        self.drain(id);
    }

    fn conn_closed(&mut self, conn_id: u64) {
        let Some(conn) = self.conns.remove(&conn_id) else {
            return;
        };
        let _ = self.uring.cancel(token(CONN, conn_id));
        let Some(id) = conn.att else { return };
        let Some(att) = self.atts.get_mut(&id) else {
            return;
        };
        // The QEMU is gone, but its last bytes may still be in the ring: take them.
        att.closing = true;
        *lock(&att.dev.input) = None;
        att.dev.input_signal.notify();
        let _ = self.uring.cancel(token(OUT_DATA, id));
        if att.in_space.is_some() {
            let _ = self.uring.cancel(token(IN_SPACE, id));
        }
        tracing::info!(device = %att.dev.key, "QEMU disconnected");
        self.drain(id);
    }

    /// Removes an attachment (no write may be in flight).
    fn detach(&mut self, id: u64, state: Attachment, why: Option<String>) {
        let Some(att) = self.atts.remove(&id) else {
            return;
        };
        if !att.closing {
            let _ = self.uring.cancel(token(OUT_DATA, id));
            if att.in_space.is_some() {
                let _ = self.uring.cancel(token(IN_SPACE, id));
            }
        }
        if let Some(c) = self.conns.get_mut(&att.conn) {
            c.att = None;
        }
        att.dev.set_attachment(state, why);
        self.reg.changed.notify();
    }

    fn poison(&mut self, id: u64, p: Poison) {
        let Some(att) = self.atts.get_mut(&id) else {
            return;
        };
        tracing::error!(device = %att.dev.key, poison = %p,
            "the QEMU side broke the ring; the device is detached, its journal stays");
        att.poisoned = true;
        if att.writing.is_none() {
            self.detach(id, Attachment::Poisoned, Some(p.to_string()));
        } else {
            // Mark it now; the attachment goes when its write completes.
            att.dev
                .set_attachment(Attachment::Poisoned, Some(p.to_string()));
        }
    }

    fn drain(&mut self, id: u64) {
        for _ in 0..BATCH {
            let Some(att) = self.atts.get_mut(&id) else {
                return;
            };
            if att.writing.is_some() || att.poisoned {
                return;
            }
            let step = if !att.marker.is_empty() {
                self.write_marker(id)
            } else {
                match att.ring {
                    Ring::Console(_) => self.console_step(id),
                    Ring::Audio { .. } => self.audio_step(id),
                }
            };
            match step {
                Step::Again => continue,
                Step::Wait => return,
                Step::Empty => {
                    let Some(att) = self.atts.get_mut(&id) else {
                        return;
                    };
                    if att.closing {
                        return self.detach(id, Attachment::Gone, None);
                    }
                    let slept = match &mut att.ring {
                        Ring::Console(rx) => rx.prepare_sleep(),
                        Ring::Audio { rx, .. } => rx.prepare_sleep(),
                    };
                    match slept {
                        Ok(true) => return,
                        Ok(false) => continue,
                        Err(p) => return self.poison(id, p),
                    }
                }
                Step::Poisoned(p) => return self.poison(id, p),
            }
        }
        self.ready.push_back(id);
    }

    fn write_marker(&mut self, id: u64) -> Step {
        let Some(att) = self.atts.get_mut(&id) else {
            return Step::Wait;
        };
        let Some(journal) = &att.dev.journal else {
            att.marker.clear();
            return Step::Again;
        };
        let mut j = lock(journal);
        match j.spool_target(SystemTime::now()) {
            Some((file, off)) => {
                drop(j);
                let marker = std::mem::take(&mut att.marker);
                let n = marker.len();
                match self.uring.write_at(file, off, marker, n, token(WRITE, id)) {
                    Ok(()) => {
                        att.writing = Some(Pending::Marker(n));
                        Step::Wait
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot queue a spool write");
                        let mut j = lock(journal);
                        j.disable_spool();
                        att.dev.counters.spool_errors.fetch_add(1, Relaxed);
                        Step::Again
                    }
                }
            }
            None => {
                let marker = std::mem::take(&mut att.marker);
                j.commit(&marker, false);
                att.base = j.end();
                j.set_session(att.session, att.base);
                drop(j);
                att.dev.signal.notify();
                Step::Again
            }
        }
    }

    fn console_step(&mut self, id: u64) -> Step {
        let Some(att) = self.atts.get_mut(&id) else {
            return Step::Wait;
        };
        let Ring::Console(rx) = &mut att.ring else {
            return Step::Wait;
        };
        let cap = rx.memory().geometry().capacity as usize;
        let mut buf = att
            .buf
            .take()
            .unwrap_or_else(|| vec![0u8; DRAIN_BYTES.min(cap)]);
        let r = match rx.peek(&mut buf) {
            Ok(r) => r,
            Err(p) => return Step::Poisoned(p),
        };
        att.dev.counters.ring_fill.store(r.bytes as u64, Relaxed);
        if r.bytes == 0 {
            // Idle devices hold no drain buffer.
            return Step::Empty;
        }
        let Some(journal) = &att.dev.journal else {
            return Step::Wait;
        };
        let jpos = att.base + r.position;
        let mut j = lock(journal);
        let end = j.end();
        if jpos > end {
            // The producer dropped these while no ringcastd was attached.
            let lost = jpos - end;
            j.record_gap(lost);
            att.dev
                .counters
                .dropped_flight_recorder
                .fetch_add(lost, Relaxed);
            att.dev.signal.notify();
        } else if jpos < end {
            // Already in the journal (stored before a restart, not yet released): skip.
            drop(j);
            let skip = ((end - jpos) as usize).min(r.bytes);
            att.buf = Some(buf);
            return match rx.consume(skip) {
                Ok(Consumed::Done { wake_producer }) => {
                    if wake_producer {
                        if let Some(b) = &att.out_space {
                            b.ring();
                        }
                    }
                    Step::Again
                }
                Ok(Consumed::Overwritten { .. }) => Step::Again,
                Err(p) => Step::Poisoned(p),
            };
        }
        match j.spool_target(SystemTime::now()) {
            Some((file, off)) => {
                drop(j);
                match self
                    .uring
                    .write_at(file, off, buf, r.bytes, token(WRITE, id))
                {
                    Ok(()) => {
                        att.writing = Some(Pending::Ring(r.bytes));
                        Step::Wait
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot queue a spool write");
                        lock(journal).disable_spool();
                        att.dev.counters.spool_errors.fetch_add(1, Relaxed);
                        Step::Again
                    }
                }
            }
            None => {
                // RAM only (the spool failed): release, then keep.
                let step = match rx.consume(r.bytes) {
                    Ok(Consumed::Done { wake_producer }) => {
                        j.commit(&buf[..r.bytes], false);
                        att.dev.counters.bytes.fetch_add(r.bytes as u64, Relaxed);
                        if wake_producer {
                            if let Some(b) = &att.out_space {
                                b.ring();
                            }
                        }
                        Step::Again
                    }
                    Ok(Consumed::Overwritten { .. }) => Step::Again,
                    Err(p) => Step::Poisoned(p),
                };
                drop(j);
                att.buf = Some(buf);
                att.dev.signal.notify();
                step
            }
        }
    }

    fn audio_step(&mut self, id: u64) -> Step {
        let Some(att) = self.atts.get_mut(&id) else {
            return Step::Wait;
        };
        let Ring::Audio {
            rx,
            payload,
            next_seq,
        } = &mut att.ring
        else {
            return Step::Wait;
        };
        match rx.pop(payload) {
            Ok(Some(p)) => {
                let c = &att.dev.counters;
                if let Some(expected) = *next_seq {
                    if p.meta.seq > expected {
                        // Sequence numbers count the periods the producer had to drop.
                        c.dropped_audio_overflow
                            .fetch_add((p.meta.seq - expected).min(u64::from(u32::MAX)), Relaxed);
                    }
                }
                *next_seq = Some(p.meta.seq.wrapping_add(1));
                c.periods.fetch_add(1, Relaxed);
                c.bytes.fetch_add(payload.len() as u64, Relaxed);
                att.dev.fan_out(&AudioPeriod {
                    seq: p.meta.seq,
                    timestamp_ns: p.meta.timestamp_ns,
                    frames: p.meta.frames,
                    pcm: Bytes::copy_from_slice(payload),
                    skipped_before: 0,
                });
                Step::Again
            }
            Ok(None) => Step::Empty,
            Err(p) => Step::Poisoned(p),
        }
    }

    fn write_done(&mut self, id: u64, result: i32, buffer: Option<Vec<u8>>) {
        let Some(att) = self.atts.get_mut(&id) else {
            return;
        };
        let Some(pending) = att.writing.take() else {
            return;
        };
        let buf = buffer.unwrap_or_default();
        let Some(journal) = &att.dev.journal else {
            return;
        };
        let mut j = lock(journal);
        let mut poisoned = None;
        match pending {
            Pending::Marker(n) => {
                if result > 0 {
                    let r = (result as usize).min(n);
                    j.commit(&buf[..r], true);
                    if r < n {
                        att.marker = buf[r..n].to_vec();
                    } else {
                        att.base = j.end();
                        j.set_session(att.session, att.base);
                    }
                } else {
                    spool_failed(&mut j, &att.dev, result);
                    att.marker = buf[..n].to_vec();
                }
            }
            Pending::Ring(n) => {
                let Ring::Console(rx) = &mut att.ring else {
                    return;
                };
                if result > 0 {
                    let r = (result as usize).min(n);
                    match rx.consume(r) {
                        Ok(Consumed::Done { wake_producer }) => {
                            j.commit(&buf[..r], true);
                            att.dev.counters.bytes.fetch_add(r as u64, Relaxed);
                            if wake_producer {
                                if let Some(b) = &att.out_space {
                                    b.ring();
                                }
                            }
                        }
                        Ok(Consumed::Overwritten { .. }) => j.void_uncommitted(),
                        Err(p) => {
                            j.void_uncommitted();
                            poisoned = Some(p);
                        }
                    }
                } else {
                    j.void_uncommitted();
                    spool_failed(&mut j, &att.dev, result);
                }
                att.buf = Some(buf);
            }
        }
        drop(j);
        att.dev.signal.notify();
        if let Some(p) = poisoned {
            return self.poison(id, p);
        }
        if att.poisoned {
            let why = lock(&att.dev.state).poisoned.clone();
            return self.detach(id, Attachment::Poisoned, why);
        }
        self.drain(id);
    }
}

enum Step {
    /// Something was done; go on.
    Again,
    /// Waiting for a completion.
    Wait,
    /// The ring is empty.
    Empty,
    /// The ring broke.
    Poisoned(Poison),
}

fn spool_failed(j: &mut crate::journal::Journal, dev: &Device, result: i32) {
    let err = std::io::Error::from_raw_os_error(result.saturating_neg());
    tracing::error!(device = %dev.key, dir = %j.dir().display(), error = %err,
        "spool write failed; this device's journal continues in RAM only");
    j.disable_spool();
    dev.counters.spool_errors.fetch_add(1, Relaxed);
}

type Opened = (
    Ring,
    Doorbell,
    Option<Doorbell>,
    Option<Doorbell>,
    Option<InputSide>,
    u64,
);

/// Maps and validates the rings of a description, in the fd order `handover` documents.
fn open_rings(desc: &DeviceDescription, fds: Vec<OwnedFd>) -> Result<Opened, shm_ring::RingError> {
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or(shm_ring::RingError::BadMessage("missing descriptor"))
    };
    match desc.kind {
        DeviceKind::Console => {
            let out = Arc::new(RingMemory::open(next()?, RingKind::Bytes)?);
            let out_data = Doorbell::from_fd(next()?)?;
            let out_space = Doorbell::from_fd(next()?)?;
            let inp = Arc::new(RingMemory::open(next()?, RingKind::Bytes)?);
            let in_data = Doorbell::from_fd(next()?)?;
            let in_space = Doorbell::from_fd(next()?)?;
            let capacity = out.geometry().capacity;
            let rx = ByteConsumer::new(out)?;
            let tx = ByteProducer::new(inp)?;
            Ok((
                Ring::Console(rx),
                out_data,
                Some(out_space),
                Some(in_space),
                Some(InputSide {
                    producer: tx,
                    data_bell: in_data,
                }),
                capacity,
            ))
        }
        DeviceKind::Audio => {
            let out = Arc::new(RingMemory::open(next()?, RingKind::Records)?);
            let out_data = Doorbell::from_fd(next()?)?;
            let capacity = out.geometry().capacity;
            let rx = RecordConsumer::new(out)?;
            Ok((
                Ring::Audio {
                    rx,
                    payload: Vec::new(),
                    next_seq: None,
                },
                out_data,
                None,
                None,
                None,
                capacity,
            ))
        }
    }
}
