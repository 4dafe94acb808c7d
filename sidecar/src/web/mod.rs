//! The browser client (`ringcastd --web`): the page over HTTPS on TCP and WebTransport
//! sessions over HTTP/3 on the QUIC endpoint `ringcast` clients use (ALPN `h3` beside
//! `ringcast/1`, one UDP socket, the same port number).
//!
//! A WebTransport session speaks the device protocol of `ringcast`: its first stream is the
//! control stream (Hello, then ListDevices/GetStats), each attachment its own stream,
//! audio periods datagrams. It is served by the network server's own client code (`net`),
//! with the same rules and rights: the session's identity is the one the operator minted
//! its link for (`auth`), so the authorization file and the local grants decide what it
//! may do, as they do for that identity's certificate.
//!
//! Differences from a QUIC client, all at the edges: each stream a browser opens begins
//! with the WebTransport header (`0x41`, session id), read here before the stream is
//! handed over; datagrams carry the session prefix; the session is closed with a
//! WebTransport close (code and reason the page can read) instead of a QUIC close. One
//! session per connection (browsers do not pool WebTransport sessions unless asked).
//!
//! Modules: `auth` (links and sessions), `page` (the HTTPS server: the page's files and
//! the link exchange), `bind` (the UDP and TCP sockets of one port number), `limit` (the
//! per-address limit on page and session requests).

pub mod auth;
mod bind;
pub mod limit;
mod page;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use transport_quic::authz::{Peer, Who};
use transport_quic::proto::Limits;
use transport_quic::tls::web::{WebCerts, H3_ALPN};
use transport_quic::ErrorCode;

use crate::net::Shared;

pub use bind::bind_same_port;
pub use page::serve_page;

/// How the browser client is set up.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The certificate browsers see (the admin's, or a short-lived one ringcastd makes).
    pub certs: Arc<WebCerts>,
    /// Where the page's files were read from (`web/build.sh` makes them).
    pub assets: PathBuf,
    /// The page's files, read once at start: serving them never waits on the file system
    /// (and a rebuild of the page while ringcastd runs does not mix two versions).
    files: Arc<Vec<(&'static str, Bytes)>>,
}

/// The page files ringcastd serves unless told otherwise: those `web/build.sh` builds in
/// this source tree.
pub fn default_assets() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dist"))
}

/// Files the page needs; ringcastd refuses `--web` without them.
pub const ASSETS: &[&str] = &[
    "index.html",
    "app.js",
    "audio.js",
    "feed.js",
    "net.js",
    "transport.js",
    "opus.js",
    "delay.js",
    "proto.js",
    "worklet.js",
    "ws.js",
    "style.css",
    "xterm.js",
    "xterm.css",
];

impl WebConfig {
    /// Reads the page's files from `assets`; the error says how to build them.
    pub fn new(certs: Arc<WebCerts>, assets: PathBuf) -> Result<Self, String> {
        let mut files = Vec::with_capacity(ASSETS.len());
        for f in ASSETS {
            let p = assets.join(f);
            let missing = |e: std::io::Error| {
                format!(
                    "the web page's file {} cannot be read ({e}): run web/build.sh (it needs \
                     npm) or pass --web-assets DIR",
                    p.display()
                )
            };
            if !p.is_file() {
                return Err(missing(std::io::ErrorKind::NotFound.into()));
            }
            files.push((*f, Bytes::from(std::fs::read(&p).map_err(missing)?)));
        }
        Ok(WebConfig {
            certs,
            assets,
            files: Arc::new(files),
        })
    }

    /// One of the page's files, by name.
    pub(crate) fn file(&self, name: &str) -> Option<(&'static str, Bytes)> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, b)| (*n, b.clone()))
    }
}

/// Keeps secrets out of the log at every level: the WebTransport library logs each
/// session's CONNECT request at debug level, URL and all, and the URL carries the session
/// token (`/session?token=…`), which opens a session to whoever reads it. Its requests are
/// logged here instead, without the token (`serve_session`).
pub fn redact_secrets(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    match "web_transport_quinn::connect=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// The browser client's running state.
#[derive(Debug)]
pub struct WebState {
    pub(crate) cfg: WebConfig,
    /// The port number (UDP for WebTransport, TCP for the page).
    pub(crate) port: u16,
}

impl WebState {
    pub(crate) fn new(cfg: WebConfig, port: u16) -> Self {
        WebState { cfg, port }
    }
}

/// Whether a QUIC connection chose HTTP/3 (a browser's WebTransport).
/// Lowercase hex of `bytes`: certificate hashes and tokens as links and the page spell them.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn is_h3(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == H3_ALPN)
}

/// The path of WebTransport sessions; the session token is its `token` parameter.
pub const SESSION_PATH: &str = "/session";

