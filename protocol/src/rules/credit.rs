//! How fast a console's credit comes back: the time from sending a byte to the client's
//! `Consumed` report covering it (the credit's return time), and the rate at which the
//! client's reports advance (the delivery rate). I/O-free: the caller gives the time.
//!
//! The client reports only what it read in order, so a lost packet holds every later byte
//! of the stream at the client until its retransmission arrives: on a lossy path the return
//! time is the round trip plus loss detection plus the retransmission's trip, not the round
//! trip alone. The console's in-flight bound (`server::in_flight_bound`) is sized from these
//! two figures, so it follows what the path and the client actually deliver.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Send marks kept at most: beyond that the newest mark is moved forward instead of a new
/// one being added (the return time of those bytes is then over-estimated, never under).
const MAX_MARKS: usize = 1024;

/// Delivery-rate samples kept: the rate is the largest of the recent ones (a windowed
/// maximum, as BBR's bandwidth filter: a stall behind a loss lowers one sample, not the
/// estimate).
const RATE_SAMPLES: usize = 8;

/// Shortest interval a delivery-rate sample covers (shorter ones are all noise: the client
/// reports every 16 KiB).
pub const MIN_RATE_INTERVAL: Duration = Duration::from_millis(10);

/// The console's sends and the client's reports, for the return time and the delivery rate.
#[derive(Debug, Clone)]
pub struct DeliveryClock {
    /// (end offset, when it was sent), oldest first, ends increasing.
    marks: VecDeque<(u64, Instant)>,
    /// Highest offset reported consumed.
    consumed: u64,
    /// Start of the current rate interval: its time and the bytes delivered then.
    interval: Option<(Instant, u64)>,
    /// Recent delivery-rate samples, bytes per second, newest last.
    rates: VecDeque<u64>,
    /// The latest return-time sample.
    return_time: Option<Duration>,
}

impl DeliveryClock {
    /// A stream whose first byte is at `offset`.
    pub fn new(offset: u64) -> Self {
        DeliveryClock {
            marks: VecDeque::new(),
            consumed: offset,
            interval: None,
            rates: VecDeque::new(),
            return_time: None,
        }
    }

    /// Everything before `end` was handed to the transport at `now`.
    pub fn sent(&mut self, end: u64, now: Instant) {
        let full = self.marks.len() >= MAX_MARKS;
        match self.marks.back_mut() {
            Some((last, _)) if end <= *last => {}
            Some((last, _)) if full => *last = end,
            _ => self.marks.push_back((end, now)),
        }
    }

    /// The client reported everything before `offset` read at `now`, `delivered` bytes
    /// of data in all (offsets less gaps: [`GapLedger::skipped_before`]). Returns the
    /// return time of the newest send this report covers completely, if it covers one. A
    /// rate sample is taken when at least `interval` (and [`MIN_RATE_INTERVAL`]) has passed
    /// since the last one.
    pub fn consumed(
        &mut self,
        offset: u64,
        delivered: u64,
        now: Instant,
        interval: Duration,
    ) -> Option<Duration> {
        if offset <= self.consumed {
            return None;
        }
        self.consumed = offset;
        let (start, from) = *self.interval.get_or_insert((now, delivered));
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= interval.max(MIN_RATE_INTERVAL) {
            let rate = delivered.saturating_sub(from) as f64 / elapsed.as_secs_f64();
            if self.rates.len() == RATE_SAMPLES {
                self.rates.pop_front();
            }
            self.rates.push_back(rate as u64);
            self.interval = Some((now, delivered));
        }
        let mut covered = None;
        while let Some(&(end, at)) = self.marks.front() {
            if end > offset {
                break;
            }
            covered = Some(at);
            self.marks.pop_front();
        }
        let sample = covered.map(|at| now.saturating_duration_since(at));
        if sample.is_some() {
            self.return_time = sample;
        }
        sample
    }

    /// The delivery rate in bytes per second: the largest recent sample (0 before the first).
    pub fn rate(&self) -> u64 {
        self.rates.iter().copied().max().unwrap_or(0)
    }

    /// The latest return-time sample.
    pub fn return_time(&self) -> Option<Duration> {
        self.return_time
    }
}

/// Gaps outstanding at most: beyond that a gap is charged its full length, as data is.
const MAX_GAPS: usize = 1024;

/// What a gap (bytes the journal no longer has: a frame of a few bytes on the wire, a
/// range of offsets in the stream) costs of the credit while the client has not reported
/// past it: the credit bounds what the server holds for the client, and a gap holds only
/// its frame. Charging its length instead stalls a console that fell behind retention for a
/// whole return time at every gap, however little is on the way.
pub const GAP_COST: u64 = 64;

/// The gaps sent on a console stream and not yet reported past, so the credit and the
/// delivery rate count the bytes that are actually carried.
#[derive(Debug, Clone, Default)]
pub struct GapLedger {
    /// (start, end) of the gaps beyond the last report, in offset order, each charged
    /// [`GAP_COST`] instead of its length.
    outstanding: VecDeque<(u64, u64)>,
    /// Gap bytes the reports went past, in all.
    passed: u64,
}

impl GapLedger {
    /// A gap of `len` bytes at `offset` was sent; returns whether it is charged
    /// [`GAP_COST`] (else its length, when too many are outstanding).
    pub fn sent(&mut self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        let full = self.outstanding.len() >= MAX_GAPS;
        match self.outstanding.back_mut() {
            Some((_, last)) if *last == offset => *last = end,
            _ if full => return false,
            _ => self.outstanding.push_back((offset, end)),
        }
        true
    }

    /// The client reported everything before `consumed` read.
    pub fn consumed(&mut self, consumed: u64) {
        while let Some(&(start, end)) = self.outstanding.front() {
            if end > consumed {
                break;
            }
            self.passed += end - start;
            self.outstanding.pop_front();
        }
    }

    /// Of the offsets between `consumed` and the end of what was sent, those not carried:
    /// the gaps' lengths less their cost.
    pub fn uncharged(&self, consumed: u64) -> u64 {
        self.outstanding
            .iter()
            .map(|&(start, end)| {
                end.saturating_sub(start.max(consumed))
                    .saturating_sub(GAP_COST)
            })
            .sum()
    }

    /// Offsets before `consumed` that were gaps (all the gaps reported past, and the part of
    /// one reported into).
    pub fn skipped_before(&self, consumed: u64) -> u64 {
        let partial = self
            .outstanding
            .front()
            .map_or(0, |&(start, end)| consumed.clamp(start, end) - start);
        self.passed + partial
    }
}
