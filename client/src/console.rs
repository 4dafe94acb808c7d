//! One console attachment: items in offset order, input, and reading progress reported
//! so the server keeps sending.

use crate::*;

/// What a console stream yields, in offset order without holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleItem {
    /// Output bytes at an absolute journal offset.
    Chunk {
        /// Journal offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Bytes the server cannot deliver.
    Gap {
        /// First missing offset.
        offset: u64,
        /// Bytes missing.
        len: u64,
        /// Why.
        reason: GapReason,
    },
}

/// Report reading progress after this many bytes, so the server keeps sending (it allows
/// a bounded amount unreported per stream).
pub(crate) const REPORT_EVERY: u64 = 16 << 10;

/// One attached console.
#[derive(Debug)]
pub struct ConsoleStream {
    pub(crate) addr: String,
    pub(crate) send: quinn::SendStream,
    pub(crate) reader: FrameReader,
    pub(crate) offset: u64,
    pub(crate) reported: u64,
    pub(crate) mode: Mode,
    /// An item read but not yet returned (its progress report is being written).
    pub(crate) ready: Option<ConsoleItem>,
    /// The rest of an encoded `Consumed` frame not yet written.
    pub(crate) report: Bytes,
}

impl ConsoleStream {
    /// The offset of the next item (save it to resume later with [`StartAt::Offset`]).
    pub fn offset(&self) -> u64 {
        self.offset
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
            let item = match self.reader.next().await {
                Ok(Some(Frame::Data { offset, bytes })) => ConsoleItem::Chunk { offset, bytes },
                Ok(Some(Frame::Gap {
                    offset,
                    len,
                    reason,
                })) => ConsoleItem::Gap {
                    offset,
                    len,
                    reason,
                },
                Ok(Some(Frame::Error { code, message, .. })) => return Err(refused(code, message)),
                Ok(Some(other)) => {
                    return Err(Error::Protocol(format!(
                        "{} on a console stream",
                        other.name()
                    )))
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(from_read(&self.addr, e)),
            };
            let (start, end) = match &item {
                ConsoleItem::Chunk { offset, bytes } => {
                    (*offset, offset.checked_add(bytes.len() as u64))
                }
                ConsoleItem::Gap { offset, len: 0, .. } => {
                    return Err(Error::Protocol(format!("an empty gap at offset {offset}")))
                }
                ConsoleItem::Gap { offset, len, .. } => (*offset, offset.checked_add(*len)),
            };
            let Some(end) = end else {
                return Err(Error::Protocol(format!(
                    "an item at offset {start} ends beyond the largest offset"
                )));
            };
            if start != self.offset {
                return Err(Error::Protocol(format!(
                    "expected offset {}, got {start}",
                    self.offset
                )));
            }
            self.offset = end;
            if self.offset - self.reported >= REPORT_EVERY && self.report.is_empty() {
                self.reported = self.offset;
                let f = Frame::Consumed {
                    offset: self.offset,
                };
                self.report = f
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

    /// Sends raw, possibly invalid protocol bytes on this stream (for testing servers).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| from_write(&self.addr, transport_quic::Error::Write(e)))
    }

    /// Ends the attachment (and releases the write lock).
    pub async fn detach(mut self) {
        let _ = send_frame(&mut self.send, &Frame::Detach).await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.send.stopped()).await;
    }
}
