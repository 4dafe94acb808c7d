//! Protocol rules that are plain functions of their inputs: version negotiation, the
//! per-client request budget (time is an argument), and the console in-flight bound.

use std::time::{Duration, Instant};

use crate::ErrorCode;

/// ALPN of ringcast over QUIC.
pub const ALPN: &[u8] = b"ringcast/1";
/// Oldest protocol version this build speaks.
pub const MIN_VERSION: u16 = 1;
/// Newest protocol version this build speaks.
pub const MAX_VERSION: u16 = 1;

/// The server's choice: the newest version both sides speak.
pub fn negotiate(client_min: u16, client_max: u16) -> Result<u16, ErrorCode> {
    let hi = client_max.min(MAX_VERSION);
    let lo = client_min.max(MIN_VERSION);
    if client_min > client_max || lo > hi {
        return Err(ErrorCode::UnsupportedVersion);
    }
    Ok(hi)
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Option<Instant>,
}

impl RequestBudget {
    /// A full bucket.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RequestBudget {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            last: None,
        }
    }

    /// Takes one token at time `now`; false when the client is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-client limits of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Attachments (bidirectional streams) open at once, control stream included.
    pub max_streams: u32,
    /// Sustained requests (control requests and attaches) per second.
    pub requests_per_second: u32,
    /// Requests allowed at once before the rate applies.
    pub request_burst: u32,
    /// Console bytes sent but not yet reported read by the client, per stream, while no
    /// audio of the same client is live.
    pub console_in_flight: u64,
    /// While audio is live on the connection the bound follows the congestion window
    /// (`rules::server::in_flight_bound`), so the console flood cannot queue more than the
    /// path holds ahead of audio; this is its floor. It is per stream because quinn's
    /// connection-wide send window is exactly what a flood fills.
    pub console_in_flight_with_audio: u64,
    /// Largest console data frame.
    pub console_chunk: usize,
    /// Audio periods queued per attachment before the oldest are dropped.
    pub audio_queue: usize,
    /// Time a client has to send its Hello.
    pub handshake_timeout: Duration,
    /// A connection that hears nothing from its peer for this long is closed (QUIC idle
    /// timeout; the smaller of the two sides' values applies). It is how the server frees
    /// the streams and subscriptions of a client that vanished without closing.
    pub idle_timeout: Duration,
    /// A side that has sent nothing for this long sends a keep-alive (a QUIC PING), so a
    /// silence of several intervals means the link is down (see [`keep_alive_for`]).
    pub keep_alive: Duration,
    /// The congestion controller of this end's sending side.
    pub congestion: Congestion,
    /// Connections the server keeps at once, in total.
    pub max_connections: u32,
    /// Connections the server keeps at once from one client identity (anonymous clients
    /// count as one identity).
    pub max_connections_per_client: u32,
    /// A frame a client has started must be complete within this time, so a peer cannot
    /// pin a half-sent frame's buffer forever.
    pub frame_deadline: Duration,
    /// Largest frame payload the server accepts from a client (input frames and attach
    /// requests are far smaller than what the server sends).
    pub max_client_frame: u32,
}

/// A QUIC congestion controller (quinn's `congestion` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (loss-based; quinn's default).
    Cubic,
    /// NewReno (loss-based).
    NewReno,
    /// BBR (model-based: random loss is not read as congestion); the default.
    Bbr,
}

impl Congestion {
    /// The default (`Default::default()`, usable in constants).
    pub const DEFAULT: Congestion = Congestion::Bbr;

    /// Every choice.
    pub const ALL: [Congestion; 3] = [Congestion::Cubic, Congestion::NewReno, Congestion::Bbr];

    /// The name used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
            Congestion::Bbr => "bbr",
        }
    }
}

