//! A connection to one ringcastd: the handshake, device lists and stats, attaching to a
//! console or an audio output, QMP.

use crate::*;

/// A connection to one ringcastd.
#[derive(Debug)]
pub struct Session {
    pub(crate) addr: String,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) conn: quinn::Connection,
    pub(crate) control: tokio::sync::Mutex<(quinn::SendStream, FrameReader)>,
    pub(crate) next_request: AtomicU32,
    pub(crate) routes: Routes,
    pub(crate) datagram_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub(crate) server_software: String,
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
        // An IP address is verified as that address (a certificate must list it as an IP
        // subject alternative name for `--ca`); a name as that name.
        let server_name = host.to_owned();
        let setup = transport_quic::tls::client_config(identity.as_ref(), &trust, &host_port)?;
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        };
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            transport_quic::endpoint::udp_socket(bind)?,
            std::sync::Arc::new(quinn::TokioRuntime),
        )?;
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
                if let Some(fingerprint) = setup
                    .unknown
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    return Err(Error::UnknownHost {
                        host: host_port,
                        fingerprint,
                    });
                }
                return Err(from_connection(&host_port, e));
            }
        };
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| from_connection(&host_port, e))?;
        let hello = rules::client::hello(format!("ringcast {}", env!("CARGO_PKG_VERSION")));
        send_frame(&mut send, &hello)
            .await
            .map_err(|e| from_write(&host_port, e))?;
        let mut reader = FrameReader::new(recv);
        let welcome = reader.next().await.map_err(|e| from_read(&host_port, e))?;
        let (_version, server_software) = rules::client::on_welcome(welcome)?;
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
        let reply = reader.next().await.map_err(|e| from_read(&self.addr, e))?;
        Ok(rules::client::on_reply(reply)?)
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

    /// Opens an attachment stream with `attach` (a `Frame::Attach`) to a device expected to
    /// be of `kind`.
    async fn attach(
        &self,
        kind: DeviceKind,
        attach: Frame,
    ) -> Result<(quinn::SendStream, FrameReader, rules::client::Attached), Error> {
        let Frame::Attach {
            vm, device, codecs, ..
        } = &attach
        else {
            return Err(Error::Protocol("not an Attach".into()));
        };
        let (what, codecs) = (format!("{vm}/{device}"), codecs.clone());
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| from_connection(&self.addr, e))?;
        send_frame(&mut send, &attach)
            .await
            .map_err(|e| from_write(&self.addr, e))?;
        let mut reader = FrameReader::new(recv);
        let answer = reader.next().await.map_err(|e| from_read(&self.addr, e))?;
        let mut attached = rules::client::on_attached(&what, kind, answer)?;
        attached.encoding = rules::audio::check_answer(&codecs, attached.encoding)?;
        Ok((send, reader, attached))
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
        let (send, mut reader, attached) = self
            .attach(
                DeviceKind::Console,
                Frame::Attach {
                    vm: vm.into(),
                    device: device.into(),
                    mode,
                    start,
                    datagrams: false,
                    codecs: Vec::new(),
                },
            )
            .await?;
        // The console's bytes come out as slices of what quinn received, as they arrive,
        // never copied on their way to the caller.
        reader.split_data();
        Ok(ConsoleStream {
            addr: self.addr.clone(),
            send,
            reader,
            rules: rules::client::ConsoleReader::new(attached.offset),
            mode,
            ready: None,
            report: Bytes::new(),
        })
    }

    /// Listens to an audio device live, as PCM. With `datagrams`, periods come as QUIC
    /// datagrams (late is worse than lost); ones too large for a datagram still come on
    /// the stream.
    pub async fn attach_audio(
        &self,
        vm: &str,
        device: &str,
        datagrams: bool,
    ) -> Result<AudioStream, Error> {
        self.attach_audio_with(vm, device, datagrams, &[]).await
    }

    /// [`Session::attach_audio`] offering `codecs` in order of preference (empty: PCM
    /// only); [`AudioStream::encoding`] says which one the server chose.
    pub async fn attach_audio_with(
        &self,
        vm: &str,
        device: &str,
        datagrams: bool,
        codecs: &[AudioCodec],
    ) -> Result<AudioStream, Error> {
        let (send, reader, attached) = self
            .attach(
                DeviceKind::Audio,
                Frame::Attach {
                    vm: vm.into(),
                    device: device.into(),
                    mode: Mode::Read,
                    start: StartAt::Now,
                    datagrams,
                    codecs: codecs.to_vec(),
                },
            )
            .await?;
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
            format: attached.audio,
            encoding: attached.encoding,
            datagrams: dgrams,
            stream_done: false,
        })
    }

    /// Attaches to an audio device for sending it sound: what is sent is what the guest's
    /// sound card records (its line-in), in [`MicStream::format`]. Needs the audio and
    /// write rights and the device's microphone (one client at a time: `WRITER_BUSY`).
    pub async fn attach_mic(&self, vm: &str, device: &str) -> Result<MicStream, Error> {
        self.attach_mic_with(vm, device, &[]).await
    }

    /// [`Session::attach_mic`] offering `codecs`, the codecs the client can send, in
    /// order of preference (empty: PCM, as every older client); [`MicStream::encoding`]
    /// is the server's choice.
    pub async fn attach_mic_with(
        &self,
        vm: &str,
        device: &str,
        codecs: &[AudioCodec],
    ) -> Result<MicStream, Error> {
        let what = format!("{vm}/{device}");
        let (send, mut reader, attached) = self
            .attach(
                DeviceKind::Audio,
                Frame::Attach {
                    vm: vm.into(),
                    device: device.into(),
                    mode: Mode::Write,
                    start: StartAt::Now,
                    datagrams: false,
                    codecs: codecs.to_vec(),
                },
            )
            .await?;
        let Some(format) = attached.audio else {
            return Err(Error::Protocol(format!(
                "the server announced no audio format for {what}'s input"
            )));
        };
        let (tx, ended) = tokio::sync::watch::channel(None);
        let addr = self.addr.clone();
        tokio::spawn(async move {
            let end = match reader.next().await {
                Ok(frame) => rules::client::mic_frame(&what, frame).map_err(|r| {
                    let e: Error = r.into();
                    (&e).into()
                }),
                Err(e) => Err((&from_read(&addr, e)).into()),
            };
            let _ = tx.send(Some(end));
        });
        Ok(MicStream {
            addr: self.addr.clone(),
            send,
            format,
            encoding: attached.encoding,
            ended,
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
