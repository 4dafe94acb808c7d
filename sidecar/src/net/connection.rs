//! One client connection: who it is, its control stream (list, stats, requests under the
//! request budget) and the attachment streams it opens. The rules are
//! `protocol::rules::server`'s; this module drives them over quinn.

use super::*;

pub(super) fn close(conn: &quinn::Connection, code: ErrorCode, why: &str) {
    let mut reason = format!("{}: {why}", code.name());
    codec::truncate_text(&mut reason, 512);
    conn.close(code.varint(), reason.as_bytes());
}

pub(super) struct ClientConnection {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: quinn::Connection,
    pub(super) peer: Peer,
    pub(super) budget: Mutex<RequestBudget>,
    /// Audio attachments live on this connection; console streams watch it to pick their
    /// in-flight bound.
    pub(super) audio_live: tokio::sync::watch::Sender<usize>,
}

impl ClientConnection {
    /// Spends one request of the budget; over it, the connection is closed.
    pub(super) fn spend(&self) -> bool {
        let spent = lock(&self.budget).spend(Instant::now());
        match spent {
            Ok(()) => true,
            Err(end) => {
                tracing::warn!(peer = %self.peer, "request rate exceeded; closing");
                self.close_for(&end);
                false
            }
        }
    }

    /// Closes the connection for a frame that could not be read.
    pub(super) fn refuse(&self, e: ReadFrameError) {
        let (code, why) = match &e {
            ReadFrameError::Decode(d) => (d.code(), d.to_string()),
            ReadFrameError::Truncated => (ErrorCode::MalformedFrame, e.to_string()),
            ReadFrameError::Stalled(_) => (ErrorCode::ProtocolViolation, e.to_string()),
            ReadFrameError::Read(_) => return,
        };
        tracing::warn!(peer = %self.peer, code = code.name(), %why, "closing a client");
        close(&self.conn, code, &why);
    }

    fn close_for(&self, end: &End) {
        if let End::Close { code, reason }
        | End::RefuseAndClose {
            code,
            message: reason,
        } = end
        {
            close(&self.conn, *code, reason);
        }
    }

    /// Carries out how a stream ends.
    pub(super) async fn end(&self, send: &mut quinn::SendStream, end: End) {
        match &end {
            End::Finish => {
                let _ = send.finish();
            }
            End::Refuse { code, message } | End::RefuseAndClose { code, message } => {
                let _ = send_frame(send, &Frame::error(0, *code, message.clone())).await;
                let _ = send.finish();
                if matches!(end, End::RefuseAndClose { .. }) {
                    // Let the Error frame reach the client before the close does.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            End::Close { code, reason } => {
                tracing::warn!(peer = %self.peer, code = code.name(), %reason, "closing a client");
            }
        }
        self.close_for(&end);
    }
}

/// Uncounts a connection when it ends.
struct Counted {
    shared: Arc<Shared>,
    client: Option<Fingerprint>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        lock(&self.shared.connections).close(&self.client);
    }
}

