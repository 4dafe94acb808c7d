//! Handing rings to the consumer process: one `SOCK_SEQPACKET` message with a device
//! description and the ring memfds and doorbell eventfds (SCM_RIGHTS), answered by one
//! acknowledgement message.
//!
//! Message layout (little endian), version 1:
//!
//! ```text
//! "SHMDEV01"  u16 version  u8 kind  u8 nfds  u32 pid  u64 session
//! u32 frequency  u16 channels  u16 sample_format  u8 big_endian  u8[3] zero   (audio; zero for consoles)
//! u16 len + bytes: vm_name, vm_uuid, device_id  (UTF-8, at most 255 bytes each)
//! u32 frequency  u16 channels  u16 sample_format  u8 big_endian  u8[3] zero   (audio with an input voice only)
//! ```
//!
//! File descriptors, in order: console = output ring, its data doorbell, its space
//! doorbell, input ring, its data doorbell, its space doorbell; audio = output ring, its
//! data doorbell, and, when the guest's sound card has an input voice (`nfds` 3), the
//! input byte ring (the guest's capture side: the consumer of the description writes PCM
//! in the input format into it, whole frames; the producer of the description reads it
//! when QEMU asks for input, and needs no doorbell). "Data" doorbells are rung by the
//! ring's producer, "space" doorbells by its consumer. A consumer older than the input
//! ring refuses an audio description with 3 descriptors ("wrong descriptor count").
//!
//! The acknowledgement: `"SHMACK01"  u8 status (0 = accepted)  u16 len + message`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::RingError;

const DEVICE_MAGIC: &[u8; 8] = b"SHMDEV01";
const ACK_MAGIC: &[u8; 8] = b"SHMACK01";
const VERSION: u16 = 1;
/// Longest name accepted in a description.
pub const MAX_NAME: usize = 255;
/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 1024;
const MAX_FDS: usize = 6;

/// Where a consumer daemon named `app` listens by default:
/// `$XDG_RUNTIME_DIR/<app>/<app>d.sock`, or `/run/<app>/<app>d.sock` without a runtime dir.
pub fn default_socket_path(app: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::path::PathBuf::from("/run"),
    };
    dir.join(app).join(format!("{app}d.sock"))
}

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
        let a = self.audio.unwrap_or_default();
        b.extend_from_slice(&a.frequency.to_le_bytes());
        b.extend_from_slice(&a.channels.to_le_bytes());
        b.extend_from_slice(&a.sample_format.to_le_bytes());
        b.push(u8::from(a.big_endian));
        b.extend_from_slice(&[0; 3]);
        for s in [&self.vm_name, &self.vm_uuid, &self.device_id] {
            if s.len() > MAX_NAME {
                return Err(RingError::BadMessage("a name is longer than 255 bytes"));
            }
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        if let Some(a) = self.audio_in {
            b.extend_from_slice(&a.frequency.to_le_bytes());
            b.extend_from_slice(&a.channels.to_le_bytes());
            b.extend_from_slice(&a.sample_format.to_le_bytes());
            b.push(u8::from(a.big_endian));
            b.extend_from_slice(&[0; 3]);
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
        let audio = AudioFormat {
            frequency: r.u32()?,
            channels: r.u16()?,
            sample_format: r.u16()?,
            big_endian: r.u8()? != 0,
        };
        r.take(3)?;
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
            let a = AudioFormat {
                frequency: r.u32()?,
                channels: r.u16()?,
                sample_format: r.u16()?,
                big_endian: r.u8()? != 0,
            };
            r.take(3)?;
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

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RingError> {
        if self.0.len() < n {
            return Err(RingError::BadMessage("truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, RingError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RingError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RingError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RingError> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(x))
    }
}

/// Sends one message with descriptors attached. Never blocks on a non-blocking socket
/// (returns the would-block error instead).
pub fn send_with_fds(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), RingError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(RingError::BadMessage("too many descriptors"));
    }
    let sent = sendmsg(sock, &[IoSlice::new(bytes)], &mut cmsg, SendFlags::NOSIGNAL)
        .map_err(|e| RingError::io("sendmsg", e))?;
    if sent != bytes.len() {
        return Err(RingError::BadMessage("message truncated on send"));
    }
    Ok(())
}

/// One received message and the descriptors that came with it.
pub type Received = (Vec<u8>, Vec<OwnedFd>);

/// Receives one message and the descriptors that came with it. Returns `Ok(None)` on an
/// orderly shutdown of the peer.
pub fn recv_with_fds(sock: impl AsFd) -> Result<Option<Received>, RingError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| RingError::io("recvmsg", e))?;
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
        || msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
    {
        return Err(RingError::BadMessage("message or descriptors truncated"));
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(msg.bytes);
    Ok(Some((buf, fds)))
}

/// The consumer's answer to a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// True when the device was accepted.
    pub accepted: bool,
    /// Why it was refused (or a note when accepted).
    pub message: String,
}

impl Ack {
    /// Serialises the acknowledgement.
    pub fn encode(&self) -> Vec<u8> {
        // At most 512 bytes, cut at a character boundary so the message stays UTF-8.
        let mut n = self.message.len().min(512);
        while !self.message.is_char_boundary(n) {
            n -= 1;
        }
        let msg = &self.message.as_bytes()[..n];
        let mut b = Vec::with_capacity(11 + msg.len());
        b.extend_from_slice(ACK_MAGIC);
        b.push(u8::from(!self.accepted));
        b.extend_from_slice(&(msg.len() as u16).to_le_bytes());
        b.extend_from_slice(msg);
        b
    }

    /// Parses an acknowledgement.
    pub fn decode(b: &[u8]) -> Result<Self, RingError> {
        let mut r = Reader(b);
        if r.take(8)? != ACK_MAGIC {
            return Err(RingError::BadMessage("not an acknowledgement"));
        }
        let accepted = r.u8()? == 0;
        let len = usize::from(r.u16()?);
        let message = String::from_utf8_lossy(r.take(len)?).into_owned();
        Ok(Ack { accepted, message })
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

    // Sockets and descriptors: not under Miri.
    #[cfg(not(miri))]
    #[test]
    fn fds_travel_with_the_message() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let bell = crate::Doorbell::new().unwrap();
        send_with_fds(&a, b"hi", &[bell.as_fd(), bell.as_fd()]).unwrap();
        let (msg, fds) = recv_with_fds(&b).unwrap().unwrap();
        assert_eq!(msg, b"hi");
        assert_eq!(fds.len(), 2);
        let received = crate::Doorbell::from_fd(fds.into_iter().next().unwrap()).unwrap();
        received.ring();
        assert!(bell.drain());
        drop(a);
        assert!(recv_with_fds(&b).unwrap().is_none());
    }

    #[test]
    fn ack_round_trips() {
        let a = Ack {
            accepted: false,
            message: "no".into(),
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn a_long_ack_message_is_cut_at_a_character_boundary() {
        // 511 ASCII bytes then a 3-byte character straddling the 512-byte limit.
        let message = format!("{}€ and more", "x".repeat(511));
        let a = Ack {
            accepted: false,
            message,
        };
        let back = Ack::decode(&a.encode()).unwrap();
        assert_eq!(back.message, "x".repeat(511));
        assert!(!back.message.contains('\u{fffd}'));
    }
}
