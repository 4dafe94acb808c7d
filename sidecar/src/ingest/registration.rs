//! QEMU's side of the registration socket: connections accepted (peer credentials checked
//! at accept, see `admission`), devices registered or refused with a reason, QEMU gone.

use super::*;

impl Ingest {
    pub(super) fn accept_all(&mut self) {
        loop {
            let fd = match rustix::net::accept_with(
                &self.listener,
                rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    break;
                }
            };
            let (uid, pid) = match rustix::net::sockopt::socket_peercred(&fd) {
                Ok(c) => (c.uid.as_raw(), c.pid.as_raw_nonzero().get() as u32),
                Err(_) => (u32::MAX, 0),
            };
            let admitted = self.admission(uid);
            if let Err(why) = &admitted {
                Self::refuse_at_accept(&fd, why);
            }
            let lingering = self.registrations.values().filter(|r| r.refused).count();
            if admitted.is_err() && lingering >= admission::MAX_PENDING {
                // Enough refused peers are already waiting to hang up: this one is closed
                // now (its refusal is queued for it to read).
                continue;
            }
            let now = std::time::Instant::now();
            let deadline = now
                + if admitted.is_ok() {
                    admission::REGISTER_WITHIN
                } else {
                    admission::REFUSED_LINGER
                };
            let id = self.id();
            if let Err(e) = self.uring.poll_multishot(
                fd.as_fd(),
                mask::IN | mask::RDHUP,
                Token::Registration(id).encode(),
            ) {
                tracing::warn!(error = %e, "cannot watch a new connection");
                continue;
            }
            self.registrations.insert(
                id,
                Registration {
                    fd,
                    uid,
                    pid,
                    attachment: None,
                    deadline: Some(deadline),
                    refused: admitted.is_err(),
                },
            );
        }
        self.expire();
    }

    pub(super) fn on_registration_event(&mut self, id: u64, revents: i32) {
        loop {
            let Some(conn) = self.registrations.get(&id) else {
                return;
            };
            if conn.refused {
                // Never read: closed once the peer hangs up, or at its deadline.
                if revents > 0 && (revents as u32) & (mask::HUP | mask::RDHUP | mask::ERR) != 0 {
                    self.close_registration(id);
                }
                return;
            }
            match handover::recv_with_fds(&conn.fd) {
                Ok(Some((msg, fds))) => self.register(id, &msg, fds),
                Ok(None) => return self.registration_closed(id),
                Err(shm_ring::RingError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    if revents > 0 && (revents as u32) & (mask::HUP | mask::ERR) != 0 {
                        self.registration_closed(id);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a registration connection");
                    return self.registration_closed(id);
                }
            }
        }
    }

    pub(super) fn refuse(&mut self, conn_id: u64, why: String) {
        tracing::warn!(reason = %why, "registration refused");
        if let Some(conn) = self.registrations.get(&conn_id) {
            let ack = Ack {
                accepted: false,
                message: why,
            };
            let _ = handover::send_with_fds(&conn.fd, &ack.encode(), &[]);
        }
        // The backend closes and retries later; closing here too frees the fds at once.
        self.close_registration(conn_id);
    }

    pub(super) fn close_registration(&mut self, conn_id: u64) {
        if self.registrations.remove(&conn_id).is_some() {
            let _ = self.uring.cancel(Token::Registration(conn_id).encode());
        }
    }

    pub(super) fn registration_alive(&self, conn_id: u64) -> bool {
        let Some(conn) = self.registrations.get(&conn_id) else {
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

    /// A registration message with its fds: the device is attached (and acknowledged) or
    /// refused with a reason QEMU logs.
    pub(super) fn register(&mut self, conn_id: u64, msg: &[u8], fds: Vec<OwnedFd>) {
        let Some(conn) = self.registrations.get(&conn_id) else {
            return;
        };
        let pid = conn.pid;
        let desc = match self.admit(conn, msg, fds.len()) {
            Ok(d) => d,
            Err(why) => return self.refuse(conn_id, why),
        };
        let key = DeviceKey::from_description(&desc);
        let kind = match desc.kind {
            handover::DeviceKind::Console => DeviceKind::Console,
            handover::DeviceKind::Audio => DeviceKind::Audio,
        };
        // Everything that can refuse comes before the device is created, so a refused
        // registration leaves no device or journal behind.
        if let Some(existing) = self.reg.existing(&key) {
            if existing.kind != kind {
                return self.refuse(conn_id, self.reg.kind_conflict(&key, existing.kind, kind));
            }
            if let Err(why) = self.take_over_check(&key, &existing) {
                return self.refuse(conn_id, why);
            }
            if let Err(why) = same_vm(&key, &existing, &desc.vm_uuid) {
                return self.refuse(conn_id, why);
            }
        }
        let att = match open_rings(&desc, fds) {
            Ok(a) => a,
            Err(why) => return self.refuse(conn_id, format!("cannot use the rings: {why}")),
        };
        let dev = match self.reg.device_for(&key, kind) {
            Ok(d) => d,
            Err(why) => return self.refuse(conn_id, why),
        };
        self.take_over(conn_id, &dev);
        bind_vm(&dev, &desc.vm_uuid);
        let OpenedRings {
            ring,
            out_data,
            out_space,
            in_space,
            input,
            capacity,
        } = att;
        let (base, marker) = journal_position(&dev, &key, desc.session);
        let id = self.id();
        let _ = self
            .uring
            .poll_multishot(out_data.as_fd(), mask::IN, Token::OutData(id).encode());
        if let Some(bell) = &in_space {
            let _ = self
                .uring
                .poll_multishot(bell.as_fd(), mask::IN, Token::InSpace(id).encode());
        }
        if let Some(c) = self.registrations.get_mut(&conn_id) {
            c.attachment = Some(id);
            c.deadline = None;
        }
        dev.counters.ring_capacity.store(capacity, Relaxed);
        dev.counters.registrations.fetch_add(1, Relaxed);
        {
            let mut s = lock(&dev.state);
            s.audio_format = desc.audio;
            s.audio_in_format = desc.audio_in;
        }
        *lock(&dev.input) = input;
        dev.set_attachment(DeviceState::Attached, None);
        self.reg.changed.notify();
        tracing::info!(device = %key, pid, session = desc.session, "device attached");
        self.attached.insert(
            id,
            Attached {
                registration: conn_id,
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
            .registrations
            .get(&conn_id)
            .map(|c| handover::send_with_fds(&c.fd, &ack.encode(), &[]));
        if !matches!(sent, Some(Ok(()))) {
            return self.registration_closed(conn_id);
        }
        self.drain(id);
    }

    /// Checks who registers and what: the peer's uid (ringcastd's own or root), one device
    /// per connection, a well-formed description with names that keep the grammar and the
    /// right number of fds.
    fn admit(
        &self,
        conn: &Registration,
        msg: &[u8],
        fds: usize,
    ) -> Result<DeviceDescription, String> {
        // Checked at accept already; a connection refused there is never read.
        self.admission_uid(conn.uid)?;
        if conn.attachment.is_some() {
            return Err("one device per connection".into());
        }
        let desc = DeviceDescription::decode(msg).map_err(|e| e.to_string())?;
        crate::names::check_description(&desc)?;
        if fds != desc.fd_count() {
            return Err(format!(
                "expected {} file descriptors, got {fds}",
                desc.fd_count()
            ));
        }
        Ok(desc)
    }

    /// The previous attachment of `dev`, if any: (attachment id, session, registration,
    /// whether a spool write is in flight).
    fn previous(&self, dev: &Arc<Device>) -> Option<(u64, u64, u64, bool)> {
        self.attached
            .iter()
            .find(|(_, a)| Arc::ptr_eq(&a.dev, dev))
            .map(|(id, a)| (*id, a.session, a.registration, a.writing.is_some()))
    }

    /// Whether `dev` may be registered again: its previous attachment is replaced only when
    /// its QEMU is gone; while that QEMU lives, nobody else takes the name, whatever session
    /// id it claims.
    fn take_over_check(&self, key: &DeviceKey, dev: &Arc<Device>) -> Result<(), String> {
        let Some((_, _, old_conn, writing)) = self.previous(dev) else {
            return Ok(());
        };
        if writing {
            return Err(format!(
                "{key} is still being drained from its previous registration; retry"
            ));
        }
        if self.registration_alive(old_conn) {
            let old_pid = self.registrations.get(&old_conn).map_or(0, |c| c.pid);
            return Err(format!(
                "{key} is attached to a running QEMU (pid {old_pid}); give this device or VM \
                 another name"
            ));
        }
        Ok(())
    }

    /// Ends the previous attachment of `dev` (checked by [`Ingest::take_over_check`]).
    fn take_over(&mut self, conn_id: u64, dev: &Arc<Device>) {
        let Some((old_id, _, old_conn, _)) = self.previous(dev) else {
            return;
        };
        self.detach(old_id, DeviceState::Gone, None);
        if old_conn != conn_id {
            self.close_registration(old_conn);
        }
    }

    pub(super) fn registration_closed(&mut self, conn_id: u64) {
        let Some(conn) = self.registrations.remove(&conn_id) else {
            return;
        };
        let _ = self.uring.cancel(Token::Registration(conn_id).encode());
        let Some(id) = conn.attachment else { return };
        let Some(att) = self.attached.get_mut(&id) else {
            return;
        };
        // The QEMU is gone, but its last bytes may still be in the ring: take them.
        att.closing = true;
        *lock(&att.dev.input) = None;
        att.dev.input_signal.notify();
        let _ = self.uring.cancel(Token::OutData(id).encode());
        if att.in_space.is_some() {
            let _ = self.uring.cancel(Token::InSpace(id).encode());
        }
        tracing::info!(device = %att.dev.key, "QEMU disconnected");
        self.drain(id);
    }
}

/// Whether a registration with `uuid` may use the known device `dev`: a device that a VM
/// with a UUID registered (QEMU's `-uuid`, which libvirt always passes) belongs to that VM,
/// and another process (a VM with another UUID, or with none) cannot take its name and
/// history.
fn same_vm(key: &DeviceKey, dev: &Device, uuid: &str) -> Result<(), String> {
    let bound = lock(&dev.state).vm_uuid.clone();
    if bound.is_empty() || bound.eq_ignore_ascii_case(uuid) {
        return Ok(());
    }
    let this = if uuid.is_empty() {
        "this registration has no UUID".to_owned()
    } else {
        format!("this VM has UUID {uuid}")
    };
    Err(format!(
        "{key} belongs to the VM with UUID {bound}, and {this}; give this VM another -name, \
         or move {key}'s journal directory away if that VM is gone for good"
    ))
}

/// Binds `dev` to the VM with `uuid` (when the registration has one).
fn bind_vm(dev: &Device, uuid: &str) {
    if uuid.is_empty() {
        return;
    }
    let changed = {
        let mut s = lock(&dev.state);
        let changed = !s.vm_uuid.eq_ignore_ascii_case(uuid);
        s.vm_uuid = uuid.to_owned();
        changed
    };
    if changed {
        if let Some(j) = &dev.journal {
            lock(j).set_uuid(uuid);
        }
    }
}

/// Where a registered session's ring position 0 lies in the device's journal, and the
/// marker to write first: the same session continues at its base; a new session after
/// earlier bytes starts after a "restarted" line; a first session starts at the end.
fn journal_position(dev: &Device, key: &DeviceKey, session: u64) -> (u64, Vec<u8>) {
    let Some(j) = &dev.journal else {
        return (0, Vec::new());
    };
    let mut j = lock(j);
    let meta = j.meta().clone();
    if meta.session == Some(session) {
        (meta.base, Vec::new())
    } else if j.end() > 0 || meta.session.is_some() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let marker = format!(
            "\r\n--- ringcast: {key} restarted at {} ---\r\n",
            utc_timestamp(now)
        );
        (0, marker.into_bytes())
    } else {
        let base = j.end();
        j.set_session(session, base);
        (base, Vec::new())
    }
}
