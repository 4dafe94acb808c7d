//! The daemon's device types as the wire's: the one place where they meet.

use super::*;

/// A device's counters as clients receive them (and as `ringcastd stats` prints them, so
/// the two show the same thing).
pub fn wire_stats(s: &DeviceStats, audio: Option<shm_ring::handover::AudioFormat>) -> StatsEntry {
    StatsEntry {
        device: DeviceEntry {
            vm: s.key.vm.clone(),
            device: s.key.device.clone(),
            kind: s.kind,
            state: s.state,
            audio: audio.map(wire_format),
            bytes: s.bytes,
            periods: s.periods,
            journal_start: s.journal_start,
            journal_end: s.journal_end,
            subscribers: u32::try_from(s.subscribers).unwrap_or(u32::MAX),
        },
        dropped_flight_recorder: s.dropped_flight_recorder,
        dropped_audio_overflow: s.dropped_audio_overflow,
        subscriber_gap_bytes: s.subscriber_gap_bytes,
        subscriber_dropped_periods: s.subscriber_dropped_periods,
        ring_fill: s.ring_fill,
        ring_capacity: s.ring_capacity,
        input_bytes: s.input_bytes,
        registrations: s.registrations,
        spool_errors: s.spool_errors,
        dropped_no_spool: s.dropped_no_spool,
        poisoned: s.poisoned.clone(),
    }
}

pub(super) fn wire_format(f: shm_ring::handover::AudioFormat) -> codec::AudioFormat {
    codec::AudioFormat {
        rate: f.frequency,
        channels: f.channels,
        sample_format: f.sample_format,
        big_endian: f.big_endian,
    }
}
