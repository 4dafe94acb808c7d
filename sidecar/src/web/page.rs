//! The page over HTTPS (TCP, the port number of the QUIC endpoint): its files, and the
//! small API the page uses before it opens WebTransport.
//!
//! - `GET /` and the page's files (`web/build.sh` builds them);
//! - `GET /api/certificate`: the SHA-256 hashes of the certificate WebTransport presents
//!   (for `serverCertificateHashes`; empty with the admin's certificate);
//! - `POST /api/session` (body: a link token): the link is used up and a session token
//!   returned, or 403 with the reason (used, expired, unknown) for the page to show;
//! - `POST /api/logout` (body: a session token): the session ends, and its WebTransport
//!   sessions are closed.
//!
//! Each address is held to a request budget (`limit`): over it, 429 with when to come back.
//!
//! One request per connection, small bounded requests, a deadline on each, and a bounded
//! number of connections where a new one takes the place of the oldest still reading its
//! request: a minimal HTTP/1.1 server, enough for the page and nothing else.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::WebAuth;
use super::limit::TooMany;
use super::WebState;
use crate::Handle;

/// Longest request head and body read.
const MAX_HEAD: usize = 8 << 10;
const MAX_BODY: usize = 1 << 10;
/// Time a connection may take from connecting to the end of its request (TLS handshake,
/// head, body), and then to write its answer.
const READ_DEADLINE: Duration = Duration::from_secs(5);
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Page connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves the page on `listener`; None (and a log line) if the listener is unusable.
pub fn serve_page(
    web: Arc<WebState>,
    handle: &Handle,
    listener: std::net::TcpListener,
) -> Option<tokio::task::JoinHandle<()>> {
    let auth = handle.web_auth();
    auth.set_serving(web.port, web.cfg.certs.clone());
    let tls = match transport_quic::tls::web::page_tls_config(web.cfg.certs.clone()) {
        Ok(t) => tokio_rustls::TlsAcceptor::from(Arc::new(t)),
        Err(e) => {
            tracing::error!(error = %e, "the web page cannot be served");
            return None;
        }
    };
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener));
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the web page cannot be served");
            return None;
        }
    };
    tracing::info!(
        port = web.port,
        certificate = if web.cfg.certs.self_signed() {
            "self-signed, short-lived"
        } else {
            "the admin's"
        },
        "serving browsers: the page over HTTPS (TCP) and WebTransport (UDP) on this port"
    );
    let slots = Arc::new(Slots::default());
    Some(tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a page connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some((id, evicted)) = slots.admit() else {
                tracing::debug!(%addr, "page connection refused: every slot is answering");
                continue;
            };
            let (tls, web, auth, slots) = (tls.clone(), web.clone(), auth.clone(), slots.clone());
            tokio::spawn(async move {
                let mut slot = Slot {
                    slots,
                    id,
                    answering: false,
                };
                let read = async {
                    let mut s = tls.accept(tcp).await.ok()?;
                    let req = read_request(&mut s).await?;
                    Some((s, req))
                };
                let (mut s, req) = tokio::select! {
                    _ = evicted => {
                        return tracing::debug!(%addr, "an idle page connection dropped for a new one");
                    }
                    r = tokio::time::timeout(READ_DEADLINE, read) => match r {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(_) => return tracing::debug!(%addr, "a page request took too long"),
                    },
                };
                // Dropped for a newer one in the same wake-up as its request came: it goes,
                // as it would have a moment earlier (the slots are never over the limit).
                if !slot.answering() {
                    return tracing::debug!(%addr, "an idle page connection dropped for a new one");
                }
                let resp = match auth.limit.check(addr.ip()) {
                    Ok(()) => answer(&web, &auth, &req),
                    Err(too) => {
                        tracing::warn!(%addr, why = %too, "page request refused");
                        too_many(too)
                    }
                };
                let written = tokio::time::timeout(WRITE_DEADLINE, async {
                    s.write_all(&resp).await.ok()?;
                    s.shutdown().await.ok()
                })
                .await;
                if written.is_err() {
                    tracing::debug!(%addr, "a page answer took too long to send");
                }
            });
        }
    }))
}

/// The page server's connections: those still reading their request (oldest first, each
/// with the means to drop it) and those answering. When all are taken, a new connection
/// takes the place of the oldest still reading: slow or idle clients cannot keep a person
/// from the page, whose own request is the newest and takes milliseconds.
#[derive(Debug, Default)]
struct Slots(std::sync::Mutex<SlotsInner>);

#[derive(Debug, Default)]
struct SlotsInner {
    next: u64,
    reading: std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>,
    answering: usize,
}

impl Slots {
    /// A slot for a new connection, and what says it was dropped for a newer one; None
    /// when every slot is answering.
    fn admit(&self) -> Option<(u64, tokio::sync::oneshot::Receiver<()>)> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.reading.len() + s.answering >= MAX_CONNECTIONS {
            // Dropping the sender ends the oldest reader's wait.
            s.reading.pop_front()?;
        }
        let id = s.next;
        s.next += 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.reading.push_back((id, tx));
        Some((id, rx))
    }
}

/// One connection's hold on a slot, given back when its task ends (or is dropped).
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    answering: bool,
}

