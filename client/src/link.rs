//! Whether the link is alive: silence longer than [`LINK_QUIET`] calls it down.

use std::time::{Duration, Instant};

use crate::*;

/// Silence after which [`LinkMonitor`] calls a link down: a live link carries a packet at
/// least every keep-alive interval (1 s) plus a round trip.
pub const LINK_QUIET: Duration = Duration::from_secs(3);

/// A change of the link to the server, as [`LinkMonitor::check`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// Nothing has arrived from the server for `silent`. The connection stays open and
    /// resumes by itself if packets come back before the idle timeout (30 s).
    Down {
        /// How long nothing has arrived.
        silent: Duration,
    },
    /// Packets arrive again after a silence of `after`.
    Up {
        /// How long nothing arrived.
        after: Duration,
    },
}

/// The link's state as a function of its inputs (how many datagrams arrived, and when):
/// no clock and no connection inside, so timeouts are tested with time as an argument.
#[derive(Debug, Clone)]
pub struct LinkState {
    quiet: Duration,
    received: u64,
    heard: Instant,
    down: bool,
}

impl LinkState {
    /// A link that has received `received` datagrams so far, last heard at `now`.
    pub fn new(quiet: Duration, received: u64, now: Instant) -> Self {
        LinkState {
            quiet,
            received,
            heard: now,
            down: false,
        }
    }

    /// The link's datagram count at `now`: whether it went down or came back since the
    /// last observation.
    pub fn observe(&mut self, received: u64, now: Instant) -> Option<LinkEvent> {
        if received != self.received {
            self.received = received;
            let after = now.saturating_duration_since(self.heard);
            self.heard = now;
            if std::mem::take(&mut self.down) {
                return Some(LinkEvent::Up { after });
            }
            return None;
        }
        let silent = now.saturating_duration_since(self.heard);
        if !self.down && silent >= self.quiet {
            self.down = true;
            return Some(LinkEvent::Down { silent });
        }
        None
    }
}

/// Notices when nothing arrives from the server (a cut link, a server that stopped
/// answering) and when packets come back. Call [`LinkMonitor::check`] periodically (say
/// every 250 ms).
#[derive(Debug)]
pub struct LinkMonitor {
    conn: quinn::Connection,
    state: LinkState,
}

impl LinkMonitor {
    /// A monitor of `session`'s connection that reports silences longer than `quiet`.
    pub fn new(session: &Session, quiet: Duration) -> Self {
        let received = session.conn.stats().udp_rx.datagrams;
        LinkMonitor {
            conn: session.conn.clone(),
            state: LinkState::new(quiet, received, Instant::now()),
        }
    }

    /// Whether the link went down or came back since the last call.
    pub fn check(&mut self) -> Option<LinkEvent> {
        self.state
            .observe(self.conn.stats().udp_rx.datagrams, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_longer_than_quiet_is_one_down_and_packets_after_it_one_up() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut l = LinkState::new(Duration::from_secs(3), 10, t0);
        assert_eq!(l.observe(10, s(2_999)), None);
        assert_eq!(
            l.observe(10, s(3_000)),
            Some(LinkEvent::Down {
                silent: Duration::from_secs(3)
            })
        );
        // Down is reported once, however long the silence lasts.
        assert_eq!(l.observe(10, s(9_000)), None);
        assert_eq!(
            l.observe(11, s(10_000)),
            Some(LinkEvent::Up {
                after: Duration::from_secs(10)
            })
        );
        // Traffic on a live link is no event; the silence is measured from the last packet.
        assert_eq!(l.observe(12, s(11_000)), None);
        assert_eq!(l.observe(12, s(13_999)), None);
        assert!(matches!(
            l.observe(12, s(14_000)),
            Some(LinkEvent::Down { .. })
        ));
    }
}
