//! The QUIC server: serves the [`Handle`]'s devices to ringcast clients over
//! `transport_quic`'s protocol, on a tokio runtime.
//!
//! One task per connection, one per attachment stream. Rules enforced here:
//! - who may connect and do what: the authorization file, or loopback-only without it;
//! - one writer per console: a second `write` attach is refused with `WRITER_BUSY` naming
//!   the holder; `read` and `spy` never take the lock and cannot send input (`READ_ONLY`);
//! - resume: an attach at `Offset(n)` gets exactly the bytes from `n`, or a gap frame for
//!   what the journal no longer has;
//! - per client: QUIC caps concurrent streams (`Limits::max_streams`), a token bucket caps
//!   requests (`RATE_LIMITED`), frames are bounded by the codec, console data in flight by
//!   per-stream credit, audio by a bounded subscription queue;
//! - priorities: audio streams send at priority 10, consoles at 0; while any audio stream of
//!   the connection is live, each console stream may have at most
//!   `Limits::console_in_flight_with_audio` bytes sent but not yet read by the client. The
//!   client reports what it read with `Consumed` frames on the console's own stream, so
//!   the bound is per stream (not quinn's connection-wide `send_window`, which the flood
//!   would fill ahead of audio) and covers queued plus in-flight bytes;
//! - a malformed or hostile client is closed with a code from the error table; other
//!   connections are separate tasks and carry on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transport_quic::authz::{Access, AuthorizedClients, Peer};
use transport_quic::codec::{
    self, DeviceEntry, DeviceKind, DeviceState, Frame, Mode, StartAt, StatsEntry,
};
use transport_quic::io::{send_frame, FrameReader, ReadFrameError};
use transport_quic::proto::{self, ConsoleCredit, Limits, RequestBudget};
use transport_quic::tls::{self, ClientCa, Fingerprint, Identity};
use transport_quic::{ErrorCode, QuicErrorCode};

use crate::device::{Attachment, DeviceStats, Kind};
use crate::{DeviceKey, Handle, Item, Start};

/// How the network server is set up.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Where the server identity (`server.crt`, `server.key`) lives; created on first start.
    pub identity_dir: PathBuf,
    /// The authorization file; when it does not exist, only loopback clients are served.
    pub authorized_clients: PathBuf,
    /// A CA whose signature makes client certificate common names usable in the
    /// authorization file (`cn:NAME`).
    pub client_ca: Option<PathBuf>,
    /// Per-client limits.
    pub limits: Limits,
}

/// The default authorization file: `$XDG_CONFIG_HOME/ringcast/authorized_clients`, else
/// `/etc/ringcast/authorized_clients`.
pub fn default_authorized_clients() -> PathBuf {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("ringcast/authorized_clients"),
        _ => PathBuf::from("/etc/ringcast/authorized_clients"),
    }
}

/// Why the network server could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TLS, identity or authorization setup failed.
    #[error(transparent)]
    Transport(#[from] transport_quic::Error),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    handle: Handle,
    access: Access,
    client_ca: Option<ClientCa>,
    limits: Limits,
    /// Console → who holds its write lock.
    writers: Mutex<HashMap<DeviceKey, String>>,
}

/// A running QUIC server.
#[derive(Debug)]
pub struct NetServer {
    endpoint: quinn::Endpoint,
    fingerprint: Fingerprint,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("access", &self.access)
            .finish()
    }
}

/// A QUIC endpoint bound with its identity and authorization loaded, not yet serving:
/// everything that can fail at startup has been done.
#[derive(Debug)]
pub struct BoundServer {
    endpoint: quinn::Endpoint,
    fingerprint: Fingerprint,
    access: Access,
    client_ca: Option<ClientCa>,
    limits: Limits,
}

