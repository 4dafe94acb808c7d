//! The daemon link of an instance: connection attempts, the daemon's answers, the restart
//! grace, and replacing rings the daemon broke. All of it runs on QEMU's main loop (the
//! retry timer and the link's fd watch); the guest's write path only marks what to do.

use shm_ring::handover::{DeviceDescription, DeviceKind};

use super::{Device, Inner, Instance, POLICY_AUDIO, POLICY_CONSOLE};
use crate::abi;
use crate::audio::Voice;
use crate::audio_input::InputVoice;
use crate::console::RingPoisoned;
use crate::host::Level;
use crate::link::{self, LinkEvent, LinkState};
use crate::reconnect::{Next, RETRY_MAX_MS};

impl Instance {
    fn schedule(inner: &Inner, next: Next) {
        if let Some(t) = &inner.retry {
            t.arm_in(next.retry_in_ms);
        }
    }

    /// The retry timer: end a restart grace that ran out, replace broken rings, connect.
    pub(super) fn on_retry(&self) {
        {
            let Ok(mut inner) = self.inner.try_borrow_mut() else {
                return;
            };
            let now = self.host.now_ns();
            if inner.reconnect.grace_expired(now) {
                if let Device::Console(c) = &inner.device {
                    // The guest may be waiting for space that only a daemon could make.
                    c.kick_writer();
                    self.host.log(
                        Level::Warning,
                        &format!(
                            "{}: the daemon did not come back within {} ms; {POLICY_CONSOLE}",
                            inner.label, inner.opts.grace_ms
                        ),
                    );
                }
            }
            if inner.renew_pending {
                self.renew(&mut inner);
            }
        }
        self.try_connect();
    }

