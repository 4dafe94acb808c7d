//! One attachment stream: a console (journal replay, live bytes under the in-flight credit,
//! input under the write lock) or an audio subscription.

use super::*;

/// Releases a console's write lock when the writer's attachment ends.
pub(super) struct WriteLock {
    pub(super) shared: Arc<Shared>,
    pub(super) key: DeviceKey,
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        self.shared
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Counts a live audio attachment on its connection.
pub(super) struct AudioLive<'a>(&'a AtomicUsize);

impl Drop for AudioLive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

pub(super) async fn stream_error(send: &mut quinn::SendStream, code: ErrorCode, msg: String) {
    let _ = send_frame(send, &Frame::error(0, code, msg)).await;
    let _ = send.finish();
}

pub(super) async fn attachment(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut reader = FrameReader::new(recv);
    let first = tokio::time::timeout(c.shared.limits.handshake_timeout, reader.next()).await;
    let (vm, device, mode, start, datagrams) = match first {
        Ok(Ok(Some(Frame::Attach {
            vm,
            device,
            mode,
            start,
            datagrams,
        }))) => (vm, device, mode, start, datagrams),
        Ok(Ok(Some(other))) => {
            return close(
                &c.conn,
                ErrorCode::ProtocolViolation,
                &format!("a new stream must start with Attach, not {}", other.name()),
            )
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return c.refuse(e),
        Err(_) => {
            return close(
                &c.conn,
                ErrorCode::ProtocolViolation,
                "no Attach on a new stream in time",
            )
        }
    };
    let key = DeviceKey::new(vm.clone(), device.clone());
    let Some(info) = c.shared.handle.devices().into_iter().find(|d| d.key == key) else {
        return stream_error(
            &mut send,
            ErrorCode::NoSuchDevice,
            format!("no device {key}"),
        )
        .await;
    };
    // Audio is listened to: the read or spy right suffices.
    let allowed = match info.kind {
        Kind::Console => c.shared.access.allows(&c.peer, &vm, &device, mode),
        Kind::Audio => [Mode::Read, Mode::Spy]
            .into_iter()
            .any(|m| c.shared.access.allows(&c.peer, &vm, &device, m)),
    };
    if !allowed {
        tracing::warn!(peer = %c.peer, device = %key, mode = mode.name(), "attach refused");
        return stream_error(
            &mut send,
            ErrorCode::NotAuthorized,
            format!("{} may not {} {key}", c.peer, mode.name()),
        )
        .await;
    }
    match info.kind {
        Kind::Console => console(c, send, reader, key, mode, start).await,
        Kind::Audio => audio(c, send, reader, key, datagrams).await,
    }
}

pub(super) async fn console(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    key: DeviceKey,
    mode: Mode,
    start: StartAt,
) {
    let _lock = if mode == Mode::Write {
        let busy = {
            let mut writers = c.shared.writers.lock().unwrap_or_else(|e| e.into_inner());
            match writers.get(&key) {
                Some(holder) => Some(format!("{key} is already attached for writing by {holder}")),
                None => {
                    writers.insert(key.clone(), c.peer.to_string());
                    None
                }
            }
        };
        if let Some(msg) = busy {
            return stream_error(&mut send, ErrorCode::WriterBusy, msg).await;
        }
        Some(WriteLock {
            shared: c.shared.clone(),
            key: key.clone(),
        })
    } else {
        None
    };
    let start = match start {
        StartAt::Offset(n) => Start::Offset(n),
        StartAt::TailBytes(n) => Start::TailBytes(n),
        StartAt::Now => Start::Now,
    };
    let mut sub = match c.shared.handle.subscribe(&key, start) {
        Ok(s) => s,
        Err(e) => return stream_error(&mut send, ErrorCode::Internal, e.to_string()).await,
    };
    let _ = send.set_priority(0);
    let attached = Frame::Attached {
        kind: DeviceKind::Console,
        offset: sub.position(),
        audio: None,
    };
    if send_frame(&mut send, &attached).await.is_err() {
        return;
    }
    tracing::info!(peer = %c.peer, device = %key, mode = mode.name(), offset = sub.position(), "console attached");
    let limits = c.shared.limits.clone();
    let mut credit = ConsoleCredit::new(sub.position());
    let mut input: Vec<u8> = Vec::new();
    loop {
        let bound = if c.audio_live.load(Relaxed) > 0 {
            limits.console_in_flight_with_audio
        } else {
            limits.console_in_flight
        };
        let allowance = credit.allowance(bound);
        tokio::select! {
            frame = reader.next(), if input.len() < codec::MAX_INPUT => match frame {
                Ok(Some(Frame::Input { bytes })) => {
                    if mode != Mode::Write {
                        return stream_error(&mut send, ErrorCode::ReadOnly,
                            format!("this attachment to {key} is {}: input refused", mode.name())).await;
                    }
                    input.extend_from_slice(&bytes);
                }
                Ok(Some(Frame::Consumed { offset })) => {
                    if let Err(code) = credit.consumed(offset) {
                        return close(&c.conn, code, "Consumed beyond what was sent");
                    }
                }
                Ok(Some(Frame::Detach)) | Ok(None) => {
                    let _ = send.finish();
                    return;
                }
                Ok(Some(other)) => {
                    return close(&c.conn, ErrorCode::ProtocolViolation,
                        &format!("{} is not allowed on a console stream", other.name()));
                }
                Err(e) => return c.refuse(e),
            },
            ready = c.shared.handle.input_ready(&key), if !input.is_empty() => {
                if let Err(e) = ready {
                    return stream_error(&mut send, ErrorCode::NotAttached, e.to_string()).await;
                }
                match c.shared.handle.write_input(&key, &input) {
                    Ok(n) => { input.drain(..n); }
                    Err(e) => return stream_error(&mut send, ErrorCode::NotAttached, e.to_string()).await,
                }
            },
            item = sub.next(), if allowance > 0 => {
                let item = match item {
                    Ok(item) => item,
                    Err(crate::Error::Closed) => {
                        return stream_error(&mut send, ErrorCode::ShuttingDown, "ringcastd is stopping".into()).await;
                    }
                    Err(e) => return stream_error(&mut send, ErrorCode::Internal, e.to_string()).await,
                };
                let end = item.end();
                let sent = match item {
                    Item::Chunk(ch) => send_chunked(&mut send, ch.offset, ch.bytes, limits.console_chunk).await,
                    Item::Gap(g) => send_frame(&mut send, &Frame::Gap {
                        offset: g.offset,
                        len: g.len,
                        reason: match g.reason {
                            crate::GapReason::Lost => codec::GapReason::Lost,
                            crate::GapReason::Retention => codec::GapReason::Retention,
                        },
                    }).await,
                };
                if sent.is_err() {
                    return;
                }
                credit.sent(end);
            },
            // The bound depends on whether audio is live: look again now and then.
            _ = tokio::time::sleep(Duration::from_millis(50)), if allowance == 0 => {}
        }
    }
}

pub(super) async fn send_chunked(
    send: &mut quinn::SendStream,
    mut offset: u64,
    mut bytes: Bytes,
    chunk: usize,
) -> Result<(), transport_quic::Error> {
    while !bytes.is_empty() {
        let piece = bytes.split_to(bytes.len().min(chunk.max(1)));
        let n = piece.len() as u64;
        // The header is encoded on its own and the bytes are handed to quinn as they are:
        // no copy into a frame buffer (quinn takes `Bytes` without copying).
        let header = data_header(offset, piece.len())?;
        send.write_all_chunks(&mut [header, piece])
            .await
            .map_err(transport_quic::Error::Write)?;
        offset += n;
    }
    Ok(())
}

/// The encoding of `Frame::Data { offset, bytes }` without its `len` data bytes: what
/// precedes them on the wire.
pub(super) fn data_header(offset: u64, len: usize) -> Result<Bytes, transport_quic::Error> {
    let mut h = Frame::Data {
        offset,
        bytes: Bytes::new(),
    }
    .to_bytes()
    .map_err(transport_quic::Error::Encode)?;
    let (Ok(n), Some(payload_len)) = (u32::try_from(len), h.len().checked_sub(codec::HEADER_LEN))
    else {
        return Err(transport_quic::Error::Protocol(
            "data frame too large".into(),
        ));
    };
    let total = u32::try_from(payload_len)
        .ok()
        .and_then(|p| p.checked_add(n))
        .filter(|&t| t <= codec::MAX_FRAME_PAYLOAD)
        .ok_or_else(|| transport_quic::Error::Protocol("data frame too large".into()))?;
    // Frame length after the type byte; the data length is the last field.
    h[1..codec::HEADER_LEN].copy_from_slice(&total.to_be_bytes());
    let at = h.len() - 4;
    h[at..].copy_from_slice(&n.to_be_bytes());
    Ok(Bytes::from(h))
}

pub(super) async fn audio(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    key: DeviceKey,
    datagrams: bool,
) {
    let mut sub = match c
        .shared
        .handle
        .subscribe_audio(&key, c.shared.limits.audio_queue)
    {
        Ok(s) => s,
        Err(e) => return stream_error(&mut send, ErrorCode::Internal, e.to_string()).await,
    };
    let _ = send.set_priority(10);
    let attached = Frame::Attached {
        kind: DeviceKind::Audio,
        offset: 0,
        audio: sub.format().map(wire_format),
    };
    if send_frame(&mut send, &attached).await.is_err() {
        return;
    }
    c.audio_live.fetch_add(1, Relaxed);
    let _live = AudioLive(&c.audio_live);
    let stream_id = send.id().index();
    tracing::info!(peer = %c.peer, device = %key, datagrams, "audio attached");
    loop {
        tokio::select! {
            frame = reader.next() => match frame {
                Ok(Some(Frame::Detach)) | Ok(None) => {
                    let _ = send.finish();
                    return;
                }
                Ok(Some(Frame::Input { .. })) => {
                    return stream_error(&mut send, ErrorCode::ReadOnly, format!("{key} is an audio output")).await;
                }
                Ok(Some(Frame::Consumed { .. })) => {}
                Ok(Some(other)) => {
                    return close(&c.conn, ErrorCode::ProtocolViolation,
                        &format!("{} is not allowed on an audio stream", other.name()));
                }
                Err(e) => return c.refuse(e),
            },
            period = sub.next() => {
                let p = match period {
                    Ok(p) => p,
                    // The VM went away: the live stream ends cleanly.
                    Err(sidecar_error @ crate::Error::NotAttached(_)) => {
                        tracing::info!(peer = %c.peer, device = %key, "{sidecar_error}; audio stream finished");
                        let _ = send.finish();
                        return;
                    }
                    Err(_) => {
                        return stream_error(&mut send, ErrorCode::ShuttingDown, "ringcastd is stopping".into()).await;
                    }
                };
                let data = codec::AudioData {
                    seq: p.seq,
                    timestamp_ns: p.timestamp_ns,
                    frames: p.frames,
                    skipped_before: p.skipped_before,
                    pcm: p.pcm,
                };
                if datagrams {
                    if let Ok(d) = codec::encode_datagram(stream_id, &data) {
                        if c.conn.max_datagram_size().is_some_and(|m| d.len() <= m)
                            && c.conn.send_datagram(Bytes::from(d)).is_ok()
                        {
                            continue;
                        }
                    }
                }
                if send_frame(&mut send, &Frame::Audio(data)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn a_data_header_followed_by_the_bytes_is_the_encoded_data_frame() {
        for (offset, len) in [(0u64, 1usize), (7, 100), (u64::MAX - 70_000, 65_536)] {
            let bytes = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let mut wire = data_header(offset, len).unwrap().to_vec();
            wire.extend_from_slice(&bytes);
            let frame = Frame::Data { offset, bytes };
            assert_eq!(wire, frame.to_bytes().unwrap());
            assert_eq!(Frame::decode(&wire).unwrap(), Some((frame, wire.len())));
        }
        assert!(data_header(0, codec::MAX_FRAME_PAYLOAD as usize).is_err());
    }
}
