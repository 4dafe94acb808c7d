//! The device description a producer sends with its rings (see the layout in [`super`]).

use super::{Reader, DEVICE_MAGIC, MAX_NAME, VERSION};
use crate::error::RingError;

/// What kind of device a description is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DeviceKind {
    /// A character device: output and input byte rings.
    Console = 1,
    /// An audio output: one record ring, and an input byte ring when the guest records.
    Audio = 2,
}

impl DeviceKind {
    /// Number of descriptors a message of this kind carries without an input voice
    /// (see [`DeviceDescription::fd_count`]).
    pub fn fd_count(self) -> usize {
        match self {
            DeviceKind::Console => 6,
            DeviceKind::Audio => 2,
        }
    }
}

/// PCM format of an audio device (mirrors `QbpAudioFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AudioFormat {
    /// Frames per second.
    pub frequency: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// `QbpSampleFormat` value (3 = s16).
    pub sample_format: u16,
    /// Big-endian samples.
    pub big_endian: bool,
}

impl AudioFormat {
    /// Bytes per sample of one channel, or None for an unknown format.
    pub fn sample_bytes(&self) -> Option<u32> {
        match self.sample_format {
            0 | 1 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            _ => None,
        }
    }

    /// Bytes per frame (all channels), or None for an unknown format.
    pub fn frame_bytes(&self) -> Option<u32> {
        Some(self.sample_bytes()? * u32::from(self.channels))
    }

    /// Whether a description may carry this format: 1 Hz to 768 kHz, 1 to 64 channels, a
    /// known sample format. A producer checks this before it registers a device that every
    /// consumer would refuse.
    pub fn is_valid(&self) -> bool {
        (1..=768_000).contains(&self.frequency)
            && (1..=64).contains(&self.channels)
            && self.sample_bytes().is_some()
    }

    /// Appends the format's 12 bytes: frequency, channels, sample format, big endian, 3 zeros.
    fn encode_into(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&self.frequency.to_le_bytes());
        b.extend_from_slice(&self.channels.to_le_bytes());
        b.extend_from_slice(&self.sample_format.to_le_bytes());
        b.push(u8::from(self.big_endian));
        b.extend_from_slice(&[0; 3]);
    }

    /// Reads what [`AudioFormat::encode_into`] wrote (not checked: see [`AudioFormat::is_valid`]).
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, RingError> {
        let f = AudioFormat {
            frequency: r.u32()?,
            channels: r.u16()?,
            sample_format: r.u16()?,
            big_endian: r.u8()? != 0,
        };
        r.take(3)?;
        Ok(f)
    }
}

/// Who a device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDescription {
    /// Console or audio.
    pub kind: DeviceKind,
    /// Process id of the producer (informational; the consumer should trust SO_PEERCRED).
    pub pid: u32,
    /// Identifies this set of rings: the same value after a reconnect means the rings (and
    /// their positions) are the ones the consumer saw before; a new value means new rings
    /// (a restarted VM or voice), whose positions start again.
    pub session: u64,
    /// The VM's name ("" when unnamed).
    pub vm_name: String,
    /// The VM's UUID ("" when not set).
    pub vm_uuid: String,
    /// The device id on the QEMU command line.
    pub device_id: String,
    /// PCM format for audio devices.
    pub audio: Option<AudioFormat>,
    /// PCM format of the guest's input voice (audio devices whose sound card records):
    /// the description then carries the input ring.
    pub audio_in: Option<AudioFormat>,
}

impl DeviceDescription {
    /// Number of descriptors the message carries.
    pub fn fd_count(&self) -> usize {
        self.kind.fd_count() + usize::from(self.audio_in.is_some())
    }

