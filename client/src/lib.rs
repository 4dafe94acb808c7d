//! ringcast client library: open a remote VM's console or audio output over one secure QUIC
//! connection to ringcastd, read and write it from a program.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client::Error> {
//! use client::{ConsoleItem, Mode, Session, StartAt, Trust};
//! let trust = Trust::KnownHosts(client::default_known_hosts());
//! let session = Session::connect("vmhost:7878", client::default_identity()?, trust).await?;
//! let mut console = session.attach_console("vm1", "serial0", Mode::Write, StartAt::TailBytes(4096)).await?;
//! console.write(b"uname -a\r").await?;
//! while let Some(item) = console.next().await? {
//!     if let ConsoleItem::Chunk { bytes, .. } = item {
//!         print!("{}", String::from_utf8_lossy(&bytes));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it deliberately does not do: terminals, files and sound cards (the `ringcast` binary
//! does those); retries (a program decides when to reconnect, and resumes with
//! [`StartAt::Offset`] from [`ConsoleStream::offset`]).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use transport_quic::codec::{decode_datagram, Frame, MAX_INPUT};
pub use transport_quic::codec::{
    AudioData, AudioFormat, DeviceEntry, DeviceKind, DeviceState, GapReason, Mode, StartAt,
    StatsEntry,
};
use transport_quic::io::{send_frame, FrameReader, ReadFrameError};
use transport_quic::proto;
pub use transport_quic::tls::{Fingerprint, Identity, Trust};
pub use transport_quic::ErrorCode;
use transport_quic::QuicErrorCode;

/// Default port of ringcastd's QUIC server.
pub const DEFAULT_PORT: u16 = 7878;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be resolved.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// TLS, identity or file setup failed.
    #[error(transparent)]
    Transport(#[from] transport_quic::Error),
    /// The server's identity differs from the pinned one.
    #[error("{0}")]
    HostKeyChanged(String),
    /// The connection could not be made or was lost.
    #[error("connection to {addr}: {reason}")]
    Connection {
        /// The server.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server refused a request or closed the connection with a code from the table.
    #[error("{}: {message}", code.map(|c| c.name()).unwrap_or("UNKNOWN_ERROR"))]
    Refused {
        /// The code, if it is in this version's table.
        code: Option<ErrorCode>,
        /// The server's explanation.
        message: String,
    },
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A local file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The error-table code, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Refused { code, .. } => *code,
            _ => None,
        }
    }
}

