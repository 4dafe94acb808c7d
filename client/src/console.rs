//! One console attachment: items in offset order, input, and reading progress reported
//! so the server keeps sending.

use crate::*;

pub use transport_quic::rules::client::ConsoleItem;

/// One attached console.
#[derive(Debug)]
pub struct ConsoleStream {
    pub(crate) addr: String,
    pub(crate) send: quinn::SendStream,
    pub(crate) reader: FrameReader,
    /// Items in order, progress reports when due.
    pub(crate) rules: rules::client::ConsoleReader,
    pub(crate) mode: Mode,
    /// An item read but not yet returned (its progress report is being written).
    pub(crate) ready: Option<ConsoleItem>,
    /// The rest of an encoded `Consumed` frame not yet written.
    pub(crate) report: Bytes,
}

impl ConsoleStream {
    /// The offset of the next item (save it to resume later with [`StartAt::Offset`]).
    pub fn offset(&self) -> u64 {
        self.rules.offset()
    }

    /// The mode it was attached with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The next item; `Ok(None)` when the server ended the attachment.
    ///
    /// Cancel-safe: dropping the future (in a `select!` with a timer, say) loses no item;
    /// the next call returns it.
    pub async fn next(&mut self) -> Result<Option<ConsoleItem>, Error> {
        if self.ready.is_none() {
            let frame = self
                .reader
                .next()
                .await
                .map_err(|e| from_read(&self.addr, e))?;
            let Some((item, report)) = self.rules.on_frame(frame)? else {
                return Ok(None);
            };
            if let Some(report) = report {
                self.report = report
                    .to_bytes()
                    .map_err(|e| Error::Transport(transport_quic::Error::Encode(e)))?
                    .into();
            }
            self.ready = Some(item);
        }
        // Each `write` either takes bytes or takes none, so a cancelled call resumes here.
        while !self.report.is_empty() {
            let n = self
                .send
                .write(&self.report)
                .await
                .map_err(|e| from_write(&self.addr, transport_quic::Error::Write(e)))?;
            let _ = self.report.split_to(n);
        }
        Ok(self.ready.take())
    }

    /// Sends input (write mode). The server applies the guest's backpressure.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        if self.mode != Mode::Write {
            return Err(Error::Refused {
                code: Some(ErrorCode::ReadOnly),
                message: format!("attached as {}", self.mode.name()),
            });
        }
        while !bytes.is_empty() {
            let n = bytes.len().min(MAX_INPUT);
            let f = Frame::Input {
                bytes: Bytes::copy_from_slice(&bytes[..n]),
            };
            send_frame(&mut self.send, &f)
                .await
                .map_err(|e| from_write(&self.addr, e))?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Ends the attachment (and releases the write lock).
    pub async fn detach(mut self) {
        let _ = send_frame(&mut self.send, &Frame::Detach).await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.send.stopped()).await;
    }
}
