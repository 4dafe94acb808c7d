//! The adaptive jitter buffer: numbered units of audio (Opus frames, PCM periods) in,
//! what to play at each tick out. No I/O and no clock: every call takes the time as
//! nanoseconds of the caller's clock, so tests drive it with a virtual one.
//!
//! # What it plays
//!
//! At each tick the unit due next (`seq` order) is played if it is here. A missing unit
//! with a later one here is lost or late: rebuilt from the next unit's FEC if that one is
//! here ([`Slot::Recover`]), else concealed ([`Slot::Conceal`]); a unit arriving after its
//! tick is counted late and dropped. Units the server said it left out (silence under DTX,
//! a slow subscriber's drops: `skipped_before`) play as [`Slot::Silence`].
//!
//! # How the delay adapts (the rule)
//!
//! The delay of a unit is its time in the buffer (tick − arrival). Over the last
//! `window` units the buffer keeps the *shortest* delay at least `guard` (no unit comes
//! close to being late) and the *longest* at least `floor` (`--jitter-ms`). It changes
//! the delay only where nobody can hear it:
//!
//! - it grows by one unit when the buffer is empty at a tick while sound is playing
//!   ([`Slot::Stretch`]: the concealment that an underrun needs anyway, without consuming a
//!   unit, so the late unit plays next instead of being lost), and by inserting one unit of
//!   silence at a silent unit when the shortest delay fell below `guard`;
//! - it shrinks by one unit only by dropping a silent unit, when both bounds would still
//!   hold one unit shorter: a calm path brings the delay down during the next pause. Once
//!   the last third of the window (one second) alone would allow a shrink, the path has
//!   calmed down and the older, rougher history is forgotten, so the delay does not wait
//!   for it to leave the window.
//!
//! A path that gets worse thus costs one concealed unit per unit of extra delay (a glitch
//! the lateness causes anyway), and a path that gets better gives its delay back in
//! silence, without a glitch. With `fixed` the delay stays where it started (`floor`):
//! a late unit is concealed and skipped.

use std::collections::{BTreeMap, VecDeque};

/// How the buffer behaves. Times in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Duration of one unit (an Opus frame, a PCM period).
    pub unit_ns: u64,
    /// The least delay of the fastest units; with `fixed`, the delay.
    pub floor_ns: u64,
    /// The most delay; beyond it the buffer drops the oldest units.
    pub max_ns: u64,
    /// Keep the delay at `floor_ns` (no adaptation).
    pub fixed: bool,
    /// Units carry FEC data for the unit before them (Opus with in-band FEC).
    pub fec: bool,
    /// Units of history the delay bounds look at.
    pub window: usize,
}

impl JitterConfig {
    /// Adaptive, with `floor_ns`, one-second maximum, three seconds of history.
    pub fn adaptive(unit_ns: u64, floor_ns: u64, fec: bool) -> Self {
        let unit_ns = unit_ns.max(1);
        JitterConfig {
            unit_ns,
            floor_ns,
            max_ns: 1_000_000_000u64.max(floor_ns + 4 * unit_ns),
            fixed: false,
            fec,
            window: (3_000_000_000 / unit_ns).clamp(16, 3000) as usize,
        }
    }

    /// Units of calm (the last third of the window: one second by default) after which
    /// the history before them no longer bounds the delay.
    fn calm(&self) -> usize {
        (self.window / 3).max(8)
    }

    fn guard(&self) -> i64 {
        (self.unit_ns / 4).max(2_000_000) as i64
    }
}

/// What arrived with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Held until its tick.
    Queued,
    /// Its tick has passed: dropped, counted late.
    Late,
    /// Already here: dropped.
    Duplicate,
}

/// What to play at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot<P> {
    /// Nothing yet: the first unit is still being buffered (play silence, count nothing).
    Wait,
    /// Play this unit.
    Play {
        /// Its number.
        seq: u64,
        /// The unit.
        packet: P,
    },
    /// Unit `seq` is missing: rebuild it from the FEC data in `from` (unit `seq + 1`).
    Recover {
        /// The missing unit.
        seq: u64,
        /// The next unit, which carries `seq`'s FEC data.
        from: P,
    },
    /// Unit `seq` is missing: conceal it (the decoder's loss concealment, or silence).
    Conceal {
        /// The missing unit.
        seq: u64,
    },
    /// The buffer ran empty while sound played: conceal one unit without consuming one,
    /// so the delay grows by a unit.
    Stretch,
    /// One unit of silence: unit `seq` was left out by the server, or (`None`) a unit
    /// inserted in a silence to grow the delay.
    Silence {
        /// The unit left out, if it is one.
        seq: Option<u64>,
    },
}

