//! Who may hold a registration connection, and for how long before registering: the
//! peer's uid is checked at accept (SO_PEERCRED), before anything it sent is read; at most
//! [`MAX_PENDING`] connections may wait to register, each at most [`REGISTER_WITHIN`]; at
//! most [`MAX_CONNECTIONS`] connections in all. A refused peer gets the reason as an
//! acknowledgement (QEMU logs it) and its connection is closed once it hangs up or after
//! [`REFUSED_LINGER`], without ringcastd reading what it sent.

use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

use super::*;

/// Connections that have not registered a device yet, at most.
pub(crate) const MAX_PENDING: usize = 64;
/// Registration connections in all (one per attached device, plus the pending ones).
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// A connection must send its device description within this time.
pub(crate) const REGISTER_WITHIN: Duration = Duration::from_secs(10);
/// A refused connection is kept (unread) this long at most, so that the peer can send what
/// it was sending and read the refusal instead of a broken pipe.
pub(crate) const REFUSED_LINGER: Duration = Duration::from_secs(1);

/// The one-shot timer that ends pending and refused connections when their time is up.
pub(crate) struct Deadlines {
    pub(super) timer: OwnedFd,
    armed: Option<Instant>,
}

impl Deadlines {
    pub(super) fn new() -> std::io::Result<Self> {
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        Ok(Deadlines { timer, armed: None })
    }

    /// Arms the timer for `at` (or disarms it), unless it is already armed for that time.
    fn arm(&mut self, at: Option<Instant>) {
        if at == self.armed {
            return;
        }
        let value = match at {
            // Never zero: a zero value disarms.
            Some(at) => {
                let d = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                Timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                }
            }
            None => Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        match timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec) {
            Ok(_) => self.armed = at,
            Err(e) => tracing::error!(error = %e, "cannot arm the registration timer"),
        }
    }

    /// Reads the expiration count so that the timer's poll can fire again.
    pub(super) fn drain(&mut self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.timer, &mut buf);
        self.armed = None;
    }
}

impl Ingest {
    /// Whether a connection just accepted from `uid` may stay, and if not, why.
    pub(super) fn admission(&self, uid: u32) -> Result<(), String> {
        self.admission_uid(uid)?;
        if self.registrations.len() >= MAX_CONNECTIONS {
            return Err(format!(
                "ringcastd already holds {MAX_CONNECTIONS} registration connections; retry later"
            ));
        }
        let pending = self
            .registrations
            .values()
            .filter(|r| r.attachment.is_none() && !r.refused)
            .count();
        if pending >= MAX_PENDING {
            return Err(format!(
                "{MAX_PENDING} registration connections are already waiting to register a \
                 device; retry later"
            ));
        }
        Ok(())
    }

    /// Only ringcastd's own user and root may register devices.
    pub(super) fn admission_uid(&self, uid: u32) -> Result<(), String> {
        if uid != self.uid && uid != 0 {
            return Err(format!(
                "ringcastd runs as uid {} and accepts devices only from that user or root, not \
                 from uid {uid}; run QEMU and ringcastd as the same user",
                self.uid
            ));
        }
        Ok(())
    }

    /// Sends the refusal on a connection that will not be read from.
    pub(super) fn refuse_at_accept(fd: &OwnedFd, why: &str) {
        tracing::warn!(reason = %why, "registration connection refused");
        let ack = Ack {
            accepted: false,
            message: why.to_owned(),
        };
        let _ = handover::send_with_fds(fd, &ack.encode(), &[]);
    }

    /// Closes connections whose time is up and arms the timer for the next deadline.
    pub(super) fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<(u64, bool)> = self
            .registrations
            .iter()
            .filter(|(_, r)| r.deadline.is_some_and(|d| d <= now))
            .map(|(id, r)| (*id, r.refused))
            .collect();
        for (id, refused) in expired {
            if refused {
                self.close_registration(id);
            } else {
                self.refuse(
                    id,
                    format!(
                        "no device description within {} s of connecting; closing",
                        REGISTER_WITHIN.as_secs()
                    ),
                );
            }
        }
        let next = self.registrations.values().filter_map(|r| r.deadline).min();
        self.deadlines.arm(next);
    }
}