    /// Serialises the description.
    pub fn encode(&self) -> Result<Vec<u8>, RingError> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(DEVICE_MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.push(self.kind as u8);
        if self.audio_in.is_some() && self.kind != DeviceKind::Audio {
            return Err(RingError::BadMessage(
                "only audio devices have an input voice",
            ));
        }
        b.push(self.fd_count() as u8);
        b.extend_from_slice(&self.pid.to_le_bytes());
        b.extend_from_slice(&self.session.to_le_bytes());
        self.audio.unwrap_or_default().encode_into(&mut b);
        for s in [&self.vm_name, &self.vm_uuid, &self.device_id] {
            if s.len() > MAX_NAME {
                return Err(RingError::BadMessage("a name is longer than 255 bytes"));
            }
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        if let Some(a) = self.audio_in {
            a.encode_into(&mut b);
        }
        Ok(b)
    }

    /// Parses a description, rejecting anything malformed.
    pub fn decode(b: &[u8]) -> Result<Self, RingError> {
        let mut r = Reader(b);
        if r.take(8)? != DEVICE_MAGIC {
            return Err(RingError::BadMessage("not a device description"));
        }
        if r.u16()? != VERSION {
            return Err(RingError::BadMessage("unsupported description version"));
        }
        let kind = match r.u8()? {
            1 => DeviceKind::Console,
            2 => DeviceKind::Audio,
            _ => return Err(RingError::BadMessage("unknown device kind")),
        };
        let nfds = usize::from(r.u8()?);
        let has_input = kind == DeviceKind::Audio && nfds == kind.fd_count() + 1;
        if nfds != kind.fd_count() && !has_input {
            return Err(RingError::BadMessage("wrong descriptor count for the kind"));
        }
        let pid = r.u32()?;
        let session = r.u64()?;
        let audio = AudioFormat::decode_from(&mut r)?;
        let mut names = [String::new(), String::new(), String::new()];
        for name in &mut names {
            let len = usize::from(r.u16()?);
            if len > MAX_NAME {
                return Err(RingError::BadMessage("a name is longer than 255 bytes"));
            }
            *name = std::str::from_utf8(r.take(len)?)
                .map_err(|_| RingError::BadMessage("a name is not UTF-8"))?
                .to_owned();
        }
        let audio_in = if has_input {
            let a = AudioFormat::decode_from(&mut r)?;
            if !a.is_valid() {
                return Err(RingError::BadMessage("invalid audio input format"));
            }
            Some(a)
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(RingError::BadMessage("trailing bytes"));
        }
        let [vm_name, vm_uuid, device_id] = names;
        if device_id.is_empty() {
            return Err(RingError::BadMessage("empty device id"));
        }
        let audio = match kind {
            DeviceKind::Console => None,
            DeviceKind::Audio => {
                if !audio.is_valid() {
                    return Err(RingError::BadMessage("invalid audio format"));
                }
                Some(audio)
            }
        };
        Ok(DeviceDescription {
            kind,
            pid,
            session,
            vm_name,
            vm_uuid,
            device_id,
            audio,
            audio_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> DeviceDescription {
        DeviceDescription {
            kind: DeviceKind::Console,
            pid: 42,
            session: 7,
            vm_name: "vm1".into(),
            vm_uuid: "".into(),
            device_id: "serial0".into(),
            audio: None,
            audio_in: None,
        }
    }

    #[test]
    fn description_round_trips() {
        let d = console();
        assert_eq!(DeviceDescription::decode(&d.encode().unwrap()).unwrap(), d);
        let a = DeviceDescription {
            kind: DeviceKind::Audio,
            audio: Some(AudioFormat {
                frequency: 44100,
                channels: 2,
                sample_format: 3,
                big_endian: false,
            }),
            ..console()
        };
        assert_eq!(DeviceDescription::decode(&a.encode().unwrap()).unwrap(), a);
    }

    fn duplex() -> DeviceDescription {
        let f = AudioFormat {
            frequency: 44100,
            channels: 2,
            sample_format: 3,
            big_endian: false,
        };
        DeviceDescription {
            kind: DeviceKind::Audio,
            audio: Some(f),
            audio_in: Some(AudioFormat {
                frequency: 48000,
                channels: 1,
                ..f
            }),
            ..console()
        }
    }

    #[test]
    fn an_audio_description_with_an_input_voice_carries_its_format_and_ring() {
        let d = duplex();
        let wire = d.encode().unwrap();
        assert_eq!(d.fd_count(), 3);
        assert_eq!(wire[11], 3, "nfds");
        assert_eq!(DeviceDescription::decode(&wire).unwrap(), d);
        // Without the input voice: the first version's message, byte for byte.
        let out_only = DeviceDescription {
            audio_in: None,
            ..d.clone()
        };
        let old = out_only.encode().unwrap();
        assert_eq!(old[11], 2);
        assert_eq!(old[12..], wire[12..wire.len() - 12]);
        // A console has no input voice, and an input format must be valid.
        let bad = DeviceDescription {
            audio_in: d.audio_in,
            ..console()
        };
        assert!(bad.encode().is_err());
        let mut zero_rate = wire.clone();
        let at = zero_rate.len() - 12;
        zero_rate[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(DeviceDescription::decode(&zero_rate).is_err());
        // A console with 7 descriptors is still wrong.
        let mut c = console().encode().unwrap();
        c[11] = 7;
        assert!(DeviceDescription::decode(&c).is_err());
    }

    #[test]
    fn every_truncation_of_a_description_is_rejected() {
        for b in [console().encode().unwrap(), duplex().encode().unwrap()] {
            for n in 0..b.len() {
                assert!(DeviceDescription::decode(&b[..n]).is_err(), "prefix {n}");
            }
        }
    }

    #[test]
    fn audio_description_without_a_format_is_rejected() {
        let mut d = console();
        d.kind = DeviceKind::Audio;
        assert!(DeviceDescription::decode(&d.encode().unwrap()).is_err());
    }
}