impl BoundServer {
    /// Creates or loads the identity, checks the authorization setup and binds. Must be
    /// called within a tokio runtime. Connections that arrive before [`BoundServer::serve`]
    /// wait in the endpoint.
    pub fn bind(cfg: NetConfig) -> Result<BoundServer, NetError> {
        let access = if cfg.authorized_clients.exists() {
            Access::Rules(AuthorizedClients::load(&cfg.authorized_clients)?)
        } else {
            Access::LocalOpen
        };
        access.check_listen(cfg.listen, &cfg.authorized_clients)?;
        let host = hostname();
        let (identity, created) = Identity::load_or_create(
            &cfg.identity_dir,
            "server",
            &format!("ringcastd@{host}"),
            &[host.clone(), "localhost".into()],
        )?;
        let fingerprint = identity.fingerprint();
        if created {
            tracing::info!(%fingerprint, dir = %cfg.identity_dir.display(), "server identity created");
        }
        let client_ca = cfg.client_ca.as_deref().map(ClientCa::load).transpose()?;
        let server_cfg = tls::server_config(&identity, &cfg.limits)?;
        let bind_err = |source| NetError::Bind {
            addr: cfg.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(cfg.listen).map_err(bind_err)?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config(&identity),
            Some(server_cfg),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let local = endpoint.local_addr().unwrap_or(cfg.listen);
        match &access {
            Access::LocalOpen => tracing::info!(
                listen = %local, %fingerprint,
                "serving loopback clients without an authorization file ({} does not exist)",
                cfg.authorized_clients.display()
            ),
            Access::Rules(_) => tracing::info!(
                listen = %local, %fingerprint,
                authorized_clients = %cfg.authorized_clients.display(), "serving"
            ),
        }
        Ok(BoundServer {
            endpoint,
            fingerprint,
            access,
            client_ca,
            limits: cfg.limits,
        })
    }

    /// Starts accepting connections for the devices of `handle`. Must be called within a
    /// tokio runtime.
    pub fn serve(self, handle: Handle) -> NetServer {
        let shared = Arc::new(Shared {
            handle,
            access: self.access,
            client_ca: self.client_ca,
            limits: self.limits,
            writers: Mutex::new(HashMap::new()),
        });
        let ep = self.endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(shared, conn).await,
                        Err(e) => tracing::debug!(error = %e, "handshake failed"),
                    }
                });
            }
        });
        NetServer {
            endpoint: self.endpoint,
            fingerprint: self.fingerprint,
            task,
        }
    }
}

impl NetServer {
    /// [`BoundServer::bind`] then [`BoundServer::serve`]. Must be called within a tokio
    /// runtime.
    pub fn start(handle: Handle, cfg: NetConfig) -> Result<NetServer, NetError> {
        Ok(BoundServer::bind(cfg)?.serve(handle))
    }

    /// The bound address (with the actual port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// The server certificate's fingerprint (what clients pin).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Closes every connection with `SHUTTING_DOWN` and stops accepting.
    pub async fn shutdown(self) {
        self.endpoint.close(
            ErrorCode::ShuttingDown.varint(),
            ErrorCode::ShuttingDown.meaning().as_bytes(),
        );
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The endpoint setup. The key of QUIC stateless resets is derived from the server's
/// private key so that it survives a restart: a client whose ringcastd was killed and
/// started again learns at its next packet that its connection is gone (and resumes),
/// instead of waiting for the idle timeout. Connection IDs are random and not checked
/// against a per-process key: quinn's default generator keys them per start, so a new
/// process would drop the old connections' packets without a reset.
fn endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    use ring::hmac;
    let secret = hmac::Key::new(hmac::HMAC_SHA256, identity.key.secret_der());
    let derived = hmac::sign(&secret, b"ringcast/1 QUIC stateless reset key");
    let mut cfg = quinn::EndpointConfig::new(Arc::new(hmac::Key::new(
        hmac::HMAC_SHA256,
        derived.as_ref(),
    )));
    cfg.cid_generator(|| Box::new(RandomCids));
    cfg
}

struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut b = [0u8; 8];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
            // The system RNG does not fail on Linux; a fallback keeps IDs distinct anyway.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            b = NEXT.fetch_add(1, Relaxed).to_le_bytes();
        }
        quinn::ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn close(conn: &quinn::Connection, code: ErrorCode, why: &str) {
    let mut reason = format!("{}: {why}", code.name());
    codec::truncate_text(&mut reason, 512);
    conn.close(code.varint(), reason.as_bytes());
}