/// Accepts a browser's WebTransport session: the session token in its URL must be one the
/// link exchange gave out and not expired; then it is served like a QUIC client whose
/// certificate is the identity the link was minted for.
pub(crate) async fn serve_session(shared: Arc<Shared>, conn: quinn::Connection) {
    let addr = conn.remote_address();
    let handshake = shared.limits.handshake_timeout;
    let request = match tokio::time::timeout(
        handshake,
        web_transport_quinn::Request::accept(conn.clone()),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return tracing::info!(%addr, error = %e, "not a WebTransport session"),
        Err(_) => return tracing::info!(%addr, "WebTransport handshake not completed in time"),
    };
    tracing::debug!(%addr, path = request.url.path(), "WebTransport session requested");
    let auth = shared.handle.web_auth();
    if let Err(too) = auth.limit.check(addr.ip()) {
        tracing::warn!(%addr, why = %too, "WebTransport session refused");
        let _ = request
            .reject(web_transport_quinn::http::StatusCode::TOO_MANY_REQUESTS)
            .await;
        return;
    }
    let token = (request.url.path() == SESSION_PATH)
        .then(|| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .flatten();
    let Some((token, session)) = token.and_then(|t| auth.session(&t).map(|s| (t, s))) else {
        tracing::warn!(%addr, "WebTransport session refused: no valid session token");
        let _ = request
            .reject(web_transport_quinn::http::StatusCode::FORBIDDEN)
            .await;
        return;
    };
    let Ok(wt) = request.ok().await else { return };
    let peer = peer_of(addr, &session.who);
    tracing::info!(%peer, "browser session opened");
    let streams = WebStreams {
        session: wt.clone(),
    };
    // The session ends when its token does (expiry or logout).
    let watch = {
        let auth = auth.clone();
        let wt = streams.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(why) = auth.check_session(&token) {
                    wt.close(ErrorCode::NotAuthorized, &why);
                    return;
                }
            }
        })
    };
    crate::net::serve_client(shared, conn, peer, Some(streams)).await;
    watch.abort();
}

/// The peer a session stands for: the minted identity, at the browser's address.
fn peer_of(addr: std::net::SocketAddr, who: &Who) -> Peer {
    match who {
        Who::Fingerprint(fp) => Peer {
            addr,
            fingerprint: Some(*fp),
            verified_cn: None,
        },
        Who::Cn(cn) => Peer {
            addr,
            fingerprint: None,
            verified_cn: Some(cn.clone()),
        },
    }
}

/// A browser's WebTransport session, as the client code sees it.
#[derive(Debug, Clone)]
pub(crate) struct WebStreams {
    session: web_transport_quinn::Session,
}

/// `WEBTRANSPORT_STREAM`: the signal value that opens a browser's bidirectional stream.
const WEBTRANSPORT_STREAM: u64 = 0x41;

impl WebStreams {
    /// Closes the session with the error table's code and a reason the page shows.
    pub(crate) fn close(&self, code: ErrorCode, why: &str) {
        let reason = crate::net::close_reason(code, why);
        self.session
            .close(u32::from(code.code()), reason.as_bytes());
    }

    /// Reads a stream's WebTransport header (within the frame deadline); the rest of the
    /// stream is the device protocol.
    pub(crate) async fn stream(
        &self,
        send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        limits: &Limits,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let header = async {
            let signal = read_varint(&mut recv).await?;
            if signal != WEBTRANSPORT_STREAM {
                return Err(format!(
                    "a stream of type {signal:#x} is not a WebTransport stream"
                ));
            }
            read_varint(&mut recv).await.map(|_session| ())
        };
        match tokio::time::timeout(limits.frame_deadline, header).await {
            Ok(Ok(())) => Ok((send, recv)),
            Ok(Err(why)) => {
                let _ = recv.stop(quinn::VarInt::from_u32(0));
                Err(why)
            }
            Err(_) => Err("a stream's WebTransport header did not arrive in time".into()),
        }
    }

    /// Sends a datagram (with the session prefix) if it fits.
    pub(crate) fn send_datagram(&self, d: Vec<u8>) -> bool {
        d.len() <= self.session.max_datagram_size()
            && self.session.send_datagram(Bytes::from(d)).is_ok()
    }
}

/// A QUIC variable-length integer from the start of a stream.
async fn read_varint(recv: &mut quinn::RecvStream) -> Result<u64, String> {
    let mut first = [0u8; 1];
    recv.read_exact(&mut first)
        .await
        .map_err(|e| format!("a stream ended before its header: {e}"))?;
    let len = 1usize << (first[0] >> 6);
    let mut rest = [0u8; 7];
    recv.read_exact(&mut rest[..len - 1])
        .await
        .map_err(|e| format!("a stream ended in its header: {e}"))?;
    let mut v = u64::from(first[0] & 0x3f);
    for b in &rest[..len - 1] {
        v = (v << 8) | u64::from(*b);
    }
    Ok(v)
}
