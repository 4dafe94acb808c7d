//! Bytes to frames: the length is checked before anything is allocated, every read is
//! bounds-checked, trailing fields of later versions are ignored.

use super::*;

impl Frame {
    /// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// else the frame and how many bytes it used. Rejects an oversized length as soon as
    /// the header is complete.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        Frame::decode_in(buf, None)
    }

    /// [`Frame::decode`] of received bytes whose byte fields (console data, audio, input)
    /// come out as slices of `buf`, without a copy.
    pub fn decode_bytes(buf: &Bytes) -> Result<Option<(Frame, usize)>, DecodeError> {
        Frame::decode_in(buf, Some(buf))
    }

    fn decode_in(buf: &[u8], owner: Option<&Bytes>) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let t = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if len > MAX_FRAME_PAYLOAD {
            return Err(DecodeError::FrameTooLarge(len));
        }
        if !known_type(t) {
            return Err(DecodeError::UnknownFrameType(t));
        }
        let total = HEADER_LEN + len as usize;
        let Some(payload) = buf.get(HEADER_LEN..total) else {
            return Ok(None);
        };
        let frame = Frame::decode_payload_in(t, payload, owner)?;
        Ok(Some((frame, total)))
    }

    /// Decodes a frame of type `t` from exactly its payload. Bytes after the known fields
    /// are ignored (fields a later version appended).
    pub fn decode_payload(t: u8, payload: &[u8]) -> Result<Frame, DecodeError> {
        Frame::decode_payload_in(t, payload, None)
    }

    /// [`Frame::decode_payload`]; with `owner` (which holds `payload`), byte fields are
    /// slices of it instead of copies.
    fn decode_payload_in(
        t: u8,
        payload: &[u8],
        owner: Option<&Bytes>,
    ) -> Result<Frame, DecodeError> {
        let r = &mut Reader(payload, owner);
        Ok(match t {
            ty::HELLO => Frame::Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                software: r.str(MAX_TEXT, "software")?,
            },
            ty::WELCOME => Frame::Welcome {
                version: r.u16()?,
                software: r.str(MAX_TEXT, "software")?,
            },
            ty::LIST => Frame::ListDevices { request: r.u32()? },
            ty::GET_STATS => Frame::GetStats { request: r.u32()? },
            ty::DEVICES => {
                let request = r.u32()?;
                let n = r.count()?;
                let mut devices = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    devices.push(r.entry()?);
                }
                Frame::Devices { request, devices }
            }
            ty::STATS => {
                let request = r.u32()?;
                let n = r.count()?;
                let mut devices = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let device = r.entry()?;
                    devices.push(StatsEntry {
                        device,
                        dropped_flight_recorder: r.u64()?,
                        dropped_audio_overflow: r.u64()?,
                        subscriber_gap_bytes: r.u64()?,
                        subscriber_dropped_periods: r.u64()?,
                        ring_fill: r.u64()?,
                        ring_capacity: r.u64()?,
                        input_bytes: r.u64()?,
                        registrations: r.u64()?,
                        spool_errors: r.u64()?,
                        dropped_no_spool: 0,
                        poisoned: match r.u8()? {
                            0 => None,
                            1 => Some(r.str(MAX_TEXT, "poisoned")?),
                            _ => return Err(DecodeError::InvalidValue("poisoned")),
                        },
                    });
                }
                if !r.0.is_empty() {
                    let k = r.u8()?;
                    for d in devices.iter_mut() {
                        for i in 0..k {
                            let v = r.u64()?;
                            if i == 0 {
                                d.dropped_no_spool = v;
                            }
                        }
                    }
                }
                Frame::Stats { request, devices }
            }
            ty::ATTACH => Frame::Attach {
                vm: r.name("vm")?,
                device: r.name("device")?,
                mode: Mode::from_u8(r.u8()?)?,
                start: {
                    let tag = r.u8()?;
                    let n = r.u64()?;
                    match tag {
                        0 => StartAt::Offset(n),
                        1 => StartAt::TailBytes(n),
                        2 => StartAt::Now,
                        _ => return Err(DecodeError::InvalidValue("start")),
                    }
                },
                datagrams: r.bool("datagrams")?,
                codecs: r.codecs()?,
            },
            ty::ATTACHED => Frame::Attached {
                kind: match r.u8()? {
                    0 => DeviceKind::Console,
                    1 => DeviceKind::Audio,
                    _ => return Err(DecodeError::InvalidValue("kind")),
                },
                offset: r.u64()?,
                audio: r.audio_format()?,
                encoding: r.encoding()?,
            },
            ty::DATA => Frame::Data {
                offset: r.u64()?,
                bytes: r.bytes(MAX_FRAME_PAYLOAD as usize, "data")?,
            },
            ty::GAP => Frame::Gap {
                offset: r.u64()?,
                len: r.u64()?,
                reason: match r.u8()? {
                    0 => GapReason::Lost,
                    1 => GapReason::Retention,
                    _ => return Err(DecodeError::InvalidValue("reason")),
                },
            },
            ty::AUDIO => Frame::Audio(AudioData {
                seq: r.u64()?,
                timestamp_ns: r.u64()?,
                frames: r.u32()?,
                skipped_before: r.u64()?,
                pcm: r.bytes(MAX_FRAME_PAYLOAD as usize, "pcm")?,
            }),
            ty::INPUT => Frame::Input {
                bytes: r.bytes(MAX_INPUT, "input")?,
            },
            ty::CONSUMED => Frame::Consumed { offset: r.u64()? },
            ty::DETACH => Frame::Detach,
            ty::ERROR => Frame::Error {
                request: r.u32()?,
                code: r.u16()?,
                message: r.str(MAX_TEXT, "message")?,
            },
            other => return Err(DecodeError::UnknownFrameType(other)),
        })
    }
}