struct Conn {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    peer: Peer,
    budget: Mutex<RequestBudget>,
    audio_live: AtomicUsize,
}

impl Conn {
    fn spend(&self) -> bool {
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

    fn refuse(&self, e: ReadFrameError) {
        let (code, why) = match &e {
            ReadFrameError::Decode(d) => (d.code(), d.to_string()),
            ReadFrameError::Truncated => (ErrorCode::MalformedFrame, e.to_string()),
            ReadFrameError::Read(_) => return,
        };
        tracing::warn!(peer = %self.peer, code = code.name(), %why, "closing a client");
        close(&self.conn, code, &why);
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: quinn::Connection) {
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
    let c = Arc::new(Conn {
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

async fn control_loop(c: Arc<Conn>, mut send: quinn::SendStream, mut reader: FrameReader) {
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
        if send_frame(&mut send, &reply).await.is_err() {
            return;
        }
    }
}

/// Devices the peer has some right on, with their counters.
fn visible(c: &Conn) -> Vec<codec::StatsEntry> {
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

/// A device's counters as clients receive them (and as `ringcastd stats` prints them, so
/// the two show the same thing).
pub fn wire_stats(s: &DeviceStats, audio: Option<shm_ring::handover::AudioFormat>) -> StatsEntry {
    StatsEntry {
        device: DeviceEntry {
            vm: s.key.vm.clone(),
            device: s.key.device.clone(),
            kind: wire_kind(s.kind),
            state: match s.state {
                Attachment::Attached => DeviceState::Attached,
                Attachment::Gone => DeviceState::Gone,
                Attachment::Poisoned => DeviceState::Poisoned,
            },
            audio: audio.map(wire_format),
            bytes: s.bytes,
            periods: s.periods,
            journal_start: s.journal_start,
            journal_end: s.journal_end,
            subscribers: u32::try_from(s.subscribers).unwrap_or(u32::MAX),
        },
        dropped_flight_recorder: s.dropped_flight_recorder,
        dropped_audio_overflow: s.dropped_audio_overflow,
        subscriber_gap_bytes: s.subscriber_gap_bytes,
        subscriber_dropped_periods: s.subscriber_dropped_periods,
        ring_fill: s.ring_fill,
        ring_capacity: s.ring_capacity,
        input_bytes: s.input_bytes,
        registrations: s.registrations,
        spool_errors: s.spool_errors,
        dropped_no_spool: s.dropped_no_spool,
        poisoned: s.poisoned.clone(),
    }
}

fn wire_kind(k: Kind) -> DeviceKind {
    match k {
        Kind::Console => DeviceKind::Console,
        Kind::Audio => DeviceKind::Audio,
    }
}

fn wire_format(f: shm_ring::handover::AudioFormat) -> codec::AudioFormat {
    codec::AudioFormat {
        rate: f.frequency,
        channels: f.channels,
        sample_format: f.sample_format,
        big_endian: f.big_endian,
    }
}

/// Releases a console's write lock when the writer's attachment ends.
struct WriteLock {
    shared: Arc<Shared>,
    key: DeviceKey,
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
struct AudioLive<'a>(&'a AtomicUsize);

impl Drop for AudioLive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

async fn stream_error(send: &mut quinn::SendStream, code: ErrorCode, msg: String) {
    let _ = send_frame(send, &Frame::error(0, code, msg)).await;
    let _ = send.finish();
}

async fn attachment(c: Arc<Conn>, mut send: quinn::SendStream, recv: quinn::RecvStream) {
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

async fn console(
    c: Arc<Conn>,
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
                let Ok(item) = item else {
                    return stream_error(&mut send, ErrorCode::ShuttingDown, "ringcastd is stopping".into()).await;
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

async fn send_chunked(
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
fn data_header(offset: u64, len: usize) -> Result<Bytes, transport_quic::Error> {
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

async fn audio(
    c: Arc<Conn>,
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
    fn a_data_header_followed_by_the_bytes_is_the_encoded_data_frame() {
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
