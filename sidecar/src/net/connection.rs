//! One client connection: who it is, its control stream (list, stats, requests under the
//! request budget) and the attachment streams it opens. The rules are
//! `protocol::rules::server`'s; this module drives them over quinn.

use super::*;

pub(super) fn close(conn: &quinn::Connection, code: ErrorCode, why: &str) {
    conn.close(code.varint(), close_reason(code, why).as_bytes());
}

/// The reason text a connection or session is closed with: the code's name and why.
pub(crate) fn close_reason(code: ErrorCode, why: &str) -> String {
    let mut reason = format!("{}: {why}", code.name());
    codec::truncate_text(&mut reason, 512);
    reason
}

pub(super) struct ClientConnection {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: quinn::Connection,
    pub(super) peer: Peer,
    pub(super) budget: Mutex<RequestBudget>,
    /// Audio attachments live on this connection; console streams watch it to pick their
    /// in-flight bound.
    pub(super) audio_live: tokio::sync::watch::Sender<usize>,
    /// The WebTransport session, when the client is a browser (its streams carry a header,
    /// its datagrams a session prefix, and it is closed with a code the page can read).
    pub(super) web: Option<crate::web::WebStreams>,
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
        self.close(code, &why);
    }

    /// Closes the connection (a browser's: its WebTransport session) with `code`.
    pub(super) fn close(&self, code: ErrorCode, why: &str) {
        match &self.web {
            Some(web) => web.close(code, why),
            None => close(&self.conn, code, why),
        }
    }

    /// The next attachment stream the client opens (a browser's with its header read).
    async fn accept_bi(&self) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let (send, recv) = self.conn.accept_bi().await.map_err(|e| e.to_string())?;
        match &self.web {
            Some(web) => web.stream(send, recv, &self.shared.limits).await,
            None => Ok((send, recv)),
        }
    }

    /// Sends an audio datagram if it fits; false when it must go on the stream instead.
    pub(super) fn send_datagram(&self, d: Vec<u8>) -> bool {
        match &self.web {
            Some(web) => web.send_datagram(d),
            None => {
                let max = self.conn.max_datagram_size();
                if max.is_none_or(|m| d.len() > m) {
                    tracing::debug!(peer = %self.peer, len = d.len(), ?max, "datagram too large; on the stream instead");
                    return false;
                }
                match self.conn.send_datagram(Bytes::from(d)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "datagram not sent; on the stream instead");
                        false
                    }
                }
            }
        }
    }

    fn close_for(&self, end: &End) {
        if let End::Close { code, reason }
        | End::RefuseAndClose {
            code,
            message: reason,
        } = end
        {
            self.close(*code, reason);
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
    serve_client(shared, conn, peer, None).await
}

/// Serves a client known as `peer`: the QUIC client's certificate, or the identity a
/// browser's WebTransport session was minted for (`web`). The same rules either way.
pub(crate) async fn serve_client(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    peer: Peer,
    web: Option<crate::web::WebStreams>,
) {
    let closer = |code: ErrorCode, why: &str| match &web {
        Some(w) => w.close(code, why),
        None => close(&conn, code, why),
    };
    if !shared.admits(&peer) {
        tracing::warn!(%peer, "refused: no authorization rule names this client");
        closer(
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
        closer(*code, reason);
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
        web,
    });
    let handshake = Handshake::new(Instant::now(), &limits);
    // The control stream and its handshake come first, before the Hello deadline.
    let control = async {
        let (mut send, recv) = c.accept_bi().await.ok()?;
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
                let c = c.clone();
                tokio::spawn(async move {
                    // A browser's stream begins with its WebTransport header.
                    let stream = match &c.web {
                        Some(web) => web.stream(send, recv, &c.shared.limits).await,
                        None => Ok((send, recv)),
                    };
                    match stream {
                        Ok((send, recv)) => attachment(c, send, recv).await,
                        Err(why) => tracing::info!(peer = %c.peer, %why, "stream dropped"),
                    }
                });
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
