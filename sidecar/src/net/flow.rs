//! Where a console attachment's time goes: waiting for credit (the client's `Consumed`
//! reports), waiting for quinn to take the bytes (its send buffer or the stream's flow
//! control), the credit's return time, and the path as quinn sees it. Logged once when the
//! attachment ends (`ringcast::flow`, at info), so a slow console can be explained from
//! measurements.

use std::time::{Duration, Instant};

use transport_quic::rules::credit::DeliveryClock;

/// A console attachment's flow, measured.
pub(super) struct ConsoleFlow {
    conn: quinn::Connection,
    device: String,
    started: Instant,
    /// Set while the console may not send (no credit left): since when.
    stalled_since: Option<Instant>,
    stalls: u64,
    credit_wait: Duration,
    write_wait: Duration,
    start: u64,
    sent_end: u64,
    delivered: u64,
    /// Return-time samples in microseconds (the first [`MAX_SAMPLES`]).
    returns: Vec<u32>,
    /// Bounds used, largest.
    max_bound: u64,
    /// Largest and last congestion window and RTT seen.
    max_window: u64,
    rtt: Duration,
    pub(super) clock: DeliveryClock,
}

const MAX_SAMPLES: usize = 1 << 16;

impl ConsoleFlow {
    pub(super) fn new(conn: quinn::Connection, device: String, offset: u64) -> Self {
        ConsoleFlow {
            conn,
            device,
            started: Instant::now(),
            stalled_since: None,
            stalls: 0,
            credit_wait: Duration::ZERO,
            write_wait: Duration::ZERO,
            start: offset,
            sent_end: offset,
            delivered: 0,
            returns: Vec::new(),
            max_bound: 0,
            max_window: 0,
            rtt: Duration::ZERO,
            clock: DeliveryClock::new(offset),
        }
    }

    /// The bound and allowance of this turn of the loop (the path as read for it).
    pub(super) fn turn(&mut self, bound: u64, allowance: u64, window: u64, rtt: Duration) {
        let now = Instant::now();
        self.max_bound = self.max_bound.max(bound);
        self.max_window = self.max_window.max(window);
        self.rtt = rtt;
        match (allowance, self.stalled_since) {
            (0, None) => {
                self.stalled_since = Some(now);
                self.stalls += 1;
            }
            (1.., Some(since)) => {
                self.credit_wait += now - since;
                self.stalled_since = None;
            }
            _ => {}
        }
    }

    /// Offsets up to `end` were handed to quinn, which took `waited` to accept them.
    pub(super) fn sent(&mut self, end: u64, waited: Duration) {
        self.sent_end = end;
        self.write_wait += waited;
        self.clock.sent(end, Instant::now());
    }

    /// The client reported `offset` read, `delivered` bytes of data in all (not gaps).
    pub(super) fn consumed(&mut self, offset: u64, delivered: u64, rtt: Duration) {
        self.delivered = delivered;
        if let Some(t) = self.clock.consumed(offset, delivered, Instant::now(), rtt) {
            if self.returns.len() < MAX_SAMPLES {
                self.returns
                    .push(t.as_micros().min(u128::from(u32::MAX)) as u32);
            }
        }
    }
}

impl Drop for ConsoleFlow {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some(since) = self.stalled_since.take() {
            self.credit_wait += now - since;
        }
        let total = now - self.started;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        self.returns.sort_unstable();
        let pct = |p: f64| {
            let n = self.returns.len();
            (n > 0).then(|| f64::from(self.returns[((n - 1) as f64 * p) as usize]) / 1e3)
        };
        let stats = self.conn.stats();
        tracing::info!(
            target: "ringcast::flow",
            device = %self.device,
            secs = total.as_secs_f64(),
            delivered_mb_per_s = self.delivered as f64 / total.as_secs_f64().max(1e-9) / 1e6,
            offsets_mb = (self.sent_end - self.start) as f64 / 1e6,
            credit_wait_ms = ms(self.credit_wait),
            stalls = self.stalls,
            write_wait_ms = ms(self.write_wait),
            return_p50_ms = pct(0.5),
            return_p99_ms = pct(0.99),
            samples = self.returns.len(),
            rate_mb_per_s = self.clock.rate() as f64 / 1e6,
            max_bound = self.max_bound,
            max_window = self.max_window,
            rtt_ms = ms(self.rtt),
            lost_packets = stats.path.lost_packets,
            sent_packets = stats.path.sent_packets,
            congestion_events = stats.path.congestion_events,
            "console flow"
        );
    }
}
