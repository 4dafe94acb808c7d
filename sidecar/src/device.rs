//! What the ingest thread and the API share about one device: its journal (consoles),
//! its live audio queues, the writing end of its input ring, and its counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use shm_ring::handover::AudioFormat;
use shm_ring::{ByteProducer, Doorbell};

use crate::journal::Journal;
use crate::names::DeviceKey;
use crate::signal::Signal;

pub use protocol::codec::{DeviceKind, DeviceState};

/// Counters of one device. Every loss has its own counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStats {
    /// The device.
    pub key: DeviceKey,
    /// Console or audio.
    pub kind: DeviceKind,
    /// Connection state.
    pub state: DeviceState,
    /// Console: bytes taken from the ring into the journal; audio: PCM bytes received.
    pub bytes: u64,
    /// Console: the journal's end offset (bytes ever, including markers and losses).
    pub journal_end: u64,
    /// Console: the oldest offset still readable.
    pub journal_start: u64,
    /// Audio: periods received.
    pub periods: u64,
    /// Console bytes the QEMU side dropped while no ringcastd was attached (flight recorder).
    pub dropped_flight_recorder: u64,
    /// Audio periods the QEMU side dropped because the ring was full.
    pub dropped_audio_overflow: u64,
    /// Console bytes subscribers skipped because they were older than the retention.
    pub subscriber_gap_bytes: u64,
    /// Audio periods dropped from slow subscribers' queues.
    pub subscriber_dropped_periods: u64,
    /// Bytes waiting in the output ring when it was last looked at.
    pub ring_fill: u64,
    /// Capacity of the output ring (0 when never attached).
    pub ring_capacity: u64,
    /// Subscriptions open now.
    pub subscribers: usize,
    /// Why the ring was poisoned, if it was.
    pub poisoned: Option<String>,
    /// Spool writes that failed (the journal then keeps bytes in RAM only).
    pub spool_errors: u64,
    /// Console bytes that left the RAM window while the spool was off: lost for good
    /// (subscribers behind them get a `Retention` gap of this size).
    pub dropped_no_spool: u64,
    /// Console input bytes (audio: microphone PCM bytes) written into the input ring.
    pub input_bytes: u64,
    /// Console subscriptions ended because a journal segment could not be read (deleted or
    /// truncated outside ringcastd).
    pub journal_read_errors: u64,
    /// Registrations accepted (a reconnect of the same session counts too).
    pub registrations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub periods: AtomicU64,
    pub dropped_flight_recorder: AtomicU64,
    pub dropped_audio_overflow: AtomicU64,
    pub subscriber_gap_bytes: AtomicU64,
    pub subscriber_dropped_periods: AtomicU64,
    pub ring_fill: AtomicU64,
    pub ring_capacity: AtomicU64,
    pub subscribers: AtomicUsize,
    pub spool_errors: AtomicU64,
    pub input_bytes: AtomicU64,
    pub journal_read_errors: AtomicU64,
    pub registrations: AtomicU64,
}

/// The writing end of an input ring: a console's keystrokes, or the PCM an audio
/// device's capture voice records (`ringcast mic`; no doorbell: QEMU reads it on its
/// audio timer).
#[derive(Debug)]
pub(crate) struct InputSide {
    pub producer: ByteProducer,
    pub data_bell: Option<Doorbell>,
}

/// One period of audio, as QEMU handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPeriod {
    /// Sequence number (counts dropped periods too, so a jump shows a loss).
    pub seq: u64,
    /// When QEMU handed the period over (CLOCK_MONOTONIC, ns).
    pub timestamp_ns: u64,
    /// Frames in `pcm`.
    pub frames: u32,
    /// Interleaved samples in the device's format.
    pub pcm: Bytes,
    /// Periods dropped from this subscriber's queue just before this one (it was slow).
    pub skipped_before: u64,
}

/// A subscriber's bounded queue of audio periods.
#[derive(Debug)]
pub(crate) struct AudioQueue {
    pub state: Mutex<AudioQueueState>,
    pub signal: Signal,
    pub capacity: usize,
}

