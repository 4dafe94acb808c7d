//! The WebSocket baseline's relay: the web page over ONE WebSocket (one TCP connection),
//! as noVNC, Cockpit and SPICE's HTML5 client reach their servers.
//!
//! The page (`?ws=wss://…`, `web/src/ws.js`) carries each of its streams on the WebSocket:
//! every message is a stream id (u32, big-endian), a kind (0 data, 1 end of the page's
//! side, 2 the page stopped reading) and bytes. The relay, beside ringcastd, terminates
//! the WebSocket (TLS with a throwaway self-signed certificate, TCP_NODELAY) and opens one
//! QUIC connection to ringcastd per page, as a `ringcast/1` client with the bench's
//! identity; each of the page's streams becomes a QUIC stream there (the first is the
//! control stream, where the page says Hello), carrying the page's frames unchanged. What
//! comes back is written to the WebSocket in arrival order, whatever the stream: the
//! head-of-line blocking the baseline exists to show happens on the TCP connection to the
//! page. The relay exists only in the bench.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use client::{Identity, Trust};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const DATA: u8 = 0;
const FIN: u8 = 1;
const STOP: u8 = 2;
/// Messages queued from ringcastd's streams to the WebSocket; beyond it the relay stops
/// reading them (and QUIC's flow control holds ringcastd back).
const QUEUE: usize = 64;

/// The relay, serving until dropped.
pub(super) struct Relay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One WebSocket message.
fn message(id: u32, kind: u8, bytes: &[u8]) -> Message {
    let mut m = Vec::with_capacity(5 + bytes.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.push(kind);
    m.extend_from_slice(bytes);
    Message::Binary(m.into())
}

/// A page's message: (stream id, kind, bytes), or None if it is too short to be one.
fn parse(m: &[u8]) -> Option<(u32, u8, &[u8])> {
    let id = u32::from_be_bytes(m.get(..4)?.try_into().ok()?);
    Some((id, *m.get(4)?, &m[5..]))
}

impl Relay {
    /// Serves WebSocket pages on `listener` and relays them to ringcastd at `target`
    /// through `udp` (both bound already, possibly in another namespace). Must be called
    /// within a tokio runtime.
    pub(super) fn start(
        listener: TcpListener,
        udp: UdpSocket,
        target: SocketAddr,
        identity: Identity,
        trust: Trust,
    ) -> Result<Relay, String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let cert = rcgen::generate_simple_self_signed(vec![addr.ip().to_string()])
            .map_err(|e| format!("relay certificate: {e}"))?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
        })
        .map_err(|e| format!("relay TLS: {e}"))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let host_port = target.to_string();
        let setup = transport_quic::tls::client_config(Some(&identity), &trust, &host_port)
            .map_err(|e| format!("relay's client TLS: {e}"))?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            udp,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| format!("relay endpoint: {e}"))?;
        endpoint.set_default_client_config(setup.config);
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let server_name = target.ip().to_string();
        let task = tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        eprintln!("web-latency relay: accept: {e}");
                        return;
                    }
                };
                let (acceptor, endpoint, name) =
                    (acceptor.clone(), endpoint.clone(), server_name.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(acceptor, tcp, endpoint, target, &name).await {
                        eprintln!("web-latency relay: {e}");
                    }
                });
            }
        });
        Ok(Relay { addr, task })
    }

    /// Where pages connect (`wss://ADDR/`).
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One page: its WebSocket, and its QUIC connection to ringcastd.
async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    endpoint: quinn::Endpoint,
    target: SocketAddr,
    server_name: &str,
) -> Result<(), String> {
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let ws = tokio_tungstenite::accept_async(tls)
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let conn = endpoint
        .connect(target, server_name)
        .map_err(|e| format!("connect to ringcastd: {e}"))?
        .await
        .map_err(|e| format!("connect to ringcastd: {e}"))?;
    let (mut to_page, mut from_page) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if to_page.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut sends: HashMap<u32, quinn::SendStream> = HashMap::new();
    let mut readers: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(m) = from_page.next().await {
        let m = match m {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Some((id, kind, bytes)) = parse(&m) else {
            return Err("a WebSocket message shorter than its header".into());
        };
        match kind {
            DATA => {
                let send = match sends.entry(id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let (send, mut recv) = conn
                            .open_bi()
                            .await
                            .map_err(|e| format!("open a stream: {e}"))?;
                        let tx = tx.clone();
                        readers.insert(
                            id,
                            tokio::spawn(async move {
                                while let Ok(Some(c)) = recv.read_chunk(64 << 10, true).await {
                                    if tx.send(message(id, DATA, &c.bytes)).await.is_err() {
                                        return;
                                    }
                                }
                                let _ = tx.send(message(id, FIN, &[])).await;
                            }),
                        );
                        e.insert(send)
                    }
                };
                send.write_all(bytes)
                    .await
                    .map_err(|e| format!("stream {id}: {e}"))?;
            }
            FIN => {
                if let Some(mut s) = sends.remove(&id) {
                    let _ = s.finish();
                }
            }
            STOP => {
                if let Some(r) = readers.remove(&id) {
                    r.abort();
                }
            }
            k => return Err(format!("a WebSocket message of unknown kind {k}")),
        }
    }
    for r in readers.into_values() {
        r.abort();
    }
    writer.abort();
    conn.close(0u32.into(), b"the page left");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_stream_id_the_kind_and_the_bytes() {
        let Message::Binary(m) = message(0x0102_0304, DATA, b"hi") else {
            panic!("not binary")
        };
        assert_eq!(&m[..], &[1, 2, 3, 4, 0, b'h', b'i']);
        assert_eq!(parse(&m), Some((0x0102_0304, DATA, &b"hi"[..])));
        assert_eq!(parse(&[0, 0, 0, 7, FIN]), Some((7, FIN, &[][..])));
        assert_eq!(parse(&[0, 0, 0, 7]), None);
    }
}
