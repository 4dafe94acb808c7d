//! One client connection: who it is, its control stream (list, stats, requests under the
//! request budget) and the attachment streams it opens.

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
    pub(super) audio_live: AtomicUsize,
}

impl ClientConnection {
    pub(super) fn spend(&self) -> bool {
        let ok = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(Instant::now());
        if !ok {
            tracing::warn!(peer = %self.peer, "request rate exceeded; closing");
            close(&self.conn, ErrorCode::RateLimited, "too many requests");
        }
        ok
    }

    pub(super) fn refuse(&self, e: ReadFrameError) {
        let (code, why) = match &e {
            ReadFrameError::Decode(d) => (d.code(), d.to_string()),
            ReadFrameError::Truncated => (ErrorCode::MalformedFrame, e.to_string()),
            ReadFrameError::Read(_) => return,
        };
        tracing::warn!(peer = %self.peer, code = code.name(), %why, "closing a client");
        close(&self.conn, code, &why);
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
    if !shared.access.admits(&peer) {
        tracing::warn!(%peer, "refused: not in the authorization file");
        close(
            &conn,
            ErrorCode::NotAuthorized,
            &format!(
                "client {} is not authorized here",
                peer.fingerprint
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "without a certificate".into())
            ),
        );
        return;
    }
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
        audio_live: AtomicUsize::new(0),
    });
    // The control stream and its handshake come first.
    let control = tokio::time::timeout(limits.handshake_timeout, async {
        let (mut send, recv) = c.conn.accept_bi().await.ok()?;
        let mut reader = FrameReader::new(recv);
        match reader.next().await {
            Ok(Some(Frame::Hello {
                min_version,
                max_version,
                software,
            })) => match proto::negotiate(min_version, max_version) {
                Ok(version) => {
                    let welcome = Frame::Welcome {
                        version,
                        software: format!("ringcastd {}", env!("CARGO_PKG_VERSION")),
                    };
                    send_frame(&mut send, &welcome).await.ok()?;
                    tracing::debug!(peer = %c.peer, %software, version, "handshake done");
                    Some((send, reader))
                }
                Err(code) => {
                    let msg = format!(
                        "client speaks {min_version}..={max_version}, server {}..={}",
                        proto::MIN_VERSION,
                        proto::MAX_VERSION
                    );
                    let _ = send_frame(&mut send, &Frame::error(0, code, msg.clone())).await;
                    let _ = send.finish();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    close(&c.conn, code, &msg);
                    None
                }
            },
            Ok(Some(other)) => {
                close(
                    &c.conn,
                    ErrorCode::ProtocolViolation,
                    &format!("expected Hello, got {}", other.name()),
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                c.refuse(e);
                None
            }
        }
    })
    .await;
    let Ok(Some((send, reader))) = control else {
        if !matches!(control, Ok(None)) {
            close(&c.conn, ErrorCode::ProtocolViolation, "no Hello in time");
        }
        return;
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
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => return c.refuse(e),
        };
        if !c.spend() {
            return;
        }
        let reply = match frame {
            Frame::ListDevices { request } => Frame::Devices {
                request,
                devices: visible(&c)
                    .into_iter()
                    .take(codec::MAX_DEVICES)
                    .map(|e| e.device)
                    .collect(),
            },
            Frame::GetStats { request } => Frame::Stats {
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
            other => {
                return close(
                    &c.conn,
                    ErrorCode::ProtocolViolation,
                    &format!("{} is not a control request", other.name()),
                )
            }
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

/// Devices the peer has some right on, with their counters.
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
        .filter(|s| {
            s.key.vm.len() <= codec::MAX_NAME
                && s.key.device.len() <= codec::MAX_NAME
                && c.shared.access.sees(&c.peer, &s.key.vm, &s.key.device)
        })
        .map(|s| wire_stats(&s, formats.get(&s.key).copied().flatten()))
        .collect()
}