fn from_connection(addr: &str, e: quinn::ConnectionError) -> Error {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = ErrorCode::from_varint(c.error_code);
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            // The server's reason starts with the code's name, which Display adds again.
            let message = match code {
                Some(k) => reason
                    .strip_prefix(k.name())
                    .and_then(|r| r.strip_prefix(": "))
                    .map(str::to_owned)
                    .unwrap_or(reason),
                None => reason,
            };
            Error::Refused { code, message }
        }
        other => Error::Connection {
            addr: addr.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn from_read(addr: &str, e: ReadFrameError) -> Error {
    match e {
        ReadFrameError::Read(quinn::ReadError::ConnectionLost(c)) => from_connection(addr, c),
        ReadFrameError::Read(quinn::ReadError::Reset(code)) => Error::Refused {
            code: ErrorCode::from_varint(code),
            message: "stream reset by the server".into(),
        },
        other => Error::Protocol(other.to_string()),
    }
}

fn from_write(addr: &str, e: transport_quic::Error) -> Error {
    match e {
        transport_quic::Error::Write(quinn::WriteError::ConnectionLost(c)) => {
            from_connection(addr, c)
        }
        transport_quic::Error::Write(quinn::WriteError::Stopped(code)) => Error::Refused {
            code: ErrorCode::from_varint(code),
            message: "stream stopped by the server".into(),
        },
        other => Error::Transport(other),
    }
}

fn refused(code: u16, message: String) -> Error {
    Error::Refused {
        code: ErrorCode::from_code(code),
        message,
    }
}

/// `~/.config/ringcast/known_hosts`.
pub fn default_known_hosts() -> PathBuf {
    transport_quic::tls::config_dir().join("known_hosts")
}

/// The client identity in `~/.config/ringcast/` (`client.crt`, `client.key`) if one was
/// created with `ringcast identity new`; without one the client connects anonymously,
/// which a loopback ringcastd without an authorization file accepts.
pub fn default_identity() -> Result<Option<Identity>, Error> {
    let dir = transport_quic::tls::config_dir();
    let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
    if crt.exists() && key.exists() {
        Ok(Some(Identity::load(&crt, &key)?))
    } else {
        Ok(None)
    }
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<AudioData>>>>;

/// A connection to one ringcastd.
#[derive(Debug)]
pub struct Session {
    addr: String,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: tokio::sync::Mutex<(quinn::SendStream, FrameReader)>,
    next_request: AtomicU32,
    routes: Routes,
    datagram_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    server_software: String,
}

impl Session {
    /// Connects to `addr` (`host` or `host:port`, port 7878 by default), authenticating
    /// with `identity` if given and trusting the server as `trust` says, and does the
    /// version handshake.
    pub async fn connect(
        addr: &str,
        identity: Option<Identity>,
        trust: Trust,
    ) -> Result<Session, Error> {
        let host_port = if addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            addr.to_owned()
        } else {
            format!("{addr}:{DEFAULT_PORT}")
        };
        let target: SocketAddr = tokio::net::lookup_host(&host_port)
            .await
            .map_err(|_| Error::Resolve(host_port.clone()))?
            .next()
            .ok_or_else(|| Error::Resolve(host_port.clone()))?;
        let host = host_port
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or("localhost");
        let server_name = if host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".to_owned()
        } else {
            host.to_owned()
        };
        let setup = transport_quic::tls::client_config(identity.as_ref(), &trust, &host_port)?;
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(setup.config);
        let connecting = endpoint
            .connect(target, &server_name)
            .map_err(|e| Error::Connection {
                addr: host_port.clone(),
                reason: e.to_string(),
            })?;
        let conn = match connecting.await {
            Ok(c) => c,
            Err(e) => {
                if let Some(msg) = setup
                    .refusal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    return Err(Error::HostKeyChanged(msg));
                }
                return Err(from_connection(&host_port, e));
            }
        };
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| from_connection(&host_port, e))?;
        let hello = Frame::Hello {
            min_version: proto::MIN_VERSION,
            max_version: proto::MAX_VERSION,
            software: format!("ringcast {}", env!("CARGO_PKG_VERSION")),
        };
        send_frame(&mut send, &hello)
            .await
            .map_err(|e| from_write(&host_port, e))?;
        let mut reader = FrameReader::new(recv);
        let server_software = match reader.next().await {
            Ok(Some(Frame::Welcome { software, .. })) => software,
            Ok(Some(Frame::Error { code, message, .. })) => return Err(refused(code, message)),
            Ok(Some(other)) => {
                return Err(Error::Protocol(format!(
                    "expected Welcome, got {}",
                    other.name()
                )))
            }
            Ok(None) => {
                return Err(Error::Protocol(
                    "the server closed the control stream".into(),
                ))
            }
            Err(e) => return Err(from_read(&host_port, e)),
        };
        tracing::debug!(server = %server_software, "connected");
        Ok(Session {
            addr: host_port,
            endpoint,
            conn,
            control: tokio::sync::Mutex::new((send, reader)),
            next_request: AtomicU32::new(1),
            routes: Arc::new(Mutex::new(HashMap::new())),
            datagram_task: Mutex::new(None),
            server_software,
        })
    }

    /// The server's software name and version.
    pub fn server_software(&self) -> &str {
        &self.server_software
    }

    /// The underlying QUIC connection (for statistics such as RTT).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    async fn request(&self, frame: Frame) -> Result<Frame, Error> {
        let mut control = self.control.lock().await;
        let (send, reader) = &mut *control;
        send_frame(send, &frame)
            .await
            .map_err(|e| from_write(&self.addr, e))?;
        match reader.next().await {
            Ok(Some(Frame::Error { code, message, .. })) => Err(refused(code, message)),
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(Error::Protocol(
                "the server closed the control stream".into(),
            )),
            Err(e) => Err(from_read(&self.addr, e)),
        }
    }

    /// The devices this client may use.
    pub async fn list(&self) -> Result<Vec<DeviceEntry>, Error> {
        let request = self.next_request.fetch_add(1, Relaxed);
        match self.request(Frame::ListDevices { request }).await? {
            Frame::Devices { devices, .. } => Ok(devices),
            other => Err(Error::Protocol(format!(
                "expected Devices, got {}",
                other.name()
            ))),
        }
    }

    /// Every counter of the devices this client may use.
    pub async fn stats(&self) -> Result<Vec<StatsEntry>, Error> {
        let request = self.next_request.fetch_add(1, Relaxed);
        match self.request(Frame::GetStats { request }).await? {
            Frame::Stats { devices, .. } => Ok(devices),
            other => Err(Error::Protocol(format!(
                "expected Stats, got {}",
                other.name()
            ))),
        }
    }

    async fn attach(
        &self,
        vm: &str,
        device: &str,
        mode: Mode,
        start: StartAt,
        datagrams: bool,
    ) -> Result<(quinn::SendStream, FrameReader, Frame), Error> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| from_connection(&self.addr, e))?;
        let attach = Frame::Attach {
            vm: vm.into(),
            device: device.into(),
            mode,
            start,
            datagrams,
        };
        send_frame(&mut send, &attach)
            .await
            .map_err(|e| from_write(&self.addr, e))?;
        let mut reader = FrameReader::new(recv);
        match reader.next().await {
            Ok(Some(f @ Frame::Attached { .. })) => Ok((send, reader, f)),
            Ok(Some(Frame::Error { code, message, .. })) => Err(refused(code, message)),
            Ok(Some(other)) => Err(Error::Protocol(format!(
                "expected Attached, got {}",
                other.name()
            ))),
            Ok(None) => Err(Error::Protocol("the server ended the attachment".into())),
            Err(e) => Err(from_read(&self.addr, e)),
        }
    }

    /// Attaches to a console: `Write` takes the console's write lock (refused with
    /// `WRITER_BUSY` while another client holds it); `Read` and `Spy` only read.
    pub async fn attach_console(
        &self,
        vm: &str,
        device: &str,
        mode: Mode,
        start: StartAt,
    ) -> Result<ConsoleStream, Error> {
        let (send, reader, attached) = self.attach(vm, device, mode, start, false).await?;
        let Frame::Attached { kind, offset, .. } = attached else {
            unreachable!("attach returns Attached frames only")
        };
        if kind != DeviceKind::Console {
            return Err(Error::Refused {
                code: Some(ErrorCode::WrongKind),
                message: format!("{vm}/{device} is not a console"),
            });
        }
        Ok(ConsoleStream {
            addr: self.addr.clone(),
            send,
            reader,
            offset,
            reported: offset,
            mode,
            ready: None,
            report: Bytes::new(),
        })
    }

    /// Listens to an audio device live. With `datagrams`, periods come as QUIC datagrams
    /// (late is worse than lost); ones too large for a datagram still come on the stream.
    pub async fn attach_audio(
        &self,
        vm: &str,
        device: &str,
        datagrams: bool,
    ) -> Result<AudioStream, Error> {
        let (send, reader, attached) = self
            .attach(vm, device, Mode::Read, StartAt::Now, datagrams)
            .await?;
        let Frame::Attached { kind, audio, .. } = attached else {
            unreachable!("attach returns Attached frames only")
        };
        if kind != DeviceKind::Audio {
            return Err(Error::Refused {
                code: Some(ErrorCode::WrongKind),
                message: format!("{vm}/{device} is not an audio device"),
            });
        }
        let dgrams = if datagrams {
            let (tx, rx) = mpsc::channel(256);
            self.routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(send.id().index(), tx);
            self.start_datagrams();
            Some(rx)
        } else {
            None
        };
        Ok(AudioStream {
            addr: self.addr.clone(),
            _send: send,
            reader,
            format: audio,
            datagrams: dgrams,
            stream_done: false,
        })
    }

    fn start_datagrams(&self) {
        let mut task = self.datagram_task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_some() {
            return;
        }
        let conn = self.conn.clone();
        let routes = self.routes.clone();
        *task = Some(tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                match decode_datagram(&d) {
                    Ok((id, audio)) => {
                        let tx = routes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&id)
                            .cloned();
                        if let Some(tx) = tx {
                            // A full queue means the reader is behind: late audio is dropped.
                            let _ = tx.try_send(audio);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "bad audio datagram ignored"),
                }
            }
        }));
    }

    /// Closes the connection politely and waits for the server to learn it.
    pub async fn close(self) {
        self.conn.close(ErrorCode::NoError.varint(), b"bye");
        if let Some(t) = self
            .datagram_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.endpoint.wait_idle())
            .await;
    }
}