impl Default for Congestion {
    fn default() -> Self {
        Congestion::DEFAULT
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Congestion::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown congestion controller {s:?} (cubic, newreno or bbr)"))
    }
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shortest idle timeout [`Limits`] accept (a shorter one is raised to it).
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The keep-alive interval for an idle timeout: at most a third of it, so two lost PINGs do
/// not end a live connection, and no longer than `keep_alive`.
pub fn keep_alive_for(idle_timeout: Duration, keep_alive: Duration) -> Duration {
    keep_alive.min(idle_timeout.max(MIN_IDLE_TIMEOUT) / 3)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 32,
            requests_per_second: 50,
            request_burst: 100,
            console_in_flight: 4 << 20,
            console_in_flight_with_audio: 64 << 10,
            console_chunk: 64 << 10,
            audio_queue: 32,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(1),
            congestion: Congestion::default(),
            max_connections: 1024,
            max_connections_per_client: 128,
            frame_deadline: Duration::from_secs(10),
            max_client_frame: crate::codec::MAX_INPUT as u32 + 4096,
        }
    }
}

/// Tracks a console stream's sent-but-unread bytes and says how much may be sent now.
///
/// The client reports `Consumed { offset }` on the attachment stream as it reads. The
/// server sends only while `sent_end - consumed < bound`, where the bound depends on
/// whether audio is live. This is a per-stream credit, unlike quinn's connection-wide
/// `send_window` (which the flood would take entirely).
#[derive(Debug, Clone)]
pub struct ConsoleCredit {
    sent_end: u64,
    consumed: u64,
}

impl ConsoleCredit {
    /// A stream whose first byte is at `offset`.
    pub fn new(offset: u64) -> Self {
        ConsoleCredit {
            sent_end: offset,
            consumed: offset,
        }
    }

    /// Records that everything before `end` was sent.
    pub fn sent(&mut self, end: u64) {
        self.sent_end = self.sent_end.max(end);
    }

    /// Records the client's report; an offset beyond what was sent is a protocol
    /// violation.
    pub fn consumed(&mut self, offset: u64) -> Result<(), ErrorCode> {
        if offset > self.sent_end {
            return Err(ErrorCode::ProtocolViolation);
        }
        self.consumed = self.consumed.max(offset);
        Ok(())
    }

    /// Bytes that may be sent now under `bound`.
    pub fn allowance(&self, bound: u64) -> u64 {
        bound.saturating_sub(self.sent_end - self.consumed)
    }

    /// Bytes sent but not reported read.
    pub fn in_flight(&self) -> u64 {
        self.sent_end - self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_common_version_is_chosen_and_disjoint_ranges_are_refused() {
        assert_eq!(negotiate(1, 1), Ok(1));
        assert_eq!(negotiate(1, 9), Ok(MAX_VERSION));
        assert_eq!(negotiate(2, 9), Err(ErrorCode::UnsupportedVersion));
        assert_eq!(negotiate(0, 0), Err(ErrorCode::UnsupportedVersion));
        assert_eq!(negotiate(3, 1), Err(ErrorCode::UnsupportedVersion));
    }

    #[test]
    fn the_request_budget_refills_with_time_given_as_an_argument() {
        let t0 = Instant::now();
        let mut b = RequestBudget::new(10, 3);
        assert!(b.allow(t0) && b.allow(t0) && b.allow(t0));
        assert!(!b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(100)));
        assert!(!b.allow(t0 + Duration::from_millis(100)));
        assert!(b.allow(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn congestion_controllers_parse_by_name_and_unknown_names_are_refused() {
        for c in Congestion::ALL {
            assert_eq!(c.name().parse::<Congestion>(), Ok(c));
            assert_eq!(c.to_string().to_uppercase().parse::<Congestion>(), Ok(c));
        }
        assert!("vegas".parse::<Congestion>().unwrap_err().contains("vegas"));
    }

    #[test]
    fn console_credit_bounds_unread_bytes_and_rejects_impossible_reports() {
        let mut c = ConsoleCredit::new(1000);
        assert_eq!(c.allowance(100), 100);
        c.sent(1100);
        assert_eq!(c.allowance(100), 0);
        c.consumed(1050).unwrap();
        assert_eq!(c.allowance(100), 50);
        assert_eq!(c.consumed(2000), Err(ErrorCode::ProtocolViolation));
        c.consumed(1010).unwrap(); // late reports never move backwards
        assert_eq!(c.in_flight(), 50);
    }
}
