//! The TCP+TLS baseline of scenario C: both devices on one TCP connection with rustls, the
//! way libvirt streams, VNC audio and ssh tunnels carry them today.
//!
//! The server presents ringcastd's own certificate (transport-quic's identity), TLS 1.3
//! with rustls' ring provider as in transport-quic; the client pins that certificate. Both
//! ends set `TCP_NODELAY`; the server sets `TCP_NOTSENT_LOWAT` to 16 KiB, so that at most
//! about 16 KiB of unsent console bytes queue in the kernel ahead of a period
//! (a rival is tuned as its own users would tune it, or the comparison flatters ringcast). One thread per subscription feeds a
//! one-entry queue each (the daemon's subscriptions keep their own bounds: audio drops the
//! oldest periods and reports them in `skipped_before`), and one writer thread takes audio
//! first whenever both are ready and writes console data in 16 KiB pieces (one TLS record),
//! so a period waits behind at most one record plus what the kernel holds. Frames are
//! transport-quic's codec (`Audio`, `Data`), so the client decodes exactly what the QUIC
//! variants carry.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use quinn::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sidecar::{DeviceKey, Handle, Item, StartAt};
use transport_quic::codec::{AudioData, Frame, FrameBuffer};
use transport_quic::proto::Limits;
use transport_quic::tls::Identity;

use super::{Recorder, RunResult, AUDIO_DEV, CONSOLE_DEV, VM, WAIT};