/// Silence after which [`LinkMonitor`] calls a link down: a live link carries a packet at
/// least every keep-alive interval (1 s) plus a round trip.
pub const LINK_QUIET: std::time::Duration = std::time::Duration::from_secs(3);

/// A change of the link to the server, as [`LinkMonitor::check`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// Nothing has arrived from the server for `silent`. The connection stays open and
    /// resumes by itself if packets come back before the idle timeout (30 s).
    Down {
        /// How long nothing has arrived.
        silent: std::time::Duration,
    },
    /// Packets arrive again after a silence of `after`.
    Up {
        /// How long nothing arrived.
        after: std::time::Duration,
    },
}

/// Notices when nothing arrives from the server (a cut link, a server that stopped
/// answering) and when packets come back. Call [`LinkMonitor::check`] periodically (say
/// every 250 ms).
#[derive(Debug)]
pub struct LinkMonitor {
    conn: quinn::Connection,
    quiet: std::time::Duration,
    received: u64,
    heard: std::time::Instant,
    down: bool,
}

impl LinkMonitor {
    /// A monitor of `session`'s connection that reports silences longer than `quiet`.
    pub fn new(session: &Session, quiet: std::time::Duration) -> Self {
        LinkMonitor {
            conn: session.conn.clone(),
            quiet,
            received: session.conn.stats().udp_rx.datagrams,
            heard: std::time::Instant::now(),
            down: false,
        }
    }

