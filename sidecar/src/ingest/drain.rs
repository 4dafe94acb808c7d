//! Rings drained: console bytes written to the spool through the ring before their slots
//! are released, audio periods fanned out, poisoned rings detached.

use super::*;

impl Ingest {
    /// Removes an attachment (no write may be in flight).
    pub(super) fn detach(&mut self, id: u64, state: DeviceState, why: Option<String>) {
        let Some(att) = self.attached.remove(&id) else {
            return;
        };
        if !att.closing {
            let _ = self.uring.cancel(Token::OutData(id).encode());
            if att.in_space.is_some() {
                let _ = self.uring.cancel(Token::InSpace(id).encode());
            }
        }
        if let Some(c) = self.registrations.get_mut(&att.registration) {
            c.attachment = None;
        }
        att.dev.set_attachment(state, why);
        self.reg.changed.notify();
    }

    pub(super) fn poison(&mut self, id: u64, p: Poison) {
        let Some(att) = self.attached.get_mut(&id) else {
            return;
        };
        tracing::error!(device = %att.dev.key, poison = %p,
            "the QEMU side broke the ring; the device is detached, its journal stays");
        att.poisoned = true;
        if att.writing.is_none() {
            self.detach(id, DeviceState::Poisoned, Some(p.to_string()));
        } else {
            // Mark it now; the attachment goes when its write completes.
            att.dev
                .set_attachment(DeviceState::Poisoned, Some(p.to_string()));
        }
    }

    pub(super) fn drain(&mut self, id: u64) {
        for _ in 0..BATCH {
            let Some(att) = self.attached.get_mut(&id) else {
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
                    let Some(att) = self.attached.get_mut(&id) else {
                        return;
                    };
                    if att.closing {
                        return self.detach(id, DeviceState::Gone, None);
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

    pub(super) fn write_marker(&mut self, id: u64) -> Step {
        let Some(att) = self.attached.get_mut(&id) else {
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
                match self
                    .uring
                    .write_at(file, off, marker, n, Token::Write(id).encode())
                {
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

    pub(super) fn console_step(&mut self, id: u64) -> Step {
        let Some(att) = self.attached.get_mut(&id) else {
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
        // The ring's positions come from QEMU's process: one that would overflow the
        // journal's position is treated as a broken ring, not trusted.
        let Some(jpos) = att.base.checked_add(r.position) else {
            return Step::Poisoned(Poison::PositionPastCapacity);
        };
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
                Ok(Consumed { wake_producer }) => {
                    if wake_producer {
                        if let Some(b) = &att.out_space {
                            b.ring();
                        }
                    }
                    Step::Again
                }
                Err(p) => Step::Poisoned(p),
            };
        }
        match j.spool_target(SystemTime::now()) {
            Some((file, off)) => {
                drop(j);
                match self
                    .uring
                    .write_at(file, off, buf, r.bytes, Token::Write(id).encode())
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
                    Ok(Consumed { wake_producer }) => {
                        j.commit(&buf[..r.bytes], false);
                        att.dev.counters.bytes.fetch_add(r.bytes as u64, Relaxed);
                        if wake_producer {
                            if let Some(b) = &att.out_space {
                                b.ring();
                            }
                        }
                        Step::Again
                    }
                    Err(p) => Step::Poisoned(p),
                };
                drop(j);
                att.buf = Some(buf);
                att.dev.signal.notify();
                step
            }
        }
    }

    pub(super) fn audio_step(&mut self, id: u64) -> Step {
        let Some(att) = self.attached.get_mut(&id) else {
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

    pub(super) fn write_done(&mut self, id: u64, result: i32, buffer: Option<Vec<u8>>) {
        let Some(att) = self.attached.get_mut(&id) else {
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
                        Ok(Consumed { wake_producer }) => {
                            j.commit(&buf[..r], true);
                            att.dev.counters.bytes.fetch_add(r as u64, Relaxed);
                            if wake_producer {
                                if let Some(b) = &att.out_space {
                                    b.ring();
                                }
                            }
                        }
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
            return self.detach(id, DeviceState::Poisoned, why);
        }
        self.drain(id);
    }
}

pub(super) enum Step {
    /// Something was done; go on.
    Again,
    /// Waiting for a completion.
    Wait,
    /// The ring is empty.
    Empty,
    /// The ring broke.
    Poisoned(Poison),
}

pub(super) fn spool_failed(j: &mut crate::journal::Journal, dev: &Device, result: i32) {
    let err = std::io::Error::from_raw_os_error(result.saturating_neg());
    tracing::error!(device = %dev.key, dir = %j.dir().display(), error = %err,
        "spool write failed; this device's journal continues in RAM only");
    j.disable_spool();
    dev.counters.spool_errors.fetch_add(1, Relaxed);
}
