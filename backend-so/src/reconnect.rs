//! When to try the daemon again, and how long a console keeps the guest waiting after the
//! daemon went away: a pure state machine that takes the time as an argument (nanoseconds
//! of the host's monotonic clock), so it is tested with synthetic time.
//!
//! * Backoff: a failed connection attempt doubles the pause before the next one, from
//!   `RETRY_MIN_MS` up to `RETRY_MAX_MS`; an attachment or a lost connection resets it (a
//!   restarting daemon is usually back within moments). A refusal waits the longest pause.
//! * Restart grace: once a console has been attached, losing the daemon keeps lossless
//!   backpressure (the guest's UART or virtconsole waits, as when the ring is full) for
//!   `grace`, long enough for `systemctl restart`; after that the console falls back to the
//!   flight recorder until a daemon attaches again. A device that was never attached, or
//!   whose rings the daemon broke, gets no grace.

/// Smallest and largest pause between connection attempts.
pub(crate) const RETRY_MIN_MS: u64 = 100;
pub(crate) const RETRY_MAX_MS: u64 = 2000;

const MS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconnect {
    grace_ns: u64,
    backoff_ms: u64,
    /// While the daemon is away after an attachment: when the grace ends.
    grace_until: Option<u64>,
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Next {
    /// Arm the retry timer this far from now.
    pub retry_in_ms: u64,
}

impl Reconnect {
    pub(crate) fn new(grace_ms: u64) -> Self {
        Reconnect {
            grace_ns: grace_ms.saturating_mul(MS),
            backoff_ms: RETRY_MIN_MS,
            grace_until: None,
        }
    }

    /// Whether a console must keep the guest waiting (lossless) rather than overwrite:
    /// attached, or within the grace after losing the daemon.
    pub(crate) fn lossless(&self, attached: bool, now: u64) -> bool {
        attached || self.grace_until.is_some_and(|end| now < end)
    }

    /// The grace has run out (at `now`): the caller switches to the flight recorder and
    /// wakes a waiting writer. Reported once per grace.
    pub(crate) fn grace_expired(&mut self, now: u64) -> bool {
        match self.grace_until {
            Some(end) if now >= end => {
                self.grace_until = None;
                true
            }
            _ => false,
        }
    }

    /// Milliseconds until the grace ends (rounded up), if one runs.
    pub(crate) fn grace_left_ms(&self, now: u64) -> Option<u64> {
        self.grace_until
            .map(|end| end.saturating_sub(now).div_ceil(MS))
    }

    /// The pause `ms`, shortened so the timer also fires when the grace ends.
    fn until(&self, ms: u64, now: u64) -> Next {
        let retry_in_ms = match self.grace_left_ms(now) {
            Some(g) => ms.min(g),
            None => ms,
        };
        Next { retry_in_ms }
    }

    /// A connection attempt failed (no daemon, socket refused, wrong owner...).
    pub(crate) fn connect_failed(&mut self, now: u64) -> Next {
        let d = self.backoff_ms;
        self.backoff_ms = (d * 2).min(RETRY_MAX_MS);
        self.until(d, now)
    }

    /// The daemon accepted the device.
    pub(crate) fn attached(&mut self) {
        self.backoff_ms = RETRY_MIN_MS;
        self.grace_until = None;
    }

    /// The daemon refused the device: offer it again after the longest pause.
    pub(crate) fn refused(&mut self, now: u64) -> Next {
        self.until(RETRY_MAX_MS, now)
    }

    /// The connection went away. `was_attached`: the daemon had been streaming, so a
    /// console gets its grace (`with_grace`; audio keeps real time and never waits).
    pub(crate) fn lost(&mut self, now: u64, was_attached: bool, with_grace: bool) -> Next {
        self.backoff_ms = RETRY_MIN_MS;
        if was_attached && with_grace && self.grace_ns > 0 {
            self.grace_until = Some(now.saturating_add(self.grace_ns));
        }
        self.until(RETRY_MIN_MS, now)
    }

    /// The rings were replaced (the daemon broke one): no grace for a daemon that did that.
    pub(crate) fn renewed(&mut self) -> Next {
        self.grace_until = None;
        self.backoff_ms = RETRY_MIN_MS;
        Next { retry_in_ms: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn failed_attempts_back_off_doubling_up_to_the_maximum_and_attaching_resets() {
        let mut r = Reconnect::new(5000);
        let delays: Vec<u64> = (0..7).map(|_| r.connect_failed(0).retry_in_ms).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        r.attached();
        assert_eq!(r.connect_failed(0).retry_in_ms, 100);
        assert_eq!(r.refused(0).retry_in_ms, RETRY_MAX_MS);
    }

    #[test]
    fn losing_an_attached_daemon_keeps_the_console_lossless_for_the_grace_only() {
        let mut r = Reconnect::new(5000);
        assert!(r.lossless(true, 0));
        assert!(!r.lossless(false, 0), "never attached: no grace");
        let t0 = 100 * S;
        assert_eq!(r.lost(t0, true, true).retry_in_ms, RETRY_MIN_MS);
        assert!(r.lossless(false, t0));
        assert!(r.lossless(false, t0 + 5 * S - 1));
        assert!(!r.grace_expired(t0 + 5 * S - 1));
        // Retries back off, but the timer always fires by the end of the grace.
        for _ in 0..5 {
            r.connect_failed(t0);
        }
        assert_eq!(r.connect_failed(t0 + 4 * S).retry_in_ms, 1000);
        assert_eq!(r.connect_failed(t0 + 4 * S + S / 2).retry_in_ms, 500);
        assert!(!r.lossless(false, t0 + 5 * S));
        assert!(r.grace_expired(t0 + 5 * S));
        assert!(!r.grace_expired(t0 + 6 * S), "reported once");
        assert!(!r.lossless(false, t0 + 6 * S));
        assert_eq!(r.connect_failed(t0 + 6 * S).retry_in_ms, RETRY_MAX_MS);
    }

    #[test]
    fn a_daemon_back_within_the_grace_ends_it_and_a_later_loss_starts_a_new_one() {
        let mut r = Reconnect::new(3000);
        r.lost(0, true, true);
        r.attached();
        assert!(!r.lossless(false, S), "attached again: the grace is over");
        assert!(!r.grace_expired(10 * S));
        r.lost(20 * S, true, true);
        assert!(r.lossless(false, 22 * S));
        assert!(!r.lossless(false, 23 * S));
    }

    #[test]
    fn no_grace_for_audio_for_a_never_attached_device_for_a_zero_grace_or_after_renewal() {
        let mut r = Reconnect::new(3000);
        r.lost(0, true, false);
        assert!(!r.lossless(false, 0), "audio keeps real time");
        r.lost(0, false, true);
        assert!(!r.lossless(false, 0), "it was never attached");
        let mut z = Reconnect::new(0);
        z.lost(0, true, true);
        assert!(!z.lossless(false, 0), "grace=0 turns it off");
        r.lost(0, true, true);
        assert!(r.lossless(false, 0));
        assert_eq!(r.renewed().retry_in_ms, 0);
        assert!(
            !r.lossless(false, 0),
            "a daemon that broke the rings gets no grace"
        );
    }
}
