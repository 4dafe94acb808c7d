//! The head-of-line baseline of scenario C: the daemon's audio and console subscriptions
//! carried on ONE QUIC stream.
//!
//! ringcast's protocol has no such mode (every attachment is its own stream, audio at a
//! higher priority, consoles bounded in flight while audio is live), so this server exists
//! only in the bench. It is what ringcast would be with those two design choices taken out
//! and everything else kept: the same daemon and subscriptions (`Handle::subscribe_audio`
//! with the server's audio queue, `Handle::subscribe` from now), the same frames
//! (`transport_quic::codec`, console data in pieces of `Limits::console_chunk`), and a quinn
//! endpoint with transport-quic's TLS and transport configuration (`tls::server_config`,
//! `tls::client_config`). The client opens one bidirectional stream and sends one `Attach`
//! frame to start it; the server then writes, on that stream, an `Audio` frame for every
//! period and `Data` frames for the console, audio first whenever both are ready (also
//! between the pieces of one console chunk). What is not there: per-stream priority, the
//! console's in-flight credit (only QUIC's own flow control bounds the console), the
//! control stream and its handshake, and authorization.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use client::{Identity, Trust};
use sidecar::{DeviceKey, Handle, Item};
use transport_quic::codec::{AudioData, Frame, Mode, StartAt};
use transport_quic::io::{send_frame, FrameReader};
use transport_quic::proto::Limits;
use transport_quic::tls;

use super::{Recorder, RunResult, AUDIO_DEV, CONSOLE_DEV, VM, WAIT};

/// The bench's one-stream server.
pub(super) struct Server {
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves on `socket` (already bound, possibly in another namespace) with the server
    /// identity and ringcastd's transport limits (congestion controller included). Must be
    /// called within a tokio runtime.
    pub(super) fn start(
        handle: Handle,
        identity: &tls::Identity,
        socket: UdpSocket,
        limits: Limits,
    ) -> Result<Server, String> {
        let cfg = tls::server_config(identity, &limits).map_err(|e| e.to_string())?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(cfg),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| format!("one-stream endpoint: {e}"))?;
        let ep = endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let (handle, limits) = (handle.clone(), limits.clone());
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        serve(handle, limits, conn).await;
                    }
                });
            }
        });
        Ok(Server { endpoint, task })
    }

    /// The bound address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.endpoint.local_addr().expect("a bound endpoint")
    }

    /// Closes every connection and stops accepting.
    pub(super) async fn shutdown(self) {
        self.endpoint.close(0u32.into(), b"bench done");
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

fn audio_frame(p: sidecar::AudioPeriod) -> Frame {
    Frame::Audio(AudioData {
        seq: p.seq,
        timestamp_ns: p.timestamp_ns,
        frames: p.frames,
        skipped_before: p.skipped_before,
        pcm: p.pcm,
    })
}

async fn serve(handle: Handle, limits: Limits, conn: quinn::Connection) {
    let Ok((mut send, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut reader = FrameReader::new(recv);
    // The client's Attach starts the stream; what it names does not matter here.
    if !matches!(reader.next().await, Ok(Some(_))) {
        return;
    }
    let (Ok(mut audio), Ok(mut console)) = (
        handle.subscribe_audio(&DeviceKey::new(VM, AUDIO_DEV), limits.audio_queue),
        handle.subscribe(&DeviceKey::new(VM, CONSOLE_DEV), StartAt::Now),
    ) else {
        conn.close(1u32.into(), b"no such devices");
        return;
    };
    loop {
        tokio::select! {
            biased;
            frame = reader.next() => match frame {
                Ok(Some(_)) => {}
                _ => return,
            },
            period = audio.next() => {
                let Ok(p) = period else { return };
                if send_frame(&mut send, &audio_frame(p)).await.is_err() {
                    return;
                }
            }
            item = console.next() => {
                let Ok(item) = item else { return };
                let Item::Chunk(ch) = item else { continue };
                let (mut offset, mut bytes) = (ch.offset, ch.bytes);
                while !bytes.is_empty() {
                    // Audio first whenever both are ready.
                    while let Some(p) = audio.try_next() {
                        if send_frame(&mut send, &audio_frame(p)).await.is_err() {
                            return;
                        }
                    }
                    let piece: Bytes = bytes.split_to(bytes.len().min(limits.console_chunk));
                    let n = piece.len() as u64;
                    let data = Frame::Data { offset, bytes: piece };
                    if send_frame(&mut send, &data).await.is_err() {
                        return;
                    }
                    offset += n;
                }
            }
        }
    }
}

/// One run: connect, open the stream, read frames in order: audio periods to the
/// recorder, console bytes counted.
pub(super) async fn measure(
    addr: String,
    identity: Option<Identity>,
    trust: Trust,
    dur: Duration,
) -> Result<RunResult, String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let setup = tls::client_config(identity.as_ref(), &trust, &addr).map_err(|e| e.to_string())?;
    let bind: SocketAddr = if sa.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("valid");
    let socket = transport_quic::endpoint::udp_socket(bind).map_err(|e| e.to_string())?;
    let mut ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("client endpoint: {e}"))?;
    ep.set_default_client_config(setup.config);
    let conn = tokio::time::timeout(
        WAIT,
        ep.connect(sa, "localhost").map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let attach = Frame::Attach {
        vm: VM.into(),
        device: AUDIO_DEV.into(),
        mode: Mode::Read,
        start: StartAt::Now,
        datagrams: false,
        codecs: vec![],
    };
    send_frame(&mut send, &attach)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(recv);
    let read = Arc::new(AtomicU64::new(0));
    let mut rec = Recorder::new(dur, read.clone());
    loop {
        match tokio::time::timeout(WAIT, reader.next()).await {
            // A period recorded; the run is over once the recorder has enough.
            Ok(Ok(Some(Frame::Audio(a))))
                if rec.period(a.seq, a.timestamp_ns, a.skipped_before) =>
            {
                break;
            }
            Ok(Ok(Some(Frame::Data { bytes, .. }))) => {
                read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(format!("one-stream: {e}")),
            Err(_) => return Err("one-stream: no frame for 20 s".into()),
        }
    }
    let out = rec.finish();
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    Ok(out)
}
