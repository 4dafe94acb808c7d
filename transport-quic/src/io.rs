//! The thin async shell: frames over quinn streams.

use crate::codec::{DecodeError, Frame, FrameBuffer};
use crate::Error;

/// Reads whole frames from a QUIC receive stream, never buffering more than one
/// maximum-sized frame plus one read.
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    buf: FrameBuffer,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// The bytes are not a valid frame.
    #[error("{0}")]
    Decode(DecodeError),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    /// The stream failed (reset, connection lost).
    #[error("{0}")]
    Read(#[from] quinn::ReadError),
}

impl FrameReader {
    /// Frames from `recv`.
    pub fn new(recv: quinn::RecvStream) -> Self {
        FrameReader {
            recv,
            buf: FrameBuffer::new(),
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadFrameError> {
        loop {
            if let Some(f) = self.buf.next_frame().map_err(ReadFrameError::Decode)? {
                return Ok(Some(f));
            }
            match self.recv.read_chunk(64 << 10, true).await? {
                Some(chunk) => self.buf.push(&chunk.bytes),
                None if self.buf.pending() == 0 => return Ok(None),
                None => return Err(ReadFrameError::Truncated),
            }
        }
    }

    /// The underlying stream (to stop it with an error code).
    pub fn stream(&mut self) -> &mut quinn::RecvStream {
        &mut self.recv
    }
}

/// Encodes and writes one frame.
pub async fn send_frame(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), Error> {
    let bytes = frame.to_bytes().map_err(Error::Encode)?;
    send.write_all(&bytes).await.map_err(Error::Write)
}
