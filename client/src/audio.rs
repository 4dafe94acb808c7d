//! One audio output attachment: periods over the stream or as datagrams.

use crate::*;

/// One attached audio output.
#[derive(Debug)]
pub struct AudioStream {
    pub(crate) addr: String,
    pub(crate) _send: quinn::SendStream,
    pub(crate) reader: FrameReader,
    pub(crate) format: Option<AudioFormat>,
    pub(crate) encoding: AudioEncoding,
    pub(crate) datagrams: Option<mpsc::Receiver<AudioData>>,
    pub(crate) stream_done: bool,
}

impl AudioStream {
    /// The PCM format (None if the device has not registered since ringcastd started).
    pub fn format(&self) -> Option<AudioFormat> {
        self.format
    }

    /// What the periods carry: PCM in [`AudioStream::format`], or Opus packets.
    pub fn encoding(&self) -> AudioEncoding {
        self.encoding
    }

    /// The next period; `Ok(None)` when the server ended the attachment.
    pub async fn next(&mut self) -> Result<Option<AudioData>, Error> {
        loop {
            let from_stream = async {
                if self.stream_done {
                    std::future::pending().await
                } else {
                    self.reader.next().await
                }
            };
            let frame = match &mut self.datagrams {
                Some(rx) => tokio::select! {
                    d = rx.recv() => match d {
                        Some(a) => return Ok(Some(a)),
                        None => return Ok(None),
                    },
                    f = from_stream => f,
                },
                None => from_stream.await,
            };
            match frame.map_err(|e| from_read(&self.addr, e))? {
                None if self.datagrams.is_some() => self.stream_done = true,
                frame => return Ok(rules::client::audio_frame(frame)?),
            }
        }
    }
}