    /// One connection attempt; never blocks.
    pub(super) fn try_connect(&self) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        if !matches!(inner.link, LinkState::Idle) || inner.renew_pending {
            return;
        }
        let desc = DeviceDescription {
            kind: DeviceKind::Console,
            pid: std::process::id(),
            session: 0,
            vm_name: inner.id.vm_name.clone(),
            vm_uuid: inner.id.vm_uuid.clone(),
            device_id: inner.device_name(),
            audio: None,
            audio_in: None,
        };
        let path = inner.opts.socket.clone();
        let uid = inner.opts.daemon_uid;
        let result = match &inner.device {
            Device::Console(c) => c
                .describe(desc)
                .encode()
                .map_err(|e| e.to_string())
                .and_then(|m| link::connect_and_send(&path, uid, &m, &c.handover_fds())),
            Device::Audio {
                voice: Some(v),
                input,
                ..
            } => {
                let mut desc = v.describe(desc);
                let mut fds = v.handover_fds().to_vec();
                if let Some(i) = input {
                    desc.audio_in = Some(i.format);
                    fds.push(i.ring_fd());
                }
                desc.encode()
                    .map_err(|e| e.to_string())
                    .and_then(|m| link::connect_and_send(&path, uid, &m, &fds))
            }
            // No voice yet: nothing to register.
            Device::Audio { voice: None, .. } => return,
        };
        let now = self.host.now_ns();
        match result {
            Ok(sock) => {
                let fd = link::raw_fd(&sock);
                match self.host.watch(
                    fd,
                    abi::QBP_EVENT_IN,
                    super::callbacks::on_link_fd,
                    self.opaque(),
                ) {
                    Some(w) => {
                        inner.link = LinkState::AwaitingAck { _watch: w, sock };
                        // A daemon that never answers must not outlast the grace.
                        if let Some(ms) = inner.reconnect.grace_left_ms(now) {
                            Self::schedule(&inner, Next { retry_in_ms: ms });
                        }
                    }
                    None => {
                        self.host.log(Level::Error, "QEMU refused an fd watch");
                        let next = inner.reconnect.connect_failed(now);
                        Self::schedule(&inner, next);
                    }
                }
            }
            Err(why) => {
                if inner.last_complaint.as_deref() != Some(why.as_str()) {
                    let policy = match inner.device {
                        Device::Console(_) if inner.reconnect.lossless(false, now) => {
                            "console output waits for it (restart grace)"
                        }
                        Device::Console(_) => POLICY_CONSOLE,
                        Device::Audio { .. } => POLICY_AUDIO,
                    };
                    self.host
                        .log(Level::Info, &format!("{}: {why}; {policy}", inner.label));
                    inner.last_complaint = Some(why);
                }
                let next = inner.reconnect.connect_failed(now);
                Self::schedule(&inner, next);
            }
        }
    }

    pub(super) fn on_link_readable(&self) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        let now = self.host.now_ns();
        match link::on_readable(&inner.link) {
            LinkEvent::Nothing => {}
            LinkEvent::Attached => {
                if let LinkState::AwaitingAck { _watch, sock } =
                    std::mem::replace(&mut inner.link, LinkState::Idle)
                {
                    inner.link = LinkState::Attached { _watch, sock };
                }
                inner.reconnect.attached();
                inner.last_complaint = None;
                let note = match &inner.device {
                    Device::Console(c) if c.stats.flight_dropped > 0 => format!(
                        " ({} older console bytes were dropped while it was away)",
                        c.stats.flight_dropped
                    ),
                    Device::Audio { stats, .. } if stats.dropped_unattached > 0 => format!(
                        " ({} audio periods were dropped while it was away)",
                        stats.dropped_unattached
                    ),
                    _ => String::new(),
                };
                self.host.log(
                    Level::Info,
                    &format!("{}: streaming to the daemon{note}", inner.label),
                );
            }
            LinkEvent::Refused(why) => {
                self.host.log(
                    Level::Warning,
                    &format!(
                        "{}: the daemon refused the device: {why}; retrying in {} s",
                        inner.label,
                        RETRY_MAX_MS / 1000
                    ),
                );
                inner.link = LinkState::Idle;
                let next = inner.reconnect.refused(now);
                Self::schedule(&inner, next);
            }
            LinkEvent::Lost(why) => {
                let was_attached = Self::attached(&inner);
                inner.link = LinkState::Idle;
                let console = matches!(inner.device, Device::Console(_));
                let next = inner.reconnect.lost(now, was_attached, console);
                if was_attached {
                    let policy = if console && inner.reconnect.lossless(false, now) {
                        format!(
                            "console output waits for it for up to {} ms (restart grace), \
                             then is kept in a flight recorder",
                            inner.opts.grace_ms
                        )
                    } else if console {
                        POLICY_CONSOLE.to_string()
                    } else {
                        POLICY_AUDIO.to_string()
                    };
                    self.host.log(
                        Level::Warning,
                        &format!("{}: lost the daemon ({why}); {policy}", inner.label),
                    );
                }
                if console && !inner.reconnect.lossless(false, now) {
                    // No grace: a writer waiting for space goes on into the recorder.
                    if let Device::Console(c) = &inner.device {
                        c.kick_writer();
                    }
                }
                Self::schedule(&inner, next);
            }
        }
    }

    /// The daemon broke a ring (seen on whatever thread touched it): drop the connection,
    /// count what the ring still held as lost, and leave making new rings to the retry
    /// timer on the main loop. Until then console output waits and audio is dropped.
    pub(super) fn poisoned(&self, inner: &mut Inner, p: RingPoisoned) {
        inner.link = LinkState::Idle;
        inner.renew_pending = true;
        let lost = match &mut inner.device {
            Device::Console(c) => {
                let n = c.undelivered();
                c.stats.poison_lost += n;
                format!("; {n} console bytes it had not taken are lost")
            }
            Device::Audio { voice, stats, .. } => {
                let n = voice.as_ref().map_or(0, |v| v.undelivered());
                stats.dropped_poisoned += n;
                format!("; {n} audio records it had not taken are lost")
            }
        };
        self.host.log(
            Level::Error,
            &format!(
                "{}: the daemon corrupted the shared ring ({}); disconnecting and starting \
                 over with new rings{lost}",
                inner.label, p.0
            ),
        );
        let next = inner.reconnect.renewed();
        Self::schedule(inner, next);
    }

    /// Replaces broken rings (on the retry timer). On failure the device keeps waiting
    /// (console) or dropping (audio) and the timer tries again.
    fn renew(&self, inner: &mut Inner) {
        let name = inner.device_name();
        let result = match &mut inner.device {
            Device::Console(c) => c.renew(&name).map_err(|e| e.to_string()).map(|()| {
                // The guest may wait for space in the old ring.
                c.kick_writer();
            }),
            Device::Audio { voice, input, .. } => {
                let renewed = match voice.as_ref().map(|v| v.format) {
                    Some(format) => Voice::new(&name, format).map(|v| *voice = Some(v)),
                    None => Ok(()),
                };
                match input.as_ref().map(|i| i.format) {
                    Some(format) if renewed.is_ok() => {
                        InputVoice::new(&name, format).map(|i| *input = Some(i))
                    }
                    _ => renewed,
                }
            }
        };
        match result {
            Ok(()) => {
                inner.renew_pending = false;
                if let Err(e) = self.watch_input(inner) {
                    self.host.log(Level::Error, &e);
                }
            }
            Err(e) => {
                self.host.log(
                    Level::Error,
                    &format!(
                        "{}: cannot create new rings: {e}; trying again",
                        inner.label
                    ),
                );
                let next = inner.reconnect.connect_failed(self.host.now_ns());
                Self::schedule(inner, next);
            }
        }
    }
}