    /// Whether the link went down or came back since the last call.
    pub fn check(&mut self) -> Option<LinkEvent> {
        let now = std::time::Instant::now();
        let received = self.conn.stats().udp_rx.datagrams;
        if received != self.received {
            self.received = received;
            let after = now - self.heard;
            self.heard = now;
            if std::mem::take(&mut self.down) {
                return Some(LinkEvent::Up { after });
            }
            return None;
        }
        let silent = now - self.heard;
        if !self.down && silent >= self.quiet {
            self.down = true;
            return Some(LinkEvent::Down { silent });
        }
        None
    }
}

/// What a console stream yields, in offset order without holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleItem {
    /// Output bytes at an absolute journal offset.
    Chunk {
        /// Journal offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Bytes the server cannot deliver.
    Gap {
        /// First missing offset.
        offset: u64,
        /// Bytes missing.
        len: u64,
        /// Why.
        reason: GapReason,
    },
}

/// Report reading progress after this many bytes, so the server keeps sending (it allows
/// a bounded amount unreported per stream).
const REPORT_EVERY: u64 = 16 << 10;

/// One attached console.
#[derive(Debug)]
pub struct ConsoleStream {
    addr: String,
    send: quinn::SendStream,
    reader: FrameReader,
    offset: u64,
    reported: u64,
    mode: Mode,
    /// An item read but not yet returned (its progress report is being written).
    ready: Option<ConsoleItem>,
    /// The rest of an encoded `Consumed` frame not yet written.
    report: Bytes,
}

