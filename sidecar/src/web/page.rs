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
//! One request per connection, small bounded requests, a deadline on each: a minimal
//! HTTP/1.1 server, enough for the page and nothing else.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::WebAuth;
use super::{WebState, ASSETS};
use crate::Handle;

/// Longest request head and body read.
const MAX_HEAD: usize = 8 << 10;
const MAX_BODY: usize = 1 << 10;
/// Time one request may take, from connecting to the end of its body.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
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
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (tls, web, auth) = (tls.clone(), web.clone(), auth.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let served = tokio::time::timeout(REQUEST_DEADLINE, async {
                    let mut s = tls.accept(tcp).await.ok()?;
                    let req = read_request(&mut s).await?;
                    let resp = answer(&web, &auth, &req).await;
                    s.write_all(&resp).await.ok()?;
                    s.shutdown().await.ok()
                })
                .await;
                if served.is_err() {
                    tracing::debug!(%addr, "a page request took too long");
                }
            });
        }
    }))
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
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
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
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
    Some(Request { method, path, body })
}

async fn answer(web: &WebState, auth: &WebAuth, req: &Request) -> Vec<u8> {
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
            // Only the page's own files: no path from the request reaches the file system.
            match ASSETS.iter().find(|a| **a == name) {
                Some(a) => match std::fs::read(web.cfg.assets.join(a)) {
                    Ok(bytes) => response(200, content_type(a), &bytes),
                    Err(e) => {
                        tracing::warn!(file = %a, error = %e, "a page file cannot be read");
                        response(
                            500,
                            "text/plain",
                            b"a page file is missing: run web/build.sh",
                        )
                    }
                },
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

fn response(status: u16, ctype: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src 'self'; frame-ancestors 'none'\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
