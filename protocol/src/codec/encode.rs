//! Frames to bytes: every field checked against its limit before it is written.

use super::*;

impl Frame {
    /// Appends the encoded frame to `out`. Fails only when a field exceeds its limit.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let t = self.encode_payload(out)?;
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_FRAME_PAYLOAD as usize {
            out.truncate(start);
            return Err(EncodeError("frame payload"));
        }
        out[start] = t;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    pub(super) fn encode_payload(&self, o: &mut Vec<u8>) -> Result<u8, EncodeError> {
        Ok(match self {
            Frame::Hello {
                min_version,
                max_version,
                software,
            } => {
                o.put_u16(*min_version);
                o.put_u16(*max_version);
                put_str(o, software, MAX_TEXT, "software")?;
                ty::HELLO
            }
            Frame::Welcome { version, software } => {
                o.put_u16(*version);
                put_str(o, software, MAX_TEXT, "software")?;
                ty::WELCOME
            }
            Frame::ListDevices { request } => {
                o.put_u32(*request);
                ty::LIST
            }
            Frame::GetStats { request } => {
                o.put_u32(*request);
                ty::GET_STATS
            }
            Frame::Devices { request, devices } => {
                o.put_u32(*request);
                put_count(o, devices.len())?;
                for d in devices {
                    put_entry(o, d)?;
                }
                ty::DEVICES
            }
            Frame::Stats { request, devices } => {
                o.put_u32(*request);
                put_count(o, devices.len())?;
                for s in devices {
                    put_entry(o, &s.device)?;
                    for v in [
                        s.dropped_flight_recorder,
                        s.dropped_audio_overflow,
                        s.subscriber_gap_bytes,
                        s.subscriber_dropped_periods,
                        s.ring_fill,
                        s.ring_capacity,
                        s.input_bytes,
                        s.registrations,
                        s.spool_errors,
                    ] {
                        o.put_u64(v);
                    }
                    match &s.poisoned {
                        None => o.put_u8(0),
                        Some(p) => {
                            o.put_u8(1);
                            put_str(o, p, MAX_TEXT, "poisoned")?;
                        }
                    }
                }
                o.put_u8(STATS_EXTRA_COUNTERS);
                for s in devices {
                    o.put_u64(s.dropped_no_spool);
                }
                ty::STATS
            }
            Frame::Attach {
                vm,
                device,
                mode,
                start,
                datagrams,
                codecs,
            } => {
                put_str(o, vm, MAX_NAME, "vm")?;
                put_str(o, device, MAX_NAME, "device")?;
                o.put_u8(mode.to_u8());
                match start {
                    StartAt::Offset(n) => {
                        o.put_u8(0);
                        o.put_u64(*n);
                    }
                    StartAt::TailBytes(n) => {
                        o.put_u8(1);
                        o.put_u64(*n);
                    }
                    StartAt::Now => {
                        o.put_u8(2);
                        o.put_u64(0);
                    }
                }
                o.put_u8(u8::from(*datagrams));
                put_codecs(o, codecs)?;
                ty::ATTACH
            }
            Frame::Attached {
                kind,
                offset,
                audio,
                encoding,
            } => {
                o.put_u8(match kind {
                    DeviceKind::Console => 0,
                    DeviceKind::Audio => 1,
                });
                o.put_u64(*offset);
                put_audio_format(o, audio);
                put_encoding(o, encoding);
                ty::ATTACHED
            }
            Frame::Data { offset, bytes } => {
                o.put_u64(*offset);
                put_bytes(o, bytes, MAX_DATA, "data")?;
                ty::DATA
            }
            Frame::Gap {
                offset,
                len,
                reason,
            } => {
                o.put_u64(*offset);
                o.put_u64(*len);
                o.put_u8(match reason {
                    GapReason::Lost => 0,
                    GapReason::Retention => 1,
                });
                ty::GAP
            }
            Frame::Audio(a) => {
                o.put_u64(a.seq);
                o.put_u64(a.timestamp_ns);
                o.put_u32(a.frames);
                o.put_u64(a.skipped_before);
                put_bytes(o, &a.pcm, MAX_FRAME_PAYLOAD as usize - 32, "pcm")?;
                ty::AUDIO
            }
            Frame::Input { bytes } => {
                put_bytes(o, bytes, MAX_INPUT, "input")?;
                ty::INPUT
            }
            Frame::Consumed { offset } => {
                o.put_u64(*offset);
                ty::CONSUMED
            }
            Frame::Detach => ty::DETACH,
            Frame::Error {
                request,
                code,
                message,
            } => {
                o.put_u32(*request);
                o.put_u16(*code);
                put_str(o, message, MAX_TEXT, "message")?;
                ty::ERROR
            }
        })
    }
}

