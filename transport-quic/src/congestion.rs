//! The default congestion controller: BBR that does not read random loss as congestion.
//!
//! BBR sets its rate from a model of the path (the bottleneck bandwidth it measures and the
//! minimum RTT), not from losses. quinn's BBR still enters a loss-recovery mode on every
//! lost packet (packet conservation: the window shrinks to what is in flight), and on a
//! path that drops 1% of its packets at random there is a loss in nearly every round trip,
//! so it stays in that mode and moves about half of what Linux TCP BBR does on the same
//! link. [`LossFilter`] decides which losses the controller hears: persistent congestion
//! (every packet of a period lost), and rounds losing more than [`CONGESTION_LOSS`] of the
//! bytes sent, are congestion; a few scattered losses are the path's noise, repaired by
//! retransmission without slowing down.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{BbrConfig, Controller, ControllerFactory, ControllerMetrics};

/// The share of a round trip's bytes that must be lost before the loss is read as
/// congestion: far above the random loss of real paths (a few percent), and what a queue
/// overflowing under a sender twice too fast produces.
pub const CONGESTION_LOSS: f64 = 0.15;

/// Bytes below which a round's loss share is not judged (a handful of packets, where one
/// loss is already a large share).
const MIN_JUDGED: u64 = 16 * 1200;

/// Which losses are congestion, from the bytes sent and lost per round trip. A round trip
/// ends when a packet sent after its start is acknowledged. I/O-free: driven by packet
/// numbers and byte counts only.
#[derive(Debug, Clone, Default)]
pub struct LossFilter {
    /// Highest packet number sent.
    last_sent: u64,
    /// The round ends when a packet numbered above this is acknowledged.
    round_end: u64,
    /// Bytes sent and lost in this round and in the previous one.
    sent: [u64; 2],
    lost: [u64; 2],
}

impl LossFilter {
    /// Packets up to `packet_number` were sent, `bytes` in all.
    pub fn on_sent(&mut self, bytes: u64, packet_number: u64) {
        self.last_sent = self.last_sent.max(packet_number);
        self.sent[0] += bytes;
    }

    /// Acknowledgements up to `largest_acked` arrived: a new round starts when it is past
    /// the current round's end.
    pub fn on_acked(&mut self, largest_acked: Option<u64>) {
        if largest_acked.is_some_and(|a| a > self.round_end) {
            self.round_end = self.last_sent;
            self.sent = [0, self.sent[0]];
            self.lost = [0, self.lost[0]];
        }
    }

    /// `bytes` were declared lost: whether that is congestion.
    pub fn is_congestion(&mut self, bytes: u64, persistent: bool) -> bool {
        self.lost[0] += bytes;
        if persistent {
            return true;
        }
        let sent = self.sent[0] + self.sent[1];
        let lost = self.lost[0] + self.lost[1];
        sent >= MIN_JUDGED && lost as f64 > CONGESTION_LOSS * sent as f64
    }
}

/// A controller that hears only the losses [`LossFilter`] calls congestion; everything else
/// goes to the inner controller as it is.
pub struct Filtered {
    inner: Box<dyn Controller>,
    filter: LossFilter,
}

impl std::fmt::Debug for Filtered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filtered")
            .field("window", &self.inner.window())
            .field("filter", &self.filter)
            .finish()
    }
}

impl Filtered {
    /// `inner`, hearing only congestion.
    pub fn new(inner: Box<dyn Controller>) -> Self {
        Filtered {
            inner,
            filter: LossFilter::default(),
        }
    }
}

