//! One attachment stream: a console (journal replay, live bytes under the in-flight credit,
//! input under the write lock), an audio subscription, or a microphone (`mic`). The rules are
//! `protocol::rules::server`'s; this module drives them over quinn.

use super::*;

/// Releases a device's write lock (a console's writer, an audio device's microphone) when
/// its attachment ends.
pub(super) struct WriteLock {
    pub(super) shared: Arc<Shared>,
    pub(super) key: DeviceKey,
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        lock(&self.shared.writers).release(&self.key);
    }
}

/// Counts a live audio attachment on its connection.
pub(super) struct AudioLive<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> AudioLive<'a> {
    fn new(live: &'a tokio::sync::watch::Sender<usize>) -> Self {
        live.send_modify(|n| *n += 1);
        AudioLive(live)
    }
}

impl Drop for AudioLive<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

pub(super) async fn attachment(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut reader = FrameReader::from_client(recv, &c.shared.limits);
    let stream = AttachmentStream::new(Instant::now(), &c.shared.limits);
    let first = match tokio::time::timeout_at(stream.deadline().into(), reader.next()).await {
        Ok(Ok(frame)) => stream.on_first_frame(frame),
        Ok(Err(e)) => return c.refuse(e),
        Err(_) => Err(stream.on_time(Instant::now()).unwrap_or(End::Finish)),
    };
    let AttachRequest {
        vm,
        device,
        mode,
        start,
        datagrams,
        codecs,
    } = match first {
        Ok(request) => request,
        Err(end) => return c.end(&mut send, end).await,
    };
    let key = DeviceKey::new(vm.clone(), device.clone());
    let info = c.shared.handle.devices().into_iter().find(|d| d.key == key);
    let facts = info.as_ref().map(|d| DeviceFacts {
        kind: d.kind,
        monitor: d.monitor,
    });
    let rights = c.shared.rights(&c.peer, &vm, &device);
    let start = match authorize_attach(&key.to_string(), facts, rights, mode, start) {
        Ok(start) => start,
        Err(end) => {
            tracing::warn!(peer = %c.peer, device = %key, mode = mode.name(), %rights, "attach refused");
            return c.end(&mut send, end).await;
        }
    };
    let Some(info) = info else {
        return c.end(&mut send, End::Finish).await;
    };
    match info.kind {
        DeviceKind::Console => console(c, send, reader, key, mode, start).await,
        DeviceKind::Audio if mode == Mode::Write => {
            super::mic::mic(c, send, reader, key, &codecs).await
        }
        DeviceKind::Audio => audio(c, send, reader, key, datagrams, &codecs).await,
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
    let refuse = |code, message| End::Refuse { code, message };
    let _lock = if mode == Mode::Write {
        let busy = lock(&c.shared.writers)
            .acquire(key.clone(), c.peer.to_string())
            .err()
            .map(|holder| {
                tracing::info!(peer = %c.peer, device = %key, %holder, "write lock busy");
                format!("{key} is already attached for writing by another client")
            });
        if let Some(msg) = busy {
            return c.end(&mut send, refuse(ErrorCode::WriterBusy, msg)).await;
        }
        Some(WriteLock {
            shared: c.shared.clone(),
            key: key.clone(),
        })
    } else {
        None
    };
    // A writer types into the QEMU that was registered when it attached, never into one
    // that took the name later.
    let registered = c.shared.handle.registrations(&key).unwrap_or(0);
    let mut sub = match c.shared.handle.subscribe(&key, start) {
        Ok(s) => s,
        Err(e) => {
            return c
                .end(&mut send, refuse(ErrorCode::Internal, e.to_string()))
                .await
        }
    };
    let _ = send.set_priority(0);
    let attached = Frame::Attached {
        kind: DeviceKind::Console,
        offset: sub.position(),
        audio: None,
        encoding: codec::AudioEncoding::Pcm,
    };
    if send_frame(&mut send, &attached).await.is_err() {
        return;
    }
    tracing::info!(peer = %c.peer, device = %key, mode = mode.name(), offset = sub.position(), "console attached");
    let limits = c.shared.limits.clone();
    let mut rules = ConsoleRules::new(key.to_string(), mode, sub.position());
    let mut flow = super::flow::ConsoleFlow::new(c.conn.clone(), key.to_string(), sub.position());
    let mut audio_live = c.audio_live.subscribe();
    let mut input: Vec<u8> = Vec::new();
    loop {
        let audio = *audio_live.borrow_and_update() > 0;
        // The path as quinn sees it, and what this client has been taking: the bound
        // follows both (`in_flight_bound`), with audio live or not.
        let quic = c.conn.stats().path;
        let path = server::PathEstimate {
            window: quic.cwnd,
            rtt: quic.rtt,
            delivery_rate: flow.clock.rate(),
        };
        let bound = server::in_flight_bound(&limits, audio, path);
        let allowance = rules.allowance(bound);
        flow.turn(bound, allowance, path.window, path.rtt);
        tokio::select! {
            frame = reader.next(), if rules.reads_more(input.len()) => {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => return c.refuse(e),
                };
                let report = matches!(frame, Some(Frame::Consumed { .. }));
                match rules.on_frame(frame) {
                    ConsoleAction::Continue if report => {
                        flow.consumed(rules.consumed(), rules.delivered(), c.conn.rtt());
                    }
                    ConsoleAction::Continue => {}
                    ConsoleAction::Input(bytes) => input.extend_from_slice(&bytes),
                    ConsoleAction::End(end) => return c.end(&mut send, end).await,
                }
            },
            ready = c.shared.handle.input_ready(&key), if !input.is_empty() => {
                if let Err(e) = ready {
                    return c.end(&mut send, refuse(ErrorCode::NotAttached, e.to_string())).await;
                }
                if c.shared.handle.registrations(&key).unwrap_or(0) != registered {
                    let why = format!("{key} registered again since this attachment began (its QEMU restarted or reconnected): attach again to type into it");
                    return c.end(&mut send, refuse(ErrorCode::NotAttached, why)).await;
                }
                match c.shared.handle.write_input(&key, &input) {
                    Ok(n) => { input.drain(..n); }
                    Err(e) => return c.end(&mut send, refuse(ErrorCode::NotAttached, e.to_string())).await,
                }
            },
            item = sub.next(), if allowance > 0 => {
                let item = match item {
                    Ok(item) => item,
                    Err(crate::Error::Closed) => {
                        return c.end(&mut send, refuse(ErrorCode::ShuttingDown, "ringcastd is stopping".into())).await;
                    }
                    Err(e) => return c.end(&mut send, refuse(ErrorCode::Internal, e.to_string())).await,
                };
                let end = item.end();
                let writing = Instant::now();
                let sent = match item {
                    Item::Chunk(ch) => send_chunked(&mut send, ch.offset, ch.bytes, limits.console_chunk).await,
                    Item::Gap(g) => {
                        rules.skipped(g.offset, g.len);
                        send_frame(&mut send, &Frame::Gap {
                            offset: g.offset,
                            len: g.len,
                            reason: g.reason,
                        }).await
                    }
                };
                if sent.is_err() {
                    return;
                }
                rules.sent(end);
                flow.sent(end, writing.elapsed());
            },
            // Audio started or stopped on this connection: the bound changes.
            changed = audio_live.changed() => {
                if changed.is_err() {
                    return;
                }
            }
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
        let header =
            codec::data_frame_header(offset, piece.len()).map_err(transport_quic::Error::Encode)?;
        send.write_all_chunks(&mut [Bytes::copy_from_slice(&header), piece])
            .await
            .map_err(transport_quic::Error::Write)?;
        offset += n;
    }
    Ok(())
}

pub(super) async fn audio(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    key: DeviceKey,
    datagrams: bool,
    codecs: &[codec::AudioCodec],
) {
    let handle = &c.shared.handle;
    let queue = c.shared.limits.audio_queue;
    // The codec: the first offered that the device's audio allows (PCM when none does).
    let subscribed = match audio_rules::choose(codecs, handle.opus_params(&key)) {
        codec::AudioEncoding::Opus(_) => match handle.subscribe_opus(&key, queue) {
            Err(crate::Error::NoOpus(_)) => handle.subscribe_audio(&key, queue),
            other => other,
        },
        codec::AudioEncoding::Pcm => handle.subscribe_audio(&key, queue),
    };
    let mut sub = match subscribed {
        Ok(s) => s,
        Err(e) => {
            let end = End::Refuse {
                code: ErrorCode::Internal,
                message: e.to_string(),
            };
            return c.end(&mut send, end).await;
        }
    };
    let _ = send.set_priority(10);
    let attached = Frame::Attached {
        kind: DeviceKind::Audio,
        offset: 0,
        audio: sub.format().map(wire_format),
        encoding: sub
            .opus()
            .map_or(codec::AudioEncoding::Pcm, codec::AudioEncoding::Opus),
    };
    if send_frame(&mut send, &attached).await.is_err() {
        return;
    }
    let _live = AudioLive::new(&c.audio_live);
    let what = key.to_string();
    let stream_id = send.id().index();
    tracing::info!(peer = %c.peer, device = %key, datagrams, codec = ?sub.opus(), "audio attached");
    loop {
        tokio::select! {
            frame = reader.next() => {
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => return c.refuse(e),
                };
                if let Some(end) = server::audio_frame(&what, frame) {
                    return c.end(&mut send, end).await;
                }
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
                        let end = End::Refuse { code: ErrorCode::ShuttingDown, message: "ringcastd is stopping".into() };
                        return c.end(&mut send, end).await;
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
                        if c.send_datagram(d) {
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