/// A field was too long to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is too long to encode")]
pub struct EncodeError(pub &'static str);

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_text(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

pub(super) fn put_str(
    o: &mut Vec<u8>,
    s: &str,
    max: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError(what));
    }
    o.put_u16(s.len() as u16);
    o.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Most bytes one [`Frame::Data`] carries (its payload is `offset: u64`, `len: u32`, bytes).
pub const MAX_DATA: usize = MAX_FRAME_PAYLOAD as usize - 12;

/// Length of [`data_frame_header`]'s output.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 12;

/// The encoding of `Frame::Data { offset, bytes }` up to its bytes: a sender writes this,
/// then the `len` bytes as they are, and the peer decodes one `Data` frame. It lets the
/// bytes go to the transport without being copied into a frame buffer.
pub fn data_frame_header(offset: u64, len: usize) -> Result<[u8; DATA_HEADER_LEN], EncodeError> {
    if len > MAX_DATA {
        return Err(EncodeError("data"));
    }
    let mut h = [0u8; DATA_HEADER_LEN];
    h[0] = ty::DATA;
    h[1..5].copy_from_slice(&(12 + len as u32).to_be_bytes());
    h[5..13].copy_from_slice(&offset.to_be_bytes());
    h[13..17].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(h)
}

pub(super) fn put_bytes(
    o: &mut Vec<u8>,
    b: &[u8],
    max: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    if b.len() > max {
        return Err(EncodeError(what));
    }
    o.put_u32(b.len() as u32);
    o.extend_from_slice(b);
    Ok(())
}

pub(super) fn put_count(o: &mut Vec<u8>, n: usize) -> Result<(), EncodeError> {
    if n > MAX_DEVICES {
        return Err(EncodeError("device list"));
    }
    o.put_u32(n as u32);
    Ok(())
}

pub(super) fn put_audio_format(o: &mut Vec<u8>, f: &Option<AudioFormat>) {
    match f {
        None => o.put_u8(0),
        Some(f) => {
            o.put_u8(1);
            o.put_u32(f.rate);
            o.put_u16(f.channels);
            o.put_u16(f.sample_format);
            o.put_u8(u8::from(f.big_endian));
        }
    }
}

pub(super) fn put_entry(o: &mut Vec<u8>, d: &DeviceEntry) -> Result<(), EncodeError> {
    put_str(o, &d.vm, MAX_NAME, "vm")?;
    put_str(o, &d.device, MAX_NAME, "device")?;
    o.put_u8(match d.kind {
        DeviceKind::Console => 0,
        DeviceKind::Audio => 1,
    });
    o.put_u8(match d.state {
        DeviceState::Attached => 0,
        DeviceState::Gone => 1,
        DeviceState::Poisoned => 2,
    });
    put_audio_format(o, &d.audio);
    o.put_u64(d.bytes);
    o.put_u64(d.periods);
    o.put_u64(d.journal_start);
    o.put_u64(d.journal_end);
    o.put_u32(d.subscribers);
    Ok(())
}