pub(super) fn known_type(t: u8) -> bool {
    matches!(
        t,
        ty::HELLO
            | ty::LIST
            | ty::GET_STATS
            | ty::ATTACH
            | ty::INPUT
            | ty::CONSUMED
            | ty::DETACH
            | ty::WELCOME
            | ty::DEVICES
            | ty::STATS
            | ty::ATTACHED
            | ty::DATA
            | ty::GAP
            | ty::AUDIO
            | ty::ERROR
    )
}

/// Reads fields from a payload; every read is bounds-checked. With an owner (the `Bytes`
/// the payload lies in), byte strings are slices of it rather than copies.
pub(super) struct Reader<'a>(pub(super) &'a [u8], pub(super) Option<&'a Bytes>);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(super) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue(what)),
        }
    }
    pub(super) fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > max {
            return Err(DecodeError::FieldTooLong(what));
        }
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8(what))
    }
    pub(super) fn name(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let s = self.str(MAX_NAME, what)?;
        if s.is_empty() {
            return Err(DecodeError::InvalidValue(what));
        }
        Ok(s)
    }
    pub(super) fn bytes(&mut self, max: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::FieldTooLong(what));
        }
        let b = self.take(n)?;
        Ok(match self.1 {
            Some(owner) => owner.slice_ref(b),
            None => Bytes::copy_from_slice(b),
        })
    }
    pub(super) fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        // Each entry takes far more than one byte: a count beyond the remaining payload
        // cannot be honest, and must not size an allocation.
        if n > MAX_DEVICES || n > self.0.len() {
            return Err(DecodeError::FieldTooLong("device list"));
        }
        Ok(n)
    }
    pub(super) fn audio_format(&mut self) -> Result<Option<AudioFormat>, DecodeError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(AudioFormat {
                rate: self.u32()?,
                channels: self.u16()?,
                sample_format: self.u16()?,
                big_endian: self.bool("big_endian")?,
            }),
            _ => return Err(DecodeError::InvalidValue("audio format")),
        })
    }
    pub(super) fn entry(&mut self) -> Result<DeviceEntry, DecodeError> {
        Ok(DeviceEntry {
            vm: self.name("vm")?,
            device: self.name("device")?,
            kind: match self.u8()? {
                0 => DeviceKind::Console,
                1 => DeviceKind::Audio,
                _ => return Err(DecodeError::InvalidValue("kind")),
            },
            state: match self.u8()? {
                0 => DeviceState::Attached,
                1 => DeviceState::Gone,
                2 => DeviceState::Poisoned,
                _ => return Err(DecodeError::InvalidValue("state")),
            },
            audio: self.audio_format()?,
            bytes: self.u64()?,
            periods: self.u64()?,
            journal_start: self.u64()?,
            journal_end: self.u64()?,
            subscribers: self.u32()?,
        })
    }
}