impl Slot {
    /// The request is read: the connection is no longer one to drop for a newer one. False
    /// when it was dropped already (its slot went to a newer connection).
    fn answering(&mut self) -> bool {
        let mut s = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = s.reading.iter().position(|(id, _)| *id == self.id) else {
            return false;
        };
        s.reading.remove(i);
        s.answering += 1;
        self.answering = true;
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if self.answering {
            s.answering -= 1;
        } else if let Some(i) = s.reading.iter().position(|(id, _)| *id == self.id) {
            s.reading.remove(i);
        }
    }
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    /// The host the page was asked for (the Host header without its port), when it is a
    /// plain name or address.
    host: Option<String>,
    body: Vec<u8>,
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let len = header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let host = header("host").and_then(host_name);
    if len > MAX_BODY {
        return None;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some(Request {
        method,
        path,
        host,
        body,
    })
}

/// The host of a Host header (`name`, `name:port`, `[v6]:port`), if it is made only of
/// the characters a name or an address has: it goes into the page's CSP.
fn host_name(v: &str) -> Option<String> {
    let h = if v.starts_with('[') {
        &v[..=v.find(']')?]
    } else {
        v.split(':').next()?
    };
    let ok = !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| h.to_ascii_lowercase())
}

fn answer(web: &WebState, auth: &WebAuth, req: &Request) -> Vec<u8> {
    let path = req.path.split('?').next().unwrap_or("");
    let body = String::from_utf8_lossy(&req.body).trim().to_owned();
    match (req.method.as_str(), path) {
        ("GET", "/api/certificate") => {
            let hashes: Vec<String> = auth.cert_hashes().iter().map(|h| super::hex(h)).collect();
            json(200, serde_json::json!({ "hashes": hashes }))
        }
        ("POST", "/api/session") => match auth.exchange(&body) {
            Ok((session, info)) => {
                let expires = info
                    .expires
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let hashes: Vec<String> =
                    auth.cert_hashes().iter().map(|h| super::hex(h)).collect();
                tracing::info!(identity = %info.who, "browser link exchanged for a session");
                json(
                    200,
                    serde_json::json!({
                        "session": session,
                        "expires": expires,
                        "identity": info.who.to_string(),
                        "hashes": hashes,
                    }),
                )
            }
            Err(refused) => {
                tracing::warn!(why = %refused, "browser link refused");
                json(403, serde_json::json!({ "error": refused.to_string() }))
            }
        },
        ("POST", "/api/logout") => {
            if auth.logout(&body) {
                tracing::info!("browser session logged out");
                json(200, serde_json::json!({ "ok": true }))
            } else {
                json(404, serde_json::json!({ "error": "no such session" }))
            }
        }
        ("GET", p) => {
            let name = match p.trim_start_matches('/') {
                "" => "index.html",
                n => n,
            };
            // Only the page's own files, read at start: no path from the request reaches
            // the file system, and nothing here waits on it.
            match web.cfg.file(name) {
                // The page (and its network worker, whose own CSP is this one) may also
                // open WebSockets to its host: the web-latency bench's baseline page
                // reaches its relay that way (docs/web.md, "The WebSocket baseline").
                Some((a, bytes)) => {
                    let connect = req
                        .host
                        .as_ref()
                        .map(|h| format!("'self' wss://{h}:*"))
                        .unwrap_or_else(|| "'self'".into());
                    response_with(200, content_type(a), &bytes, "", &connect)
                }
                None => response(404, "text/plain", b"not found"),
            }
        }
        _ => response(405, "text/plain", b"method not allowed"),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn json(status: u16, v: serde_json::Value) -> Vec<u8> {
    response(status, "application/json", v.to_string().as_bytes())
}

/// The answer to a request over the address's limit: 429, when to come back, and why.
fn too_many(too: TooMany) -> Vec<u8> {
    let body = serde_json::json!({ "error": too.to_string() }).to_string();
    let retry = format!("Retry-After: {}\r\n", too.retry_after.as_secs().max(1));
    response_with(429, "application/json", body.as_bytes(), &retry, "'self'")
}

fn response(status: u16, ctype: &str, body: &[u8]) -> Vec<u8> {
    response_with(status, ctype, body, "", "'self'")
}

/// A response; `extra`: more header lines, each ending in CRLF; `connect`: the CSP's
/// connect-src.
fn response_with(status: u16, ctype: &str, body: &[u8], extra: &str, connect: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src {connect}; frame-ancestors 'none'\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_dropped_for_a_newer_one_never_takes_an_answering_slot() {
        let slots = Arc::new(Slots::default());
        let mut held: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let (id, _rx) = slots.admit().unwrap();
                Slot {
                    slots: slots.clone(),
                    id,
                    answering: false,
                }
            })
            .collect();
        // One more: the oldest reader is dropped for it.
        let (id, _rx) = slots.admit().unwrap();
        held.push(Slot {
            slots: slots.clone(),
            id,
            answering: false,
        });
        // The dropped one's request came in the same wake-up: it does not answer.
        assert!(!held[0].answering());
        assert!(held[1].answering());
        let s = slots.0.lock().unwrap();
        assert_eq!(s.reading.len() + s.answering, MAX_CONNECTIONS);
    }

    #[test]
    fn only_a_plain_host_goes_into_the_csp() {
        assert_eq!(
            host_name("Example.org:7878").as_deref(),
            Some("example.org")
        );
        assert_eq!(host_name("198.18.0.1").as_deref(), Some("198.18.0.1"));
        assert_eq!(host_name("[::1]:7878").as_deref(), Some("[::1]"));
        assert_eq!(host_name("evil; script-src *"), None);
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name(""), None);
    }
}