impl ConsoleStream {
    /// The offset of the next item (save it to resume later with [`StartAt::Offset`]).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The mode it was attached with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The next item; `Ok(None)` when the server ended the attachment.
    ///
    /// Cancel-safe: dropping the future (in a `select!` with a timer, say) loses no item;
    /// the next call returns it.
    pub async fn next(&mut self) -> Result<Option<ConsoleItem>, Error> {
        if self.ready.is_none() {
            let item = match self.reader.next().await {
                Ok(Some(Frame::Data { offset, bytes })) => ConsoleItem::Chunk { offset, bytes },
                Ok(Some(Frame::Gap {
                    offset,
                    len,
                    reason,
                })) => ConsoleItem::Gap {
                    offset,
                    len,
                    reason,
                },
                Ok(Some(Frame::Error { code, message, .. })) => return Err(refused(code, message)),
                Ok(Some(other)) => {
                    return Err(Error::Protocol(format!(
                        "{} on a console stream",
                        other.name()
                    )))
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(from_read(&self.addr, e)),
            };
            let (start, end) = match &item {
                ConsoleItem::Chunk { offset, bytes } => (*offset, offset + bytes.len() as u64),
                ConsoleItem::Gap { offset, len, .. } => (*offset, offset + len),
            };
            if start != self.offset {
                return Err(Error::Protocol(format!(
                    "expected offset {}, got {start}",
                    self.offset
                )));
            }
            self.offset = end;
            if self.offset - self.reported >= REPORT_EVERY && self.report.is_empty() {
                self.reported = self.offset;
                let f = Frame::Consumed {
                    offset: self.offset,
                };
                self.report = f
                    .to_bytes()
                    .map_err(|e| Error::Transport(transport_quic::Error::Encode(e)))?
                    .into();
            }
            self.ready = Some(item);
        }
        // Each `write` either takes bytes or takes none, so a cancelled call resumes here.
        while !self.report.is_empty() {
            let n = self
                .send
                .write(&self.report)
                .await
                .map_err(|e| from_write(&self.addr, transport_quic::Error::Write(e)))?;
            let _ = self.report.split_to(n);
        }
        Ok(self.ready.take())
    }

    /// Sends input (write mode). The server applies the guest's backpressure.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        if self.mode != Mode::Write {
            return Err(Error::Refused {
                code: Some(ErrorCode::ReadOnly),
                message: format!("attached as {}", self.mode.name()),
            });
        }
        while !bytes.is_empty() {
            let n = bytes.len().min(MAX_INPUT);
            let f = Frame::Input {
                bytes: Bytes::copy_from_slice(&bytes[..n]),
            };
            send_frame(&mut self.send, &f)
                .await
                .map_err(|e| from_write(&self.addr, e))?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Sends raw, possibly invalid protocol bytes on this stream (for testing servers).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| from_write(&self.addr, transport_quic::Error::Write(e)))
    }

    /// Ends the attachment (and releases the write lock).
    pub async fn detach(mut self) {
        let _ = send_frame(&mut self.send, &Frame::Detach).await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.send.stopped()).await;
    }
}

/// One attached audio output.
#[derive(Debug)]
pub struct AudioStream {
    addr: String,
    _send: quinn::SendStream,
    reader: FrameReader,
    format: Option<AudioFormat>,
    datagrams: Option<mpsc::Receiver<AudioData>>,
    stream_done: bool,
}

impl AudioStream {
    /// The PCM format (None if the device has not registered since ringcastd started).
    pub fn format(&self) -> Option<AudioFormat> {
        self.format
    }

    /// The next period; `Ok(None)` when the server ended the attachment.
    pub async fn next(&mut self) -> Result<Option<AudioData>, Error> {
        loop {
            let from_stream = async {
                if self.stream_done {
                    std::future::pending().await
                } else {
                    self.reader.next().await
                }
            };
            let frame = match &mut self.datagrams {
                Some(rx) => tokio::select! {
                    d = rx.recv() => match d {
                        Some(a) => return Ok(Some(a)),
                        None => return Ok(None),
                    },
                    f = from_stream => f,
                },
                None => from_stream.await,
            };
            match frame {
                Ok(Some(Frame::Audio(a))) => return Ok(Some(a)),
                Ok(Some(Frame::Error { code, message, .. })) => return Err(refused(code, message)),
                Ok(Some(other)) => {
                    return Err(Error::Protocol(format!(
                        "{} on an audio stream",
                        other.name()
                    )))
                }
                Ok(None) if self.datagrams.is_some() => self.stream_done = true,
                Ok(None) => return Ok(None),
                Err(e) => return Err(from_read(&self.addr, e)),
            }
        }
    }
}
