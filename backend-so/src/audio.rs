//! An audio output: every period QEMU hands over becomes one stamped record.
//!
//! Audio keeps real time: QEMU paces the calls, and the plugin takes everything. When the
//! ring is full the newest period is dropped and counted; while no daemon is attached
//! periods are counted as dropped without touching the ring.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use shm_ring::handover::{AudioFormat, DeviceDescription, DeviceKind};
use shm_ring::{Doorbell, Poison, RecordProducer, RingError, RingKind, RingMemory};

/// Loss counters of an audio device.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AudioStats {
    /// Periods stored in the ring.
    pub periods: u64,
    /// Periods dropped because the ring was full.
    pub dropped_full: u64,
    /// Periods dropped because no daemon was attached (or the ring was being replaced).
    pub dropped_unattached: u64,
    /// Records lost with a ring the daemon broke: stored but not taken, or being written.
    pub dropped_poisoned: u64,
    /// Frames of silence handed to the guest's input voice (no client audio was there).
    pub silent_input_frames: u64,
    /// Frames of client audio (`ringcast mic`) handed to the guest's input voice.
    pub input_frames: u64,
}

/// The bytes of one frame of `format`, or why a voice (`what`: "audio", "audio input")
/// cannot take it. The daemon refuses a registration with any other format: the open fails
/// instead of registering (and retrying) a device nobody will take.
pub(crate) fn frame_bytes(format: &AudioFormat, what: &str) -> Result<usize, String> {
    if !format.is_valid() {
        return Err(format!(
            "unsupported {what} format: {} Hz, {} channels, sample format {} (supported: \
             1 Hz to 768 kHz, 1 to 64 channels, sample formats 0 to 6)",
            format.frequency, format.channels, format.sample_format
        ));
    }
    format
        .frame_bytes()
        .filter(|&b| b > 0)
        .map(|b| b as usize)
        .ok_or_else(|| format!("unsupported sample format {}", format.sample_format))
}

/// One open output voice and its ring.
pub(crate) struct Voice {
    pub session: u64,
    pub format: AudioFormat,
    frame_bytes: usize,
    tx: RecordProducer,
    data: Doorbell,
}

impl Voice {
    pub(crate) fn new(name: &str, format: AudioFormat) -> Result<Self, String> {
        let frame_bytes = frame_bytes(&format, "audio")?;
        // About two seconds of audio, so a briefly busy daemon drops nothing.
        let second = u64::from(format.frequency) * frame_bytes as u64;
        let capacity = (2 * second).next_power_of_two().clamp(64 << 10, 16 << 20);
        let max_record = (capacity / 4).min(1 << 20) as u32;
        let mem = RingMemory::create(name, RingKind::Records, capacity, max_record)
            .map_err(|e| e.to_string())?;
        Ok(Voice {
            session: crate::new_session_id(),
            format,
            frame_bytes,
            tx: RecordProducer::new(Arc::new(mem)).map_err(|e: RingError| e.to_string())?,
            data: Doorbell::new().map_err(|e| e.to_string())?,
        })
    }

    pub(crate) fn handover_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.tx_memory_fd(), self.data.as_fd()]
    }

    fn tx_memory_fd(&self) -> BorrowedFd<'_> {
        self.tx.memory().fd()
    }

    pub(crate) fn describe(&self, base: DeviceDescription) -> DeviceDescription {
        DeviceDescription {
            kind: DeviceKind::Audio,
            session: self.session,
            audio: Some(self.format),
            ..base
        }
    }

    /// Records stored in the ring that the daemon has not taken (lost if the ring is
    /// abandoned now).
    pub(crate) fn undelivered(&self) -> u64 {
        self.tx.unconsumed_records()
    }

    /// Stores one period (split into records that fit), stamped with `now_ns`. On a broken
    /// ring the records of this period that were not stored are counted as lost.
    pub(crate) fn write(
        &mut self,
        buf: &[u8],
        now_ns: u64,
        stats: &mut AudioStats,
    ) -> Result<(), Poison> {
        // Whole frames per record, so every record is playable on its own.
        let max = (self.tx.max_payload() / self.frame_bytes).max(1) * self.frame_bytes;
        let records = buf.len().div_ceil(max) as u64;
        for (i, chunk) in buf.chunks(max).enumerate() {
            let frames = (chunk.len() / self.frame_bytes) as u32;
            let p = match self.tx.push(now_ns, frames, 0, chunk) {
                Ok(p) => p,
                Err(e) => {
                    stats.dropped_poisoned += records - i as u64;
                    return Err(e);
                }
            };
            if p.wake_consumer {
                self.data.ring();
            }
            if p.stored {
                stats.periods += 1;
            } else {
                stats.dropped_full += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(frequency: u32, channels: u16, sample_format: u16) -> AudioFormat {
        AudioFormat {
            frequency,
            channels,
            sample_format,
            big_endian: false,
        }
    }

    #[test]
    fn formats_the_daemon_would_refuse_are_refused_at_open() {
        for bad in [
            format(768_001, 2, 3),
            format(u32::MAX, 2, 3),
            format(44100, 65, 3),
            format(44100, u16::MAX, 3),
            format(44100, 0, 3),
            format(0, 2, 3),
            format(44100, 2, 7),
        ] {
            assert!(Voice::new("t", bad).is_err(), "{bad:?}");
        }
        let ok = Voice::new("t", format(768_000, 64, 6)).unwrap();
        let desc = ok.describe(DeviceDescription {
            kind: DeviceKind::Audio,
            pid: 1,
            session: 0,
            vm_name: String::new(),
            vm_uuid: String::new(),
            device_id: "a".into(),
            audio: None,
            audio_in: None,
        });
        let wire = desc.encode().unwrap();
        assert_eq!(DeviceDescription::decode(&wire).unwrap(), desc);
    }
}
