//! An audio input: a sound card's capture voice (AC97's line-in and microphone, HDA's
//! line-in). What a client sends with `ringcast mic` arrives from the daemon in the input
//! byte ring, PCM in the voice's own format, whole frames; QEMU takes it on its audio
//! timer. When the ring holds less than QEMU asks for, the voice hands over what there is
//! and QEMU pads the rest with silence, so the guest's recording keeps real time; those
//! frames are counted as silent.
//!
//! Without the voice QEMU could not create the card's capture voices and would log "Could
//! not create a backend for voice" on every boot.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use shm_ring::handover::AudioFormat;
use shm_ring::{ByteConsumer, Poison, RingError, RingKind, RingMemory};

use crate::audio::AudioStats;

/// An open input voice and the ring the daemon fills.
pub(crate) struct InputVoice {
    pub format: AudioFormat,
    frame_bytes: usize,
    rx: ByteConsumer,
    pub enabled: bool,
    /// Said once: the guest opened its input and where the sound comes from.
    pub announced: bool,
    /// Voices QEMU opened on this ring (with its mixing engine off a card's inputs each
    /// open one, in the same format): the ring goes with the last close.
    pub opens: u32,
}

impl InputVoice {
    /// An input voice in `format` with a new ring of about a third of a second: enough to
    /// ride out a late network packet, short enough that what the guest records stays
    /// close to what the client sends (the daemon drops what does not fit).
    pub(crate) fn new(name: &str, format: AudioFormat) -> Result<Self, String> {
        let frame_bytes = crate::audio::frame_bytes(&format, "audio input")?;
        let second = u64::from(format.frequency) * frame_bytes as u64;
        let capacity = (second / 4).next_power_of_two().clamp(16 << 10, 4 << 20);
        let mem = RingMemory::create(&format!("{name}-in"), RingKind::Bytes, capacity, 0)
            .map_err(|e| e.to_string())?;
        Ok(InputVoice {
            format,
            frame_bytes,
            rx: ByteConsumer::new(Arc::new(mem)).map_err(|e: RingError| e.to_string())?,
            enabled: false,
            announced: false,
            opens: 1,
        })
    }

    /// The ring's descriptor, handed to the daemon.
    pub(crate) fn ring_fd(&self) -> BorrowedFd<'_> {
        self.rx.memory().fd()
    }

    /// Copies the whole frames the ring holds, up to what fits in `buf`; returns the bytes
    /// copied. Frames asked for and not there are counted as silence (QEMU pads them).
    /// Never blocks and never allocates.
    pub(crate) fn read(&mut self, buf: &mut [u8], stats: &mut AudioStats) -> Result<usize, Poison> {
        let want = buf.len() / self.frame_bytes * self.frame_bytes;
        let avail = self.rx.available()?;
        let n = want.min(avail / self.frame_bytes * self.frame_bytes);
        let got = if n > 0 {
            self.rx.read(&mut buf[..n])?.bytes
        } else {
            0
        };
        stats.input_frames += (got / self.frame_bytes) as u64;
        stats.silent_input_frames += ((want - got) / self.frame_bytes) as u64;
        Ok(got)
    }

    /// Drops what the ring holds: audio the client sent while the guest was not recording
    /// is stale by the time it starts. Bounded: at most one ring's worth.
    pub(crate) fn discard_stale(&mut self) -> Result<u64, Poison> {
        let mut scratch = [0u8; 4096];
        let mut dropped = 0u64;
        let cap = self.rx.memory().geometry().capacity;
        while dropped < cap {
            let r = self.rx.read(&mut scratch)?;
            if r.bytes == 0 {
                break;
            }
            dropped += r.bytes as u64;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_ring::ByteProducer;

    fn s16_stereo() -> AudioFormat {
        AudioFormat {
            frequency: 44100,
            channels: 2,
            sample_format: 3,
            big_endian: false,
        }
    }

    /// The daemon's side of the input ring: mapped from the descriptor handed over, as the
    /// daemon maps it; under Miri (heap-backed rings have no descriptor) the same memory.
    fn producer(v: &InputVoice) -> ByteProducer {
        #[cfg(not(miri))]
        let mem = {
            let fd = v.ring_fd().try_clone_to_owned().unwrap();
            Arc::new(RingMemory::open(fd, RingKind::Bytes).unwrap())
        };
        #[cfg(miri)]
        let mem = v.rx.memory().clone();
        ByteProducer::new(mem).unwrap()
    }

    #[test]
    fn hands_over_whole_frames_of_what_the_daemon_wrote_and_counts_the_rest_as_silence() {
        let mut v = InputVoice::new("t", s16_stereo()).unwrap();
        let mut tx = producer(&v);
        let mut stats = AudioStats::default();
        let mut buf = [0x55u8; 4 * 10 + 3];
        assert_eq!(v.read(&mut buf, &mut stats).unwrap(), 0);
        assert_eq!(stats.silent_input_frames, 10);
        let pcm: Vec<u8> = (0..4 * 6).map(|i| i as u8).collect();
        assert_eq!(tx.write(&pcm).unwrap().bytes, pcm.len());
        assert_eq!(v.read(&mut buf, &mut stats).unwrap(), pcm.len());
        assert_eq!(buf[..pcm.len()], pcm[..]);
        assert!(buf[pcm.len()..].iter().all(|&b| b == 0x55));
        assert_eq!((stats.input_frames, stats.silent_input_frames), (6, 14));
        // More than fits: the rest stays for the next call.
        assert_eq!(tx.write(&[1u8; 4 * 12]).unwrap().bytes, 48);
        assert_eq!(v.read(&mut buf, &mut stats).unwrap(), 40);
        assert_eq!(v.read(&mut buf, &mut stats).unwrap(), 8);
        // A partial frame is never handed over.
        assert_eq!(tx.write(&[2u8; 6]).unwrap().bytes, 6);
        assert_eq!(v.read(&mut buf, &mut stats).unwrap(), 4);
        assert_eq!(v.read(&mut buf, &mut stats).unwrap(), 0);
    }

    #[test]
    fn stale_audio_is_dropped_when_the_guest_starts_recording() {
        let mut v = InputVoice::new("t", s16_stereo()).unwrap();
        let mut tx = producer(&v);
        let cap = v.rx.memory().geometry().capacity as usize;
        assert_eq!(tx.write(&vec![7u8; cap]).unwrap().bytes, cap);
        assert_eq!(v.discard_stale().unwrap(), cap as u64);
        let mut stats = AudioStats::default();
        assert_eq!(v.read(&mut [0u8; 64], &mut stats).unwrap(), 0);
    }

    #[test]
    fn formats_nobody_can_record_are_refused() {
        for bad in [
            AudioFormat {
                channels: 0,
                ..s16_stereo()
            },
            AudioFormat {
                frequency: 0,
                ..s16_stereo()
            },
            AudioFormat {
                sample_format: 9,
                ..s16_stereo()
            },
        ] {
            assert!(InputVoice::new("t", bad).is_err(), "{bad:?}");
        }
    }
}
