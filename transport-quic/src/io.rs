//! The thin async shell: frames over quinn streams.

use std::time::Duration;

use crate::codec::{DecodeError, Frame, FrameBuffer};
use crate::proto::Limits;
use crate::Error;

/// Reads whole frames from a QUIC receive stream, never buffering more than one
/// maximum-sized frame plus one read.
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    buf: FrameBuffer,
    /// How long a started frame may take to complete.
    frame_deadline: Option<Duration>,
    /// When the frame now partly received started (kept across cancelled calls).
    partial_since: Option<tokio::time::Instant>,
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
    /// A frame was started and not completed in time.
    #[error("a frame was not completed within {0:?}")]
    Stalled(Duration),
}

impl FrameReader {
    /// Frames from `recv`.
    pub fn new(recv: quinn::RecvStream) -> Self {
        FrameReader {
            recv,
            buf: FrameBuffer::new(),
            frame_deadline: None,
            partial_since: None,
        }
    }

    /// Frames a client sends to a server: no longer than `limits.max_client_frame`, each
    /// complete within `limits.frame_deadline` of its first byte.
    pub fn from_client(recv: quinn::RecvStream, limits: &Limits) -> Self {
        FrameReader {
            recv,
            buf: FrameBuffer::with_max_payload(limits.max_client_frame),
            frame_deadline: Some(limits.frame_deadline),
            partial_since: None,
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadFrameError> {
        loop {
            if let Some(f) = self.buf.next_frame().map_err(ReadFrameError::Decode)? {
                self.partial_since = None;
                return Ok(Some(f));
            }
            let read = self.recv.read_chunk(64 << 10, true);
            let chunk = match (self.frame_deadline, self.buf.at_boundary()) {
                (Some(d), false) => {
                    let since = *self
                        .partial_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    tokio::time::timeout_at(since + d, read)
                        .await
                        .map_err(|_| ReadFrameError::Stalled(d))?
                }
                _ => read.await,
            };
            match chunk? {
                Some(chunk) => self.buf.push_bytes(chunk.bytes),
                None if self.buf.at_boundary() => return Ok(None),
                None => return Err(ReadFrameError::Truncated),
            }
        }
    }

    /// From now on, `Data` frames come out in pieces as their bytes arrive, each a slice of
    /// what quinn received (no copy); see [`FrameBuffer::split_data`].
    pub fn split_data(&mut self) {
        self.buf.split_data();
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
