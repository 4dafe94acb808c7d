//! One microphone attachment: sound sent to the guest's capture side (its sound card's
//! line-in): PCM in the format the guest records in, or numbered Opus packets.

use crate::*;

/// An audio device attached for sending it sound (`ringcast mic`). Holds the device's
/// write lock: one sender per device.
#[derive(Debug)]
pub struct MicStream {
    pub(crate) addr: String,
    pub(crate) send: quinn::SendStream,
    pub(crate) format: AudioFormat,
    pub(crate) encoding: AudioEncoding,
    /// How the server ended the attachment, once it did (read by a task of its own, so
    /// sending never waits for it).
    pub(crate) ended: tokio::sync::watch::Receiver<Option<Result<(), Ended>>>,
}

/// How the server ended a microphone attachment: its code (when it sent one) and message.
pub(crate) type Ended = (Option<ErrorCode>, String);

impl From<&Error> for (Option<ErrorCode>, String) {
    fn from(e: &Error) -> Self {
        match e {
            Error::Refused { code, message } => (*code, message.clone()),
            other => (None, other.to_string()),
        }
    }
}

impl MicStream {
    /// The format the guest records in: every byte sent must be PCM in it.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// What the server takes: PCM in [`MicStream::format`] ([`MicStream::send`]) or Opus
    /// packets ([`MicStream::send_opus`]).
    pub fn encoding(&self) -> AudioEncoding {
        self.encoding
    }

    /// Bytes per frame (all channels) of [`MicStream::format`].
    pub fn frame_bytes(&self) -> usize {
        let sample = self.format.sample_bytes().unwrap_or(1) as usize;
        sample * usize::from(self.format.channels)
    }

    /// Sends whole frames of PCM. Fails once the server ended the attachment (its refusal
    /// says why: the VM went away, another client took the microphone...).
    pub async fn send(&mut self, mut pcm: &[u8]) -> Result<(), Error> {
        let frame = self.frame_bytes().max(1);
        let chunk = MAX_INPUT / frame * frame;
        while !pcm.is_empty() {
            let n = pcm.len().min(chunk);
            self.send_input(&pcm[..n]).await?;
            pcm = &pcm[n..];
        }
        Ok(())
    }

    /// Sends Opus packet `seq` (when the server chose Opus): numbers are consecutive, a
    /// number left out is a packet the server rebuilds or conceals.
    pub async fn send_opus(&mut self, seq: u64, packet: &[u8]) -> Result<(), Error> {
        let mut bytes = Vec::with_capacity(protocol::audio::MIC_PACKET_HEADER + packet.len());
        protocol::audio::mic_packet(seq, packet, &mut bytes);
        self.send_input(&bytes).await
    }

    /// One `Input` frame. Fails once the server ended the attachment.
    async fn send_input(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(end) = self.server_end() {
            return Err(end);
        }
        let f = Frame::Input {
            bytes: Bytes::copy_from_slice(bytes),
        };
        send_frame(&mut self.send, &f).await.map_err(|e| {
            self.server_end()
                .unwrap_or_else(|| from_write(&self.addr, e))
        })
    }

    /// Waits until the server ends the attachment; its refusal, or `Ok` for a plain end.
    pub async fn ended(&mut self) -> Result<(), Error> {
        loop {
            if let Some(end) = self.server_end() {
                return Err(end);
            }
            if self.ended.borrow().is_some() {
                return Ok(());
            }
            if self.ended.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// The server's refusal, once it came.
    fn server_end(&self) -> Option<Error> {
        match self.ended.borrow().clone() {
            Some(Err((code, message))) => Some(Error::Refused { code, message }),
            _ => None,
        }
    }

    /// Ends the attachment (and releases the device's microphone).
    pub async fn detach(mut self) {
        let _ = send_frame(&mut self.send, &Frame::Detach).await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.send.stopped()).await;
    }
}