pub(super) async fn serve_connection(shared: Arc<Shared>, conn: quinn::Connection) {
    let chain = conn.peer_identity().and_then(|b| {
        b.downcast::<Vec<quinn::rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let fingerprint = chain
        .as_ref()
        .and_then(|c| c.first())
        .map(|c| Fingerprint::of(c));
    let verified_cn = match (&shared.client_ca, &chain) {
        (Some(ca), Some(c)) => ca.verified_common_name(c),
        _ => None,
    };
    let peer = Peer {
        addr: conn.remote_address(),
        fingerprint,
        verified_cn,
    };
    if !shared.admits(&peer) {
        tracing::warn!(%peer, "refused: no authorization rule names this client");
        close(
            &conn,
            ErrorCode::NotAuthorized,
            &format!(
                "client {} is not authorized here; the host's admin can run: ringcastd authorize {}",
                peer.fingerprint
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "without a certificate".into()),
                peer.fingerprint
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "FINGERPRINT (`ringcast identity show` prints it)".into())
            ),
        );
        return;
    }
    let counted = lock(&shared.connections).open(&peer.fingerprint);
    if let Err(End::Close { code, reason }) = &counted {
        tracing::warn!(%peer, %reason, "connection refused");
        close(&conn, *code, reason);
        return;
    }
    let _counted = Counted {
        shared: shared.clone(),
        client: peer.fingerprint,
    };
    tracing::info!(%peer, "client connected");
    let limits = shared.limits.clone();
    let c = Arc::new(ClientConnection {
        budget: Mutex::new(RequestBudget::new(
            limits.requests_per_second,
            limits.request_burst,
        )),
        shared,
        conn,
        peer,
        audio_live: tokio::sync::watch::Sender::new(0),
    });
    let handshake = Handshake::new(Instant::now(), &limits);
    // The control stream and its handshake come first, before the Hello deadline.
    let control = async {
        let (mut send, recv) = c.conn.accept_bi().await.ok()?;
        let mut reader = FrameReader::from_client(recv, &limits);
        let frame = match reader.next().await {
            Ok(f) => f,
            Err(e) => {
                c.refuse(e);
                return None;
            }
        };
        match handshake.on_frame(frame) {
            Ok(Welcome {
                version,
                client_software,
            }) => {
                let welcome = Frame::Welcome {
                    version,
                    software: format!("ringcastd {}", env!("CARGO_PKG_VERSION")),
                };
                send_frame(&mut send, &welcome).await.ok()?;
                tracing::debug!(peer = %c.peer, software = %client_software, version, "handshake done");
                Some((send, reader))
            }
            Err(end) => {
                c.end(&mut send, end).await;
                None
            }
        }
    };
    let (send, reader) = match tokio::time::timeout_at(handshake.deadline().into(), control).await {
        Ok(Some(control)) => control,
        Ok(None) => return,
        Err(_) => {
            if let Some(end) = handshake.on_time(Instant::now()) {
                c.close_for(&end);
            }
            return;
        }
    };
    tokio::spawn(control_loop(c.clone(), send, reader));
    loop {
        match c.conn.accept_bi().await {
            Ok((send, recv)) => {
                if !c.spend() {
                    break;
                }
                tokio::spawn(attachment(c.clone(), send, recv));
            }
            Err(e) => {
                tracing::info!(peer = %c.peer, reason = %e, "client gone");
                break;
            }
        }
    }
}

pub(super) async fn control_loop(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
) {
    loop {
        let frame = match reader.next().await {
            Ok(f) => f,
            Err(e) => return c.refuse(e),
        };
        let reply = match server::control_request(frame) {
            Err(end) => return c.end(&mut send, end).await,
            Ok(_) if !c.spend() => return,
            Ok(ControlRequest::ListDevices { request }) => Frame::Devices {
                request,
                devices: visible(&c)
                    .into_iter()
                    .take(codec::MAX_DEVICES)
                    .map(|e| e.device)
                    .collect(),
            },
            Ok(ControlRequest::GetStats { request }) => Frame::Stats {
                request,
                devices: visible(&c)
                    .into_iter()
                    .take(codec::MAX_DEVICES)
                    .map(|mut e| {
                        if let Some(p) = &mut e.poisoned {
                            codec::truncate_text(p, codec::MAX_TEXT);
                        }
                        e
                    })
                    .collect(),
            },
        };
        // A reply too large for one frame (thousands of devices with long names) is
        // answered with an error saying so; the control stream carries on.
        let bytes = match reply.to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                let request = match &reply {
                    Frame::Devices { request, .. } | Frame::Stats { request, .. } => *request,
                    _ => 0,
                };
                tracing::warn!(peer = %c.peer, error = %e, "a device list does not fit in one frame");
                let refusal = Frame::error(
                    request,
                    ErrorCode::Internal,
                    format!(
                        "the answer does not fit in one frame ({e}): ringcastd has more devices \
                         (or longer names) than one reply can carry"
                    ),
                );
                match refusal.to_bytes() {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            }
        };
        if send.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// Devices the peer has some right on, with their counters (input counters only for
/// those it may write: they tell when someone types).
pub(super) fn visible(c: &ClientConnection) -> Vec<codec::StatsEntry> {
    let formats: HashMap<DeviceKey, _> = c
        .shared
        .handle
        .devices()
        .into_iter()
        .map(|d| (d.key, d.audio))
        .collect();
    c.shared
        .handle
        .stats()
        .into_iter()
        .filter(|s| s.key.vm.len() <= codec::MAX_NAME && s.key.device.len() <= codec::MAX_NAME)
        .filter_map(|s| {
            let rights = c.shared.rights(&c.peer, &s.key.vm, &s.key.device);
            let mut e = wire_stats(&s, formats.get(&s.key).copied().flatten());
            if !rights.write {
                e.input_bytes = 0;
            }
            rights.any().then_some(e)
        })
        .collect()
}
