//! Frames out of a byte stream (a QUIC stream delivers arbitrary pieces), audio datagrams,
//! and the fuzzing entry point.

use std::collections::VecDeque;

use super::*;

/// Accumulates received bytes and yields whole frames. Holds at most one maximum-sized
/// frame plus one read's worth of bytes.
///
/// Bytes pushed as [`Bytes`] ([`FrameBuffer::push_bytes`], what quinn hands out) are kept
/// as they came: a frame that lies within one of them is decoded without copying, its byte
/// fields sliced from it. With [`FrameBuffer::split_data`], `Data` frames come out in
/// pieces as their bytes arrive, each a slice of what was received (offsets advancing
/// piece by piece, with no holes between them), so a console's bytes are never copied on
/// their way in.
#[derive(Debug)]
pub struct FrameBuffer {
    /// Received bytes not yet decoded, in order.
    chunks: VecDeque<Bytes>,
    /// Their total length.
    pending: usize,
    max_payload: u32,
    split_data: bool,
    /// A `Data` frame being handed out in pieces: the next piece's offset, its bytes still
    /// to come, and the bytes after them to drop.
    data: Option<(u64, usize, usize)>,
    /// Bytes of the current frame still to drop (fields after a `Data` frame's bytes).
    skip: usize,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        FrameBuffer {
            chunks: VecDeque::new(),
            pending: 0,
            max_payload: MAX_FRAME_PAYLOAD,
            split_data: false,
            data: None,
            skip: 0,
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

    /// From now on, `Data` frames come out in pieces as their bytes arrive (see the type's
    /// description); every other frame still comes out whole.
    pub fn split_data(&mut self) {
        self.split_data = true;
    }

    /// Adds received bytes (copied).
    pub fn push(&mut self, bytes: &[u8]) {
        self.push_bytes(Bytes::copy_from_slice(bytes));
    }

    /// Adds received bytes, kept without a copy.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// The next whole frame (or, with [`FrameBuffer::split_data`], the next piece of a
    /// `Data` frame), `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        self.drop_skipped();
        if self.skip > 0 {
            return Ok(None);
        }
        if let Some((offset, left, trailing)) = self.data {
            let Some(front) = self.chunks.front_mut() else {
                return Ok(None);
            };
            let n = left.min(front.len());
            let bytes = front.split_to(n);
            self.consumed_front(n);
            if n < left {
                // The header checked that the frame's last offset fits.
                self.data = Some((offset + n as u64, left - n, trailing));
            } else {
                self.data = None;
                self.skip = trailing;
                self.drop_skipped();
            }
            return Ok(Some(Frame::Data { offset, bytes }));
        }
        let mut head = [0u8; DATA_HEADER_LEN];
        let have = self.peek(&mut head);
        if have < HEADER_LEN {
            return Ok(None);
        }
        let t = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > self.max_payload {
            return Err(DecodeError::FrameTooLarge(len));
        }
        if self.split_data && t == ty::DATA && len as usize >= DATA_HEADER_LEN - HEADER_LEN {
            if have < DATA_HEADER_LEN {
                return Ok(None);
            }
            return self.start_data(&head, len as usize);
        }
        let total = HEADER_LEN + len as usize;
        if self.pending < total {
            // Checked now as the whole-frame decode would: an unknown type fails at once.
            return match Frame::decode(&head[..HEADER_LEN]) {
                Err(e) => Err(e),
                Ok(_) => Ok(None),
            };
        }
        let frame = self.take(total);
        match Frame::decode_bytes(&frame)? {
            Some((f, _)) => Ok(Some(f)),
            None => Err(DecodeError::UnexpectedEnd),
        }
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether the buffer is between frames: nothing pending and no frame started.
    pub fn at_boundary(&self) -> bool {
        self.pending == 0 && self.data.is_none() && self.skip == 0
    }

    /// A `Data` frame of payload length `len` whose fixed fields are in `head`: checked as
    /// the whole-frame decode checks them, then handed out in pieces.
    fn start_data(
        &mut self,
        head: &[u8; DATA_HEADER_LEN],
        len: usize,
    ) -> Result<Option<Frame>, DecodeError> {
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&head[HEADER_LEN..HEADER_LEN + 8]);
        let offset = u64::from_be_bytes(offset);
        let count = u32::from_be_bytes([head[13], head[14], head[15], head[16]]) as usize;
        if count > MAX_FRAME_PAYLOAD as usize {
            return Err(DecodeError::FieldTooLong("data"));
        }
        let fixed = DATA_HEADER_LEN - HEADER_LEN;
        if count > len - fixed {
            return Err(DecodeError::UnexpectedEnd);
        }
        if offset.checked_add(count as u64).is_none() {
            return Err(DecodeError::InvalidValue("data offset"));
        }
        // The fixed fields have arrived (the caller saw them): dropped whole.
        self.skip = DATA_HEADER_LEN;
        self.drop_skipped();
        let trailing = len - fixed - count;
        if count == 0 {
            self.skip = trailing;
            self.drop_skipped();
            return Ok(Some(Frame::Data {
                offset,
                bytes: Bytes::new(),
            }));
        }
        self.data = Some((offset, count, trailing));
        self.next_frame()
    }

    /// Copies the first bytes pending into `out`; how many there were.
    fn peek(&self, out: &mut [u8]) -> usize {
        let mut got = 0;
        for c in &self.chunks {
            let n = (out.len() - got).min(c.len());
            out[got..got + n].copy_from_slice(&c[..n]);
            got += n;
            if got == out.len() {
                break;
            }
        }
        got
    }

    /// The first `n` pending bytes (at most [`FrameBuffer::pending`]): a slice of the first
    /// chunk when it holds them, else gathered into one buffer.
    fn take(&mut self, n: usize) -> Bytes {
        if let Some(front) = self.chunks.front_mut() {
            if front.len() >= n {
                let b = front.split_to(n);
                self.consumed_front(n);
                return b;
            }
        }
        let mut out = bytes::BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let k = (n - out.len()).min(front.len());
            out.extend_from_slice(&front[..k]);
            let _ = front.split_to(k);
            self.consumed_front(k);
        }
        out.freeze()
    }

    /// Drops what [`FrameBuffer::skip`] says, as far as it has arrived.
    fn drop_skipped(&mut self) {
        while self.skip > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            let k = self.skip.min(front.len());
            let _ = front.split_to(k);
            self.skip -= k;
            self.consumed_front(k);
        }
    }

    /// `n` bytes were taken from the first chunk.
    fn consumed_front(&mut self, n: usize) {
        self.pending -= n;
        if self.chunks.front().is_some_and(Bytes::is_empty) {
            self.chunks.pop_front();
        }
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
    let r = &mut Reader(d, None);
    let id = r.u64()?;
    match Frame::decode(r.0)? {
        Some((Frame::Audio(a), _)) => Ok((id, a)),
        Some(_) => Err(DecodeError::InvalidValue("datagram frame")),
        None => Err(DecodeError::UnexpectedEnd),
    }
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
