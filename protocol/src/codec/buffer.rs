//! Frames out of a byte stream (a QUIC stream delivers arbitrary pieces), audio datagrams,
//! and the fuzzing entry point.

use super::*;

/// Accumulates received bytes and yields whole frames. Holds at most one maximum-sized
/// frame plus one read's worth of bytes.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
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
        match Frame::decode(&self.buf[self.start..])? {
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