/// What the buffer counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Units played as received.
    pub played: u64,
    /// Missing units rebuilt from the next unit's FEC.
    pub recovered: u64,
    /// Missing units concealed (lost, or late).
    pub concealed: u64,
    /// Units that arrived after their tick.
    pub late: u64,
    /// Ticks at which the buffer was empty while sound played.
    pub underruns: u64,
    /// Units the server left out (silence, a slow subscriber's drops), played as silence.
    pub silent: u64,
    /// Silent units inserted to grow the delay.
    pub inserted: u64,
    /// Silent units dropped to shrink the delay.
    pub shrunk: u64,
    /// Units dropped because they were beyond the maximum delay.
    pub overflow: u64,
    /// Time in the buffer of every unit played, nanoseconds.
    pub delays_ns: Vec<u64>,
}

#[derive(Debug)]
struct Held<P> {
    packet: P,
    arrived: u64,
    silent: bool,
}

/// The adaptive jitter buffer (see the module documentation for its rule).
#[derive(Debug)]
pub struct JitterBuffer<P> {
    cfg: JitterConfig,
    held: BTreeMap<u64, Held<P>>,
    next: Option<u64>,
    start_at: Option<u64>,
    started: bool,
    /// Delays (tick − arrival) of recent units; negative for late ones.
    delays: VecDeque<i64>,
    /// Units known to have been left out by the server, not yet played.
    left_out: BTreeMap<u64, ()>,
    /// Recent ticks at which a unit was concealed (for late and left-out arrivals).
    concealed_at: VecDeque<(u64, u64)>,
    /// The last unit played was silent.
    in_silence: bool,
    last_tick: Option<(u64, u64)>,
    stats: JitterStats,
}