impl AudioQueue {
    pub fn new(capacity: usize) -> Self {
        AudioQueue {
            state: Default::default(),
            signal: Default::default(),
            capacity: capacity.max(1),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct AudioQueueState {
    pub items: VecDeque<AudioPeriod>,
    /// Units not delivered just before the next one (dropped here, or left out upstream).
    pub skipped: u64,
    /// The device's QEMU went away (or broke its ring): no more periods will come.
    pub ended: bool,
}

/// Mutable state of a device (under one lock).
#[derive(Debug)]
pub(crate) struct Mutable {
    pub attachment: DeviceState,
    pub poisoned: Option<String>,
    pub audio_format: Option<AudioFormat>,
    /// The format of the guest's capture voice, when its sound card records.
    pub audio_in_format: Option<AudioFormat>,
    pub audio_queues: Vec<Arc<AudioQueue>>,
    /// Queues of the Opus subscribers, fed by the device's encoder thread.
    pub opus_queues: Vec<Arc<AudioQueue>>,
    /// The encoder thread runs (it clears this as it stops).
    pub opus_running: bool,
    /// The UUID of the VM that registered the device ("" when none did with one); a console
    /// keeps it in its journal's metadata across restarts.
    pub vm_uuid: String,
}

/// A device as shared between the ingest thread and API users.
#[derive(Debug)]
pub(crate) struct Device {
    pub key: DeviceKey,
    pub kind: DeviceKind,
    pub journal: Option<Mutex<Journal>>,
    pub state: Mutex<Mutable>,
    /// Notified whenever the journal grows or the state changes.
    pub signal: Signal,
    pub input: Mutex<Option<InputSide>>,
    /// Notified when the input ring may have space again (or the device went away).
    pub input_signal: Signal,
    pub counters: Counters,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Device {
    pub fn new(key: DeviceKey, kind: DeviceKind, journal: Option<Journal>) -> Arc<Device> {
        let vm_uuid = journal
            .as_ref()
            .map_or_else(String::new, |j| j.meta().uuid.clone());
        Arc::new(Device {
            key,
            kind,
            journal: journal.map(Mutex::new),
            state: Mutex::new(Mutable {
                attachment: DeviceState::Gone,
                poisoned: None,
                audio_format: None,
                audio_in_format: None,
                audio_queues: Vec::new(),
                opus_queues: Vec::new(),
                opus_running: false,
                vm_uuid,
            }),
            signal: Signal::default(),
            input: Mutex::new(None),
            input_signal: Signal::default(),
            counters: Counters::default(),
        })
    }

    pub fn set_attachment(&self, a: DeviceState, poisoned: Option<String>) {
        {
            let mut s = lock(&self.state);
            s.attachment = a;
            if poisoned.is_some() || a == DeviceState::Attached {
                s.poisoned = poisoned;
            }
        }
        if a != DeviceState::Attached {
            *lock(&self.input) = None;
            // Live audio ends with its source; subscribers drain what is queued, then stop.
            for q in lock(&self.state).audio_queues.iter() {
                lock(&q.state).ended = true;
                q.signal.notify();
            }
        }
        self.signal.notify();
        self.input_signal.notify();
    }

    /// Hands an audio period to every PCM subscriber, dropping the oldest of a full queue.
    pub fn fan_out(&self, period: &AudioPeriod) {
        let queues = lock(&self.state).audio_queues.clone();
        self.fan_out_to(&queues, period);
    }

    /// Hands a period (or Opus frame) to each of `queues`, dropping the oldest of a full
    /// queue. What was not delivered before an item (dropped here, or counted in the item's
    /// own `skipped_before` upstream) is carried by the next item delivered.
    pub fn fan_out_to(&self, queues: &[Arc<AudioQueue>], period: &AudioPeriod) {
        for q in queues {
            {
                let mut s = lock(&q.state);
                if s.items.len() >= q.capacity {
                    if let Some(dropped) = s.items.pop_front() {
                        s.skipped += 1 + dropped.skipped_before;
                    }
                    self.counters
                        .subscriber_dropped_periods
                        .fetch_add(1, Relaxed);
                }
                let mut p = period.clone();
                p.skipped_before += std::mem::take(&mut s.skipped);
                s.items.push_back(p);
            }
            q.signal.notify();
        }
    }

    pub fn stats(&self) -> DeviceStats {
        let c = &self.counters;
        let (state, poisoned) = {
            let s = lock(&self.state);
            (s.attachment, s.poisoned.clone())
        };
        let (journal_end, journal_start, dropped_no_spool, journal_spool_errors) =
            match &self.journal {
                Some(j) => {
                    let j = lock(j);
                    (
                        j.end(),
                        j.available_from(),
                        j.ram_only_dropped(),
                        j.spool_failures(),
                    )
                }
                None => (0, 0, 0, 0),
            };
        DeviceStats {
            key: self.key.clone(),
            kind: self.kind,
            state,
            bytes: c.bytes.load(Relaxed),
            journal_end,
            journal_start,
            periods: c.periods.load(Relaxed),
            dropped_flight_recorder: c.dropped_flight_recorder.load(Relaxed),
            dropped_audio_overflow: c.dropped_audio_overflow.load(Relaxed),
            subscriber_gap_bytes: c.subscriber_gap_bytes.load(Relaxed),
            subscriber_dropped_periods: c.subscriber_dropped_periods.load(Relaxed),
            ring_fill: c.ring_fill.load(Relaxed),
            ring_capacity: c.ring_capacity.load(Relaxed),
            subscribers: c.subscribers.load(Relaxed),
            poisoned,
            spool_errors: c.spool_errors.load(Relaxed) + journal_spool_errors,
            dropped_no_spool,
            input_bytes: c.input_bytes.load(Relaxed),
            journal_read_errors: c.journal_read_errors.load(Relaxed),
            registrations: c.registrations.load(Relaxed),
        }
    }
}

/// Renders stats as a table for people: the table `ringcast stats` prints too (one
/// renderer, `transport_quic::table::stats_table`, so the columns cannot drift apart).
pub fn render_table(stats: &[DeviceStats]) -> String {
    let entries: Vec<_> = stats
        .iter()
        .map(|s| crate::net::wire_stats(s, None))
        .collect();
    transport_quic::table::stats_table(&entries)
}