impl Controller for Filtered {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.filter.on_sent(bytes, last_packet_number);
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.filter.on_acked(largest_packet_num_acked);
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        if self
            .filter
            .is_congestion(lost_bytes, is_persistent_congestion)
        {
            self.inner
                .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Filtered {
            inner: self.inner.clone_box(),
            filter: self.filter.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// quinn's BBR behind a [`LossFilter`]: ringcast's default controller.
#[derive(Debug, Default)]
pub struct BbrFactory {
    bbr: Arc<BbrConfig>,
}

impl ControllerFactory for BbrFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Filtered::new(self.bbr.clone().build(now, current_mtu)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Sends `rounds` round trips of `per_round` 1200-byte packets, losing every
    /// `lose_every`-th packet; returns how many losses were read as congestion.
    fn congestion_events(rounds: u64, per_round: u64, lose_every: u64) -> u64 {
        let mut f = LossFilter::default();
        let (mut pn, mut events) = (0u64, 0u64);
        for _ in 0..rounds {
            let first = pn;
            for _ in 0..per_round {
                f.on_sent(1200, pn);
                pn += 1;
            }
            for p in first..pn {
                if p % lose_every == lose_every - 1 {
                    events += u64::from(f.is_congestion(1200, false));
                } else {
                    f.on_acked(Some(p));
                }
            }
        }
        events
    }

    #[test]
    fn random_loss_of_a_few_percent_is_not_congestion() {
        assert_eq!(congestion_events(50, 200, 100), 0, "1% loss");
        assert_eq!(congestion_events(50, 200, 33), 0, "3% loss");
        assert_eq!(congestion_events(50, 40, 20), 0, "5% loss, small rounds");
    }

    #[test]
    fn heavy_loss_and_persistent_congestion_are_congestion() {
        assert!(
            congestion_events(10, 200, 3) > 0,
            "a third of the packets lost"
        );
        assert!(congestion_events(10, 200, 2) > 0, "half lost");
        let mut f = LossFilter::default();
        f.on_sent(1200, 0);
        assert!(f.is_congestion(1200, true));
    }

    #[test]
    fn a_burst_of_losses_in_one_round_is_congestion_and_then_forgotten() {
        let mut f = LossFilter::default();
        for pn in 0..100 {
            f.on_sent(1200, pn);
        }
        // 30 of 100 lost in one round: congestion.
        let verdicts: Vec<bool> = (0..30).map(|_| f.is_congestion(1200, false)).collect();
        assert!(verdicts.iter().any(|&v| v));
        // Two clean rounds later one loss is noise again.
        for round in 1..=2u64 {
            for pn in round * 100..(round + 1) * 100 {
                f.on_sent(1200, pn);
            }
            f.on_acked(Some((round + 1) * 100 - 1));
        }
        assert!(!f.is_congestion(1200, false));
    }

    /// Records which calls reach the inner controller.
    #[derive(Clone, Default)]
    struct Recorder {
        heard: Arc<Mutex<Vec<(bool, u64)>>>,
        sent: Arc<Mutex<u64>>,
    }

    impl Controller for Recorder {
        fn on_sent(&mut self, _: Instant, bytes: u64, _: u64) {
            *self.sent.lock().expect("test lock") += bytes;
        }
        fn on_congestion_event(&mut self, _: Instant, _: Instant, persistent: bool, lost: u64) {
            self.heard
                .lock()
                .expect("test lock")
                .push((persistent, lost));
        }
        fn on_mtu_update(&mut self, _: u16) {}
        fn window(&self) -> u64 {
            42
        }
        fn clone_box(&self) -> Box<dyn Controller> {
            Box::new(self.clone())
        }
        fn initial_window(&self) -> u64 {
            42
        }
        fn into_any(self: Box<Self>) -> Box<dyn Any> {
            self
        }
    }

    #[test]
    fn the_inner_controller_hears_congestion_only() {
        let rec = Recorder::default();
        let mut c = Filtered::new(Box::new(rec.clone()));
        let t0 = Instant::now();
        let ms = |n| t0 + std::time::Duration::from_millis(n);
        // One round of 200 packets with 2 losses: noise.
        c.on_sent(ms(0), 200 * 1200, 199);
        c.on_congestion_event(ms(20), ms(0), false, 1200);
        c.on_congestion_event(ms(21), ms(1), false, 1200);
        c.on_end_acks(ms(22), 0, false, Some(199));
        assert_eq!(*rec.sent.lock().expect("test lock"), 200 * 1200);
        assert!(rec.heard.lock().expect("test lock").is_empty());
        // Persistent congestion always gets through.
        c.on_congestion_event(ms(30), ms(25), true, 2400);
        assert_eq!(*rec.heard.lock().expect("test lock"), vec![(true, 2400)]);
        assert_eq!((c.window(), c.initial_window()), (42, 42));
    }

    #[test]
    fn the_factory_builds_a_working_bbr() {
        let c = Arc::new(BbrFactory::default()).build(Instant::now(), 1200);
        assert!(c.window() >= 4 * 1200);
        assert!(c.into_any().downcast::<Filtered>().is_ok());
    }
}
