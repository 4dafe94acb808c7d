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
//!   the connection is live, each console stream may have sent but not yet had reported
//!   read the larger of four congestion windows and twice the client's delivery rate over
//!   four round trips (`rules::server::in_flight_bound`, at least
//!   `Limits::console_in_flight_with_audio`, at most 4 MiB; a gap counts its frame). The
//!   client reports what it read with `Consumed` frames on the console's own stream, so
//!   the bound is per stream (not quinn's connection-wide `send_window`, which the flood
//!   would fill ahead of audio) and covers queued plus in-flight bytes;
//! - a malformed or hostile client is closed with a code from the error table; other
//!   connections are separate tasks and carry on.
//!
//! Modules: this one (configuration, binding, the accept loop; the endpoint's stateless
//! reset key and connection ids come from transport-quic's `endpoint`), `connection` (a
//! client: its handshake, control stream and requests), `attach` (one console or audio
//! attachment stream), `wire` (the daemon's types as the wire's). Browsers (`--web`) are
//! served by the `web` module through the same client code.

mod attach;
mod connection;
mod flow;
mod mic;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transport_quic::authz::{AuthorizedClients, Peer, Rights};
use transport_quic::codec::{self, DeviceEntry, DeviceKind, Frame, Mode, StartAt, StatsEntry};
use transport_quic::io::{send_frame, FrameReader, ReadFrameError};
use transport_quic::proto::{Limits, RequestBudget};
use transport_quic::rules::audio as audio_rules;
use transport_quic::rules::server::{
    self, AttachRequest, AttachmentStream, ConsoleAction, ConsoleRules, ControlRequest, Handshake,
    Welcome,
};
use transport_quic::rules::{authorize_attach, DeviceFacts, End, WriteLocks};
use transport_quic::tls::{self, ClientCa, Fingerprint, Identity};
use transport_quic::{ErrorCode, QuicErrorCode};

use crate::device::{lock, DeviceStats};
use crate::{DeviceKey, Handle, Item};

use attach::*;
pub(crate) use connection::close_reason;
pub(crate) use connection::serve_client;
use connection::*;
pub use wire::wire_stats;
use wire::*;

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

pub(crate) struct Shared {
    pub(crate) handle: Handle,
    /// The authorization file's rules (the local grants are the handle's).
    access: AuthorizedClients,
    client_ca: Option<ClientCa>,
    pub(crate) limits: Limits,
    /// Console → who holds its write lock.
    writers: Mutex<WriteLocks<DeviceKey>>,
    /// Connections open, in total and per client identity.
    connections: Mutex<server::Connections<Option<Fingerprint>>>,
    /// The browser client (`--web`), when enabled.
    pub(crate) web: Option<Arc<crate::web::WebState>>,
}

impl Shared {
    /// Everything `peer` may do with `vm/device`: the file's rules and the local grants.
    fn rights(&self, peer: &Peer, vm: &str, device: &str) -> Rights {
        self.access
            .rights(peer, vm, device)
            .union(self.handle.local_grants().rights(peer, vm, device))
    }

    /// Whether some rule names `peer`.
    fn admits(&self, peer: &Peer) -> bool {
        self.access.admits(peer) || self.handle.local_grants().admits(peer)
    }
}

/// A running QUIC server.
#[derive(Debug)]
pub struct NetServer {
    endpoint: quinn::Endpoint,
    fingerprint: Fingerprint,
    task: tokio::task::JoinHandle<()>,
    /// The HTTPS page server (`--web`).
    page: Option<tokio::task::JoinHandle<()>>,
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
    access: AuthorizedClients,
    client_ca: Option<ClientCa>,
    limits: Limits,
    web: Option<(Arc<crate::web::WebState>, std::net::TcpListener)>,
}

impl BoundServer {
    /// Creates or loads the identity, checks the authorization setup and binds. Must be
    /// called within a tokio runtime. Connections that arrive before [`BoundServer::serve`]
    /// wait in the endpoint.
    pub fn bind(cfg: NetConfig) -> Result<BoundServer, NetError> {
        Self::bind_with_web(cfg, None)
    }

    /// [`BoundServer::bind`], and with `web` the browser client too: WebTransport (ALPN
    /// `h3`) on the same QUIC endpoint and the page over HTTPS on the TCP port of the same
    /// number.
    pub fn bind_with_web(
        cfg: NetConfig,
        web: Option<crate::web::WebConfig>,
    ) -> Result<BoundServer, NetError> {
        // Only a file that is certainly absent means "no file": one that cannot be looked
        // at or read (permissions, a dangling symlink, a directory) stops the server.
        let access = match std::fs::symlink_metadata(&cfg.authorized_clients) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AuthorizedClients::default(),
            _ => AuthorizedClients::load(&cfg.authorized_clients)?,
        };
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
        let server_cfg = match &web {
            Some(w) => tls::web::server_config_with_web(&identity, &cfg.limits, w.certs.clone())?,
            None => tls::server_config(&identity, &cfg.limits)?,
        };
        let bind_err = |source| NetError::Bind {
            addr: cfg.listen,
            source,
        };
        let (socket, web) = match web {
            Some(w) => {
                let (socket, listener) = crate::web::bind_same_port(cfg.listen)
                    .map_err(|(addr, source)| NetError::Bind { addr, source })?;
                let port = socket.local_addr().map_err(bind_err)?.port();
                let state = Arc::new(crate::web::WebState::new(w, port));
                (socket, Some((state, listener)))
            }
            None => (
                transport_quic::endpoint::udp_socket(cfg.listen).map_err(bind_err)?,
                None,
            ),
        };
        let endpoint = quinn::Endpoint::new(
            transport_quic::endpoint::server_endpoint_config(&identity),
            Some(server_cfg),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let local = endpoint.local_addr().unwrap_or(cfg.listen);
        tracing::info!(
            listen = %local, %fingerprint, rules = access.len(),
            authorized_clients = %cfg.authorized_clients.display(),
            "serving the clients the authorization file and the local grants name"
        );
        Ok(BoundServer {
            endpoint,
            fingerprint,
            access,
            client_ca,
            limits: cfg.limits,
            web,
        })
    }

    /// Starts accepting connections for the devices of `handle`. Must be called within a
    /// tokio runtime.
    pub fn serve(self, handle: Handle) -> NetServer {
        let (web, page) = match self.web {
            Some((state, listener)) => (Some(state), Some(listener)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            handle,
            access: self.access,
            client_ca: self.client_ca,
            connections: Mutex::new(server::Connections::new(&self.limits)),
            limits: self.limits,
            writers: Mutex::new(WriteLocks::default()),
            web,
        });
        let page = match (page, &shared.web) {
            (Some(listener), Some(web)) => {
                crate::web::serve_page(web.clone(), &shared.handle, listener)
            }
            _ => None,
        };
        let ep = self.endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) if crate::web::is_h3(&conn) => {
                            crate::web::serve_session(shared, conn).await
                        }
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
            page,
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
        if let Some(page) = &self.page {
            page.abort();
        }
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