impl<P: Clone> JitterBuffer<P> {
    /// An empty buffer.
    pub fn new(cfg: JitterConfig) -> Self {
        JitterBuffer {
            cfg,
            held: BTreeMap::new(),
            next: None,
            start_at: None,
            started: false,
            delays: VecDeque::new(),
            left_out: BTreeMap::new(),
            concealed_at: VecDeque::new(),
            in_silence: false,
            last_tick: None,
            stats: JitterStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Units held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no unit is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Unit `seq` arrived at `now`. `skipped_before` units before it were left out by the
    /// server; `silent` says the unit is silence (a DTX packet, a quiet period).
    pub fn push(
        &mut self,
        now: u64,
        seq: u64,
        skipped_before: u64,
        silent: bool,
        packet: P,
    ) -> Arrival {
        // Units further back than the maximum delay can never be played: a huge count from
        // the network costs no more than the buffer's reach.
        let reach = self.cfg.max_ns / self.cfg.unit_ns.max(1) + 1;
        let first_left_out = seq.saturating_sub(skipped_before.min(reach));
        for s in first_left_out..seq {
            self.on_left_out(s);
        }
        match self.next {
            Some(n) if seq < n && self.started => {
                self.stats.late += 1;
                let (tick_seq, tick) = self.last_tick.unwrap_or((n, now));
                let due = self
                    .concealed_at
                    .iter()
                    .find(|(s, _)| *s == seq)
                    .map(|(_, t)| *t)
                    .unwrap_or_else(|| {
                        tick.saturating_sub(
                            tick_seq
                                .saturating_sub(seq)
                                .saturating_mul(self.cfg.unit_ns),
                        )
                    });
                self.note_delay(due as i64 - now as i64);
                return Arrival::Late;
            }
            Some(n) if seq < n => self.next = Some(seq),
            None => {
                self.next = Some(seq);
                self.start_at = Some(now + self.cfg.floor_ns);
            }
            Some(_) => {}
        }
        if self.held.contains_key(&seq) {
            return Arrival::Duplicate;
        }
        self.held.insert(
            seq,
            Held {
                packet,
                arrived: now,
                silent,
            },
        );
        self.trim_overflow();
        Arrival::Queued
    }

    /// What to play at the tick at `now`.
    pub fn pop(&mut self, now: u64) -> Slot<P> {
        let (Some(n), Some(start)) = (self.next, self.start_at) else {
            return Slot::Wait;
        };
        if !self.started && now < start {
            return Slot::Wait;
        }
        self.started = true;
        self.last_tick = Some((n, now));
        self.left_out = self.left_out.split_off(&n);
        if self.left_out.remove(&n).is_some() {
            self.next = Some(n + 1);
            self.in_silence = true;
            self.stats.silent += 1;
            return Slot::Silence { seq: Some(n) };
        }
        if let Some(h) = self.held.get(&n) {
            let silent = h.silent;
            if silent && !self.cfg.fixed {
                self.forget_if_calm();
                if self.may_grow() && self.too_close() {
                    self.stats.inserted += 1;
                    self.shift(1);
                    return Slot::Silence { seq: None };
                }
                if self.may_shrink() {
                    self.held.remove(&n);
                    self.next = Some(n + 1);
                    self.stats.shrunk += 1;
                    self.shift(-1);
                    return self.pop(now);
                }
            }
            let Some(h) = self.held.remove(&n) else {
                return Slot::Wait;
            };
            self.next = Some(n + 1);
            self.in_silence = h.silent;
            self.stats.played += 1;
            let delay = now.saturating_sub(h.arrived);
            self.stats.delays_ns.push(delay);
            self.note_delay(now as i64 - h.arrived as i64);
            return Slot::Play {
                seq: n,
                packet: h.packet,
            };
        }
        let later = self.held.range(n + 1..).next().is_some();
        if !later && self.in_silence {
            // Under DTX the server sends nothing: this is the silence going on.
            self.next = Some(n + 1);
            self.stats.silent += 1;
            return Slot::Silence { seq: Some(n) };
        }
        if !later {
            self.stats.underruns += 1;
            if !self.cfg.fixed && self.may_grow() {
                self.shift(1);
                return Slot::Stretch;
            }
        }
        self.next = Some(n + 1);
        self.concealed_at.push_back((n, now));
        while self.concealed_at.len() > 256 {
            self.concealed_at.pop_front();
        }
        if self.cfg.fec {
            if let Some(h) = self.held.get(&(n + 1)) {
                self.stats.recovered += 1;
                return Slot::Recover {
                    seq: n,
                    from: h.packet.clone(),
                };
            }
        }
        self.stats.concealed += 1;
        Slot::Conceal { seq: n }
    }

    /// A unit the server left out: silence when it comes; if it was concealed already,
    /// it is counted as silence instead.
    fn on_left_out(&mut self, s: u64) {
        match self.next {
            Some(n) if s < n && self.started => {
                if let Some(i) = self.concealed_at.iter().position(|(c, _)| *c == s) {
                    self.concealed_at.remove(i);
                    self.stats.concealed = self.stats.concealed.saturating_sub(1);
                    self.stats.silent += 1;
                }
            }
            _ => {
                self.left_out.insert(s, ());
            }
        }
    }

    fn note_delay(&mut self, d: i64) {
        self.delays.push_back(d);
        while self.delays.len() > self.cfg.window {
            self.delays.pop_front();
        }
    }

    /// Every recent delay moves by `units` units (the play-out moved).
    fn shift(&mut self, units: i64) {
        let by = units * self.cfg.unit_ns as i64;
        self.delays.iter_mut().for_each(|d| *d += by);
    }

    /// The delay now (the longest recent one), nanoseconds.
    fn longest(&self) -> i64 {
        self.delays
            .iter()
            .copied()
            .max()
            .unwrap_or(self.cfg.floor_ns as i64)
    }

    fn shortest(&self) -> i64 {
        self.delays
            .iter()
            .copied()
            .min()
            .unwrap_or(self.cfg.floor_ns as i64)
    }

    fn may_grow(&self) -> bool {
        self.longest() + (self.cfg.unit_ns as i64) <= self.cfg.max_ns as i64
    }

    /// Some recent unit came within `guard` of being late, or the fastest ones wait less
    /// than the floor.
    fn too_close(&self) -> bool {
        self.shortest() < self.cfg.guard() || self.longest() < self.cfg.floor_ns as i64
    }

    fn may_shrink(&self) -> bool {
        self.delays.len() >= self.cfg.calm() && self.room(self.delays.iter().copied())
    }

    /// Whether `delays` would all still hold both bounds one unit shorter.
    fn room(&self, delays: impl Iterator<Item = i64> + Clone) -> bool {
        let unit = self.cfg.unit_ns as i64;
        let (Some(short), Some(long)) = (delays.clone().min(), delays.max()) else {
            return false;
        };
        short - unit >= self.cfg.guard() && long - unit >= self.cfg.floor_ns as i64
    }

    /// When the last [`JitterConfig::calm`] units alone would let the delay shrink, the
    /// path calmed down: the rougher history before them is forgotten, so the delay comes
    /// down in this pause instead of waiting for the rough units to leave the window.
    fn forget_if_calm(&mut self) {
        let calm = self.cfg.calm();
        if self.delays.len() <= calm {
            return;
        }
        let old = self.delays.len() - calm;
        if self.room(self.delays.range(old..).copied()) {
            self.delays.drain(..old);
        }
    }

    /// Beyond the maximum delay the oldest units go.
    fn trim_overflow(&mut self) {
        let (Some(n), Some((&newest, _))) = (self.next, self.held.last_key_value()) else {
            return;
        };
        let span = newest
            .saturating_sub(n)
            .saturating_add(1)
            .saturating_mul(self.cfg.unit_ns);
        if span <= self.cfg.max_ns || !self.started {
            return;
        }
        let keep_from = newest
            .saturating_add(1)
            .saturating_sub(self.cfg.max_ns / self.cfg.unit_ns.max(1));
        let dropped = self.held.range(..keep_from).count() as u64;
        self.held = self.held.split_off(&keep_from);
        self.stats.overflow += dropped;
        self.next = Some(keep_from);
    }
}

#[cfg(test)]
mod tests;
