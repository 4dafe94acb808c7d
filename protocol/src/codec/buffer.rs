//! Frames out of a byte stream (a QUIC stream delivers arbitrary pieces), audio datagrams,
//! and the fuzzing entry point.

use super::*;

/// Accumulates received bytes and yields whole frames. Holds at most one maximum-sized
/// frame plus one read's worth of bytes.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    max_payload: u32,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
            max_payload: MAX_FRAME_PAYLOAD,
        }
    }
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty buffer that refuses frames longer than `max_payload` (as soon as their
    /// header arrives, before their payload is buffered).
    pub fn with_max_payload(max_payload: u32) -> Self {
        FrameBuffer {
            max_payload: max_payload.min(MAX_FRAME_PAYLOAD),
            ..Self::default()
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 << 10 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let pending = &self.buf[self.start..];
        if pending.len() >= HEADER_LEN {
            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]);
            if len > self.max_payload {
                return Err(DecodeError::FrameTooLarge(len));
            }
        }
        match Frame::decode(pending)? {
            Some((f, used)) => {
                self.start += used;
                Ok(Some(f))
            }
            None => Ok(None),
        }
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Encodes an audio datagram: attachment stream id, then the encoded audio frame.
pub fn encode_datagram(stream_id: u64, audio: &AudioData) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::with_capacity(8 + HEADER_LEN + 32 + audio.pcm.len());
    v.put_u64(stream_id);
    Frame::Audio(audio.clone()).encode(&mut v)?;
    Ok(v)
}

/// Decodes an audio datagram into its stream id and period.
pub fn decode_datagram(d: &[u8]) -> Result<(u64, AudioData), DecodeError> {
    let r = &mut Reader(d);
    let id = r.u64()?;
    match Frame::decode(r.0)? {
        Some((Frame::Audio(a), _)) => Ok((id, a)),
        Some(_) => Err(DecodeError::InvalidValue("datagram frame")),
        None => Err(DecodeError::UnexpectedEnd),
    }
}