/// Unsent bytes the kernel may hold before the socket stops taking more.
const NOTSENT_LOWAT: libc::c_int = 16 << 10;
/// Console bytes per write (one TLS record).
const PIECE: usize = 16 << 10;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bench's TCP+TLS server: an accept thread, three threads per connection.
pub(super) struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Server {
    /// Serves on `listener` (already bound, possibly in another namespace).
    pub(super) fn start(
        handle: Handle,
        identity: &Identity,
        listener: TcpListener,
    ) -> Result<Server, String> {
        let tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(identity.certs.clone(), identity.key.clone_key())
            .map_err(|e| e.to_string())?;
        let tls = Arc::new(tls);
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("c-tcp-accept".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let (handle, tls, stop) = (handle.clone(), tls.clone(), stop2.clone());
                            let _ = std::thread::Builder::new().name("c-tcp-conn".into()).spawn(
                                move || {
                                    if let Err(e) = serve(handle, tls, tcp, stop) {
                                        eprintln!("c: tcp-tls server: {e}");
                                    }
                                },
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Server { addr, stop, thread })
    }

    /// The bound address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; connections end when their client goes.
    pub(super) fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn set_notsent_lowat(tcp: &TcpStream, bytes: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setsockopt reads one c_int from the pointer we pass with its size; the fd is
    // open for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What the feeders hand the writer: encoded frames, audio first.
#[derive(Default)]
struct Queues {
    audio: VecDeque<Vec<u8>>,
    console: VecDeque<Vec<u8>>,
    closed: bool,
}

struct Shared {
    q: Mutex<Queues>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Waits until `pick` says the queue has room (or the connection is closed: false).
    fn wait_room(&self, pick: impl Fn(&Queues) -> bool) -> bool {
        let mut q = self.lock();
        while !q.closed && !pick(&q) {
            q = self
                .cv
                .wait_timeout(q, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !q.closed
    }
}

fn serve(
    handle: Handle,
    tls: Arc<rustls::ServerConfig>,
    mut tcp: TcpStream,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    set_notsent_lowat(&tcp, NOTSENT_LOWAT).map_err(|e| format!("TCP_NOTSENT_LOWAT: {e}"))?;
    tcp.set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let mut conn = rustls::ServerConnection::new(tls).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let limits = Limits::default();
    let mut audio = handle
        .subscribe_audio(&DeviceKey::new(VM, AUDIO_DEV), limits.audio_queue)
        .map_err(|e| e.to_string())?;
    let mut console = handle
        .subscribe(&DeviceKey::new(VM, CONSOLE_DEV), StartAt::Now)
        .map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        q: Mutex::new(Queues::default()),
        cv: Condvar::new(),
    });
    let s = shared.clone();
    let audio_feeder = std::thread::spawn(move || {
        while s.wait_room(|q| q.audio.is_empty()) {
            match audio.next_blocking(Duration::from_millis(100)) {
                Ok(Some(p)) => {
                    let f = Frame::Audio(AudioData {
                        seq: p.seq,
                        timestamp_ns: p.timestamp_ns,
                        frames: p.frames,
                        skipped_before: p.skipped_before,
                        pcm: p.pcm,
                    });
                    let Ok(b) = f.to_bytes() else { break };
                    s.lock().audio.push_back(b);
                    s.cv.notify_all();
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        s.close();
    });
    let s = shared.clone();
    let console_feeder = std::thread::spawn(move || {
        while s.wait_room(|q| q.console.is_empty()) {
            match console.next_blocking(Duration::from_millis(100)) {
                Ok(Some(Item::Chunk(ch))) => {
                    let (mut offset, mut bytes) = (ch.offset, ch.bytes);
                    let mut frames = Vec::new();
                    while !bytes.is_empty() {
                        let piece = bytes.split_to(bytes.len().min(PIECE));
                        let n = piece.len() as u64;
                        let Ok(b) = (Frame::Data {
                            offset,
                            bytes: piece,
                        })
                        .to_bytes() else {
                            break;
                        };
                        frames.push(b);
                        offset += n;
                    }
                    s.lock().console.extend(frames);
                    s.cv.notify_all();
                }
                Ok(Some(Item::Gap(_))) | Ok(None) => {}
                Err(_) => break,
            }
        }
        s.close();
    });
    // The writer, on this thread.
    let result = loop {
        let next = {
            let mut q = shared.lock();
            loop {
                if q.closed || stop.load(Ordering::Relaxed) {
                    break None;
                }
                if let Some(a) = q.audio.pop_front() {
                    break Some(a);
                }
                if let Some(c) = q.console.pop_front() {
                    break Some(c);
                }
                q = shared
                    .cv
                    .wait_timeout(q, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        shared.cv.notify_all();
        let Some(bytes) = next else { break Ok(()) };
        if let Err(e) = conn.writer().write_all(&bytes) {
            break Err(e);
        }
        let mut err = None;
        while conn.wants_write() {
            if let Err(e) = conn.write_tls(&mut tcp) {
                err = Some(e);
                break;
            }
        }
        if let Some(e) = err {
            break Err(e);
        }
    };
    shared.close();
    let _ = audio_feeder.join();
    let _ = console_feeder.join();
    // The client closing the connection at the end of its run is how every run ends.
    match result {
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            Err(e.to_string())
        }
        _ => Ok(()),
    }
}

/// Accepts exactly the server certificate it was given.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the pinned server certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One run, on this thread: connect, read the frames in order: audio periods to the
/// recorder, console bytes counted.
pub(super) fn measure(
    addr: SocketAddr,
    server_cert: Vec<u8>,
    dur: Duration,
) -> Result<RunResult, String> {
    let p = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            cert: server_cert,
            provider: p,
        }))
        .with_no_client_auth();
    let tcp =
        TcpStream::connect_timeout(&addr, WAIT).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("valid name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let read = Arc::new(AtomicU64::new(0));
    let mut rec = None;
    let mut frames = FrameBuffer::new();
    let mut buf = vec![0u8; 64 << 10];
    'read: loop {
        let n = tls.read(&mut buf).map_err(|e| format!("tcp-tls: {e}"))?;
        if n == 0 {
            break;
        }
        // The recorder's warm-up starts once the handshake is done.
        let rec = rec.get_or_insert_with(|| Recorder::new(dur, read.clone()));
        frames.push(&buf[..n]);
        while let Some(f) = frames.next_frame().map_err(|e| format!("tcp-tls: {e}"))? {
            match f {
                // A period recorded; the run is over once the recorder has enough.
                Frame::Audio(a) if rec.period(a.seq, a.timestamp_ns, a.skipped_before) => {
                    break 'read;
                }
                Frame::Data { bytes, .. } => {
                    read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    }
    let _ = tls.sock.shutdown(std::net::Shutdown::Both);
    rec.map(Recorder::finish)
        .ok_or_else(|| "tcp-tls: the server closed before sending anything".into())
}
