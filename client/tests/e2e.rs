//! Fake QEMU (shared-memory rings, as sidecar/tests do) → ringcastd → QUIC on loopback →
//! client library.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use client::{ConsoleItem, ErrorCode, Identity, Mode, Session, StartAt, Trust};
use sidecar::net::{NetConfig, NetServer};
use sidecar::Daemon;
use testbed::kit::raw::{close_reason, closed_with, RawClient};
use testbed::kit::{config, sha, stream, wait_until, FakeAudio, FakeConsole};
use transport_quic::authz::{Rights, Rule, Who};
use transport_quic::codec::Frame;

const WAIT: Duration = Duration::from_secs(30);

struct Env {
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
    server: Option<NetServer>,
    addr: String,
}

impl Env {
    /// A daemon and its QUIC server; the authorization file says `authz`, or, without one,
    /// the host's admin has granted the test's own identity every right.
    fn start(authz: Option<&str>) -> Env {
        let env = Env::bare(authz);
        if authz.is_none() {
            env.grant_all();
        }
        env
    }

    /// The host's admin grants the test's own identity every right.
    fn grant_all(&self) {
        let rule = Rule {
            who: Who::Fingerprint(self.identity().fingerprint()),
            patterns: vec!["*/*".into()],
            rights: Rights::ALL,
        };
        let grants = self.daemon.as_ref().unwrap().handle();
        grants.local_grants().grant(rule).unwrap();
    }

    /// Like [`Env::start`] with no grant at all when `authz` is `None`.
    fn bare(authz: Option<&str>) -> Env {
        Env::with_limits(authz, Default::default())
    }

    /// Like [`Env::bare`] with the server's per-client limits.
    fn with_limits(authz: Option<&str>, limits: protocol::proto::Limits) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let daemon = Daemon::start(cfg.clone()).unwrap();
        let authorized_clients = dir.path().join("authorized_clients");
        if let Some(text) = authz {
            std::fs::write(&authorized_clients, text).unwrap();
        }
        let server = NetServer::start(
            daemon.handle(),
            NetConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                identity_dir: cfg.state_dir.clone(),
                authorized_clients,
                client_ca: None,
                limits,
            },
        )
        .unwrap();
        let addr = server.local_addr().to_string();
        Env {
            dir,
            daemon: Some(daemon),
            server: Some(server),
            addr,
        }
    }

    fn socket(&self) -> std::path::PathBuf {
        config(self.dir.path()).socket
    }

    fn trust(&self) -> Trust {
        Trust::KnownHosts(self.dir.path().join("known_hosts"))
    }

    /// The test's own identity (created on first use).
    fn identity(&self) -> Identity {
        testbed::kit::identity::reused_client_identity(&self.dir.path().join("ids"), "lib")
    }

    async fn session(&self) -> Session {
        self.session_as(Some(self.identity())).await.unwrap()
    }

    async fn session_as(&self, id: Option<Identity>) -> Result<Session, client::Error> {
        tokio::time::timeout(WAIT, Session::connect(&self.addr, id, self.trust()))
            .await
            .expect("connect timed out")
    }

    async fn stop(mut self) {
        self.server.take().unwrap().shutdown().await;
        self.daemon.take().unwrap().shutdown();
    }
}

fn attach_frame(vm: &str, device: &str, mode: Mode) -> Frame {
    Frame::Attach {
        vm: vm.into(),
        device: device.into(),
        mode,
        start: StartAt::Now,
        datagrams: false,
        codecs: vec![],
    }
}

fn identity(dir: &Path, name: &str) -> Identity {
    testbed::kit::client_identity(dir, name)
}

/// Reads console items until `n` bytes from the stream's start offset have arrived.
async fn read_bytes(c: &mut client::ConsoleStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        let item = tokio::time::timeout(WAIT, c.next())
            .await
            .expect("console data timed out")
            .unwrap()
            .expect("stream ended early");
        match item {
            ConsoleItem::Chunk { bytes, .. } => out.extend_from_slice(&bytes),
            ConsoleItem::Gap { .. } => panic!("unexpected gap"),
        }
    }
    out
}

fn produce(
    socket: &Path,
    vm: &str,
    dev: &str,
    seed: u64,
    len: u64,
) -> std::thread::JoinHandle<FakeConsole> {
    let mut c = FakeConsole::new(socket, vm, dev, 1, 1 << 16);
    c.connect();
    std::thread::spawn(move || {
        let data = stream(seed, 0, len);
        for piece in data.chunks(10_000) {
            c.write_all(piece);
        }
        c
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_read_the_same_console_at_once_with_equal_checksums() {
    let env = Env::start(None);
    const N: u64 = 3 << 20;
    let producer = produce(&env.socket(), "vm", "ttyS0", 7, N);
    let (a, b) = (env.session().await, env.session().await);
    let mut ca = a
        .attach_console("vm", "ttyS0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    let mut cb = b
        .attach_console("vm", "ttyS0", Mode::Spy, StartAt::Offset(0))
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        read_bytes(&mut ca, N as usize),
        read_bytes(&mut cb, N as usize)
    );
    let expected = sha(&stream(7, 0, N));
    assert_eq!(sha(&ra), expected);
    assert_eq!(sha(&rb), expected);
    let _c = producer.join().unwrap();
    let list = a.list().await.unwrap();
    let d = list.iter().find(|d| d.device == "ttyS0").unwrap();
    assert_eq!(d.journal_end, N);
    assert_eq!(d.subscribers, 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_per_console_while_spies_watch_and_cannot_write() {
    let env = Env::start(None);
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    let (a, b, s) = (
        env.session().await,
        env.session().await,
        env.session().await,
    );
    let mut writer = a
        .attach_console("vm", "ttyS0", Mode::Write, StartAt::Now)
        .await
        .unwrap();
    let busy = b
        .attach_console("vm", "ttyS0", Mode::Write, StartAt::Now)
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Some(ErrorCode::WriterBusy), "{busy}");
    assert!(
        busy.to_string().contains("already attached for writing by"),
        "{busy}"
    );
    let mut spy = s
        .attach_console("vm", "ttyS0", Mode::Spy, StartAt::Now)
        .await
        .unwrap();
    // The library refuses locally; the server refuses what a hostile client sends anyway.
    assert_eq!(
        spy.write(b"x").await.unwrap_err().code(),
        Some(ErrorCode::ReadOnly)
    );
    let raw = RawClient::connect(&env.addr, env.trust(), Some(env.identity())).await;
    let mut raw_spy = raw.open(&attach_frame("vm", "ttyS0", Mode::Spy)).await;
    assert!(matches!(
        raw_spy.next().await,
        Ok(Some(Frame::Attached { .. }))
    ));
    raw_spy
        .send(&Frame::Input {
            bytes: bytes::Bytes::from_static(b"rm -rf /\r"),
        })
        .await;
    match tokio::time::timeout(WAIT, raw_spy.next()).await.unwrap() {
        Ok(Some(Frame::Error { code, message, .. })) => {
            assert_eq!(
                ErrorCode::from_code(code),
                Some(ErrorCode::ReadOnly),
                "{message}"
            );
            assert!(message.contains("input refused"), "{message}");
        }
        other => panic!("input on a spy attachment was not refused: {other:?}"),
    }

    writer.write(b"hello guest\r").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    wait_until("input to reach the ring", WAIT, || {
        let r = qemu.rx.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..r.bytes]);
        got.len() >= 12
    });
    assert_eq!(got, b"hello guest\r");
    // Echo reaches the writer and a new spy alike.
    let mut spy2 = s
        .attach_console("vm", "ttyS0", Mode::Spy, StartAt::Now)
        .await
        .unwrap();
    qemu.write_all(b"hello guest\r\n");
    assert_eq!(read_bytes(&mut writer, 13).await, b"hello guest\r\n");
    assert_eq!(read_bytes(&mut spy2, 13).await, b"hello guest\r\n");
    // When the writer leaves, the lock is free.
    writer.detach().await;
    let mut w2 = None;
    for _ in 0..100 {
        match b
            .attach_console("vm", "ttyS0", Mode::Write, StartAt::Now)
            .await
        {
            Ok(w) => {
                w2 = Some(w);
                break;
            }
            Err(e) if e.code() == Some(ErrorCode::WriterBusy) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(w2.is_some(), "the write lock was never released");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_resumes_from_its_offset_without_losing_a_byte() {
    let env = Env::start(None);
    const N: u64 = 2 << 20;
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "hvc0", 1, 1 << 16);
    qemu.connect();
    let data = stream(11, 0, N);
    qemu.write_all(&data[..(N / 2) as usize]);
    let (mut received, resume_at) = {
        let s = env.session().await;
        let mut c = s
            .attach_console("vm", "hvc0", Mode::Read, StartAt::Offset(0))
            .await
            .unwrap();
        let got = read_bytes(&mut c, 300_000).await;
        let at = c.offset();
        s.close().await;
        (got, at)
    };
    assert_eq!(resume_at, received.len() as u64);
    // More output while the client is away.
    let rest = data[(N / 2) as usize..].to_vec();
    let writer = std::thread::spawn(move || {
        qemu.write_all(&rest);
        qemu
    });
    let s = env.session().await;
    let mut c = s
        .attach_console("vm", "hvc0", Mode::Read, StartAt::Offset(resume_at))
        .await
        .unwrap();
    received.extend(read_bytes(&mut c, (N - resume_at) as usize).await);
    let _q = writer.join().unwrap();
    assert_eq!(sha(&received), sha(&data));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_clients_are_refused_and_read_only_rights_cannot_write() {
    let ids = tempfile::tempdir().unwrap();
    let alice = identity(ids.path(), "alice");
    let mallory = identity(ids.path(), "mallory");
    let env = Env::start(Some(&format!(
        "# alice may read vm's consoles\n{} vm/* read,spy\n",
        alice.fingerprint()
    )));
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    qemu.write_all(b"boot log\r\n");
    for (who, id) in [("mallory", Some(mallory)), ("anonymous", None)] {
        let r = match env.session_as(id).await {
            Ok(s) => s.list().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = r.expect_err(who);
        assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{who}: {e}");
    }
    let s = env.session_as(Some(alice)).await.unwrap();
    assert_eq!(s.list().await.unwrap().len(), 1);
    let mut c = s
        .attach_console("vm", "ttyS0", Mode::Read, StartAt::Offset(0))
        .await
        .unwrap();
    assert_eq!(read_bytes(&mut c, 10).await, b"boot log\r\n");
    let e = s
        .attach_console("vm", "ttyS0", Mode::Write, StartAt::Now)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_that_client_while_the_server_keeps_serving_others() {
    let env = Env::start(None);
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    let good = env.session().await;
    let mut gc = good
        .attach_console("vm", "ttyS0", Mode::Read, StartAt::Now)
        .await
        .unwrap();
    let hostile: [&[u8]; 3] = [
        &[0x99, 0, 0, 0, 0],             // unknown frame type
        &[0x05, 0xff, 0xff, 0xff, 0xff], // a 4 GiB frame
        &[0x06, 0, 0, 0, 3, 1, 2, 3],    // a truncated field
    ];
    let expect = [
        ErrorCode::UnknownFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::MalformedFrame,
    ];
    for (bytes, code) in hostile.iter().zip(expect) {
        let bad = RawClient::connect(&env.addr, env.trust(), Some(env.identity())).await;
        let mut bc = bad.open(&attach_frame("vm", "ttyS0", Mode::Read)).await;
        assert!(matches!(bc.next().await, Ok(Some(Frame::Attached { .. }))));
        let _ = bc.send_bytes(bytes).await;
        let e = tokio::time::timeout(WAIT, bc.next())
            .await
            .unwrap()
            .expect_err("the hostile stream goes on");
        assert_eq!(closed_with(&e), Some(code), "{e}");
        qemu.write_all(b"still here\r\n");
        assert_eq!(read_bytes(&mut gc, 12).await, b"still here\r\n");
        assert!(!good.list().await.unwrap().is_empty());
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_periods_arrive_in_order_on_the_stream_and_as_datagrams() {
    let env = Env::start(None);
    let mut audio = FakeAudio::new(&env.socket(), "vm", "snd0");
    let s = env.session().await;
    let mut on_stream = s.attach_audio("vm", "snd0", false).await.unwrap();
    let mut as_datagrams = s.attach_audio("vm", "snd0", true).await.unwrap();
    let f = on_stream.format().unwrap();
    assert_eq!((f.rate, f.channels, f.sample_format), (48_000, 2, 3));
    let s = Arc::new(s);
    const PERIODS: u64 = 50;
    for seq in 0..PERIODS {
        assert!(audio.push(seq, 120));
        // Pace like a sound card so no queue overflows.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for seq in 0..PERIODS {
        let p = tokio::time::timeout(WAIT, on_stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(p.seq, seq);
        assert_eq!(p.frames, 120);
        assert_eq!(&p.pcm[..], &stream(seq, 0, 480)[..]);
    }
    // Datagrams may be lost in principle; on loopback at this pace they are not, and
    // whatever arrives is whole and in order.
    let mut last = None;
    let mut got = 0;
    while got < PERIODS {
        let p = tokio::time::timeout(WAIT, as_datagrams.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&p.pcm[..], &stream(p.seq, 0, 480)[..]);
        assert!(last.is_none_or(|l| p.seq > l));
        last = Some(p.seq);
        got += 1;
        if p.seq == PERIODS - 1 {
            break;
        }
    }
    assert!(got >= PERIODS * 9 / 10, "only {got} datagram periods");
    let stats = s.stats().await.unwrap();
    assert!(stats
        .iter()
        .any(|e| e.device.device == "snd0" && e.device.periods == PERIODS));
    drop(s);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_server_identity_is_refused_like_ssh_and_a_pinned_one_is_accepted() {
    let env = Env::start(None);
    let first = env.session().await; // pins on first use
    first.close().await;
    let known = std::fs::read_to_string(env.dir.path().join("known_hosts")).unwrap();
    assert!(
        known.contains(&env.addr) && known.contains("SHA256:"),
        "{known}"
    );
    env.session().await.close().await; // the pinned identity is accepted
    let forged = format!(
        "{} {}\n",
        env.addr,
        transport_quic::tls::Fingerprint::of(b"other")
    );
    std::fs::write(env.dir.path().join("known_hosts"), forged).unwrap();
    let e = env.session_as(Some(env.identity())).await.unwrap_err();
    assert!(matches!(e, client::Error::HostKeyChanged(_)), "{e}");
    assert!(e.to_string().contains("HAS CHANGED"), "{e}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rules_no_client_gets_in_from_loopback_either_until_the_admin_grants_one() {
    let env = Env::bare(None);
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    let other = identity(&env.dir.path().join("ids"), "other");
    for (who, id) in [
        ("anonymous", None),
        ("an unknown identity", Some(env.identity())),
    ] {
        let e = env.session_as(id).await.expect_err(who);
        assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{who}: {e}");
        assert!(e.to_string().contains("ringcastd authorize"), "{who}: {e}");
    }
    let rule = Rule::parse(&format!("{} vm/* read", env.identity().fingerprint())).unwrap();
    env.daemon
        .as_ref()
        .unwrap()
        .handle()
        .local_grants()
        .grant(rule)
        .unwrap();
    let s = env.session().await;
    assert_eq!(s.list().await.unwrap().len(), 1);
    let e = env
        .session_as(Some(other))
        .await
        .expect_err("another identity");
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
    assert!(
        std::fs::read_to_string(config(env.dir.path()).state_dir.join("local_clients"))
            .unwrap()
            .contains("vm/* read"),
        "the grant is kept for the next start"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_frame_an_oversized_one_and_too_many_connections_are_refused() {
    let limits = protocol::proto::Limits {
        frame_deadline: Duration::from_millis(500),
        max_connections_per_client: 2,
        ..Default::default()
    };
    let env = Env::with_limits(None, limits);
    env.grant_all();
    let mut qemu = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    qemu.connect();
    // A frame header promising 10 bytes, then 3 of them, then nothing.
    let stalled = RawClient::connect(&env.addr, env.trust(), Some(env.identity())).await;
    let mut s = stalled
        .open(&attach_frame("vm", "ttyS0", Mode::Write))
        .await;
    assert!(matches!(s.next().await, Ok(Some(Frame::Attached { .. }))));
    s.send_bytes(&[0x05, 0, 0, 0, 10, 0, 0, 0]).await.unwrap();
    let e = tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap()
        .expect_err("a stalled frame");
    assert_eq!(closed_with(&e), Some(ErrorCode::ProtocolViolation), "{e}");
    let why = close_reason(&e).unwrap_or_default();
    assert!(why.contains("not completed within 500ms"), "{why}");
    drop(stalled);
    // An input frame far beyond what a client needs is refused from its header alone.
    let big = RawClient::connect(&env.addr, env.trust(), Some(env.identity())).await;
    let mut s = big.open(&attach_frame("vm", "ttyS0", Mode::Write)).await;
    assert!(matches!(s.next().await, Ok(Some(Frame::Attached { .. }))));
    let _ = s.send_bytes(&[0x05, 0, 0x08, 0, 0]).await; // 512 KiB promised
    let e = tokio::time::timeout(WAIT, s.next())
        .await
        .unwrap()
        .expect_err("an oversized frame");
    assert_eq!(closed_with(&e), Some(ErrorCode::FrameTooLarge), "{e}");
    drop(big);
    // Two connections of one identity at once, not three.
    let a = env.session().await;
    let b = env.session().await;
    let e = env
        .session_as(Some(env.identity()))
        .await
        .expect_err("a third connection");
    assert_eq!(e.code(), Some(ErrorCode::TooManyConnections), "{e}");
    a.close().await;
    let c = tokio::time::timeout(WAIT, async {
        loop {
            match env.session_as(Some(env.identity())).await {
                Ok(c) => return c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("a connection closed makes room for another");
    assert!(c.list().await.is_ok() && b.list().await.is_ok());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_never_types_into_the_process_that_registered_the_name_after_it() {
    let env = Env::start(None);
    let mut first = FakeConsole::new(&env.socket(), "vm", "ttyS0", 1, 1 << 16);
    first.connect();
    let s = env.session().await;
    let mut w = s
        .attach_console("vm", "ttyS0", Mode::Write, StartAt::Now)
        .await
        .unwrap();
    w.write(b"a").await.unwrap();
    let mut buf = [0u8; 8];
    wait_until("the first keystroke to reach the first QEMU", WAIT, || {
        first.rx.read(&mut buf).unwrap().bytes == 1
    });
    // The QEMU goes away and a new process registers the same device.
    drop(first);
    let mut second = FakeConsole::new(&env.socket(), "vm", "ttyS0", 2, 1 << 16);
    second.connect();
    w.write(b"rm -rf /\r").await.unwrap();
    // The journal may first show the restart marker; then the session ends.
    let e = tokio::time::timeout(WAIT, async {
        loop {
            match w.next().await {
                Ok(Some(ConsoleItem::Chunk { .. })) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the writer is told")
    .expect_err("the old write session goes on");
    assert_eq!(e.code(), Some(ErrorCode::NotAttached), "{e}");
    assert!(e.to_string().contains("registered again"), "{e}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        second.rx.read(&mut buf).unwrap().bytes,
        0,
        "keystrokes reached the new process"
    );
    // A new attachment types into the new process.
    let mut w2 = s
        .attach_console("vm", "ttyS0", Mode::Write, StartAt::Now)
        .await
        .unwrap();
    w2.write(b"ok").await.unwrap();
    wait_until("typing into the new QEMU", WAIT, || {
        second.rx.read(&mut buf).unwrap().bytes == 2
    });
    env.stop().await;
}

/// A stereo s16 tone of `hz` at 48 kHz: period `n` of `frames` frames.
fn tone_period(hz: f64, n: u64, frames: u64) -> Vec<u8> {
    (n * frames..(n + 1) * frames)
        .flat_map(|i| {
            let v = (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 48_000.0).sin())
                as i16;
            [v.to_le_bytes(), v.to_le_bytes()].concat()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_subscribers_share_one_encoder_and_a_pcm_only_client_still_gets_pcm() {
    use client::playout::Player;
    use client::{AudioCodec, AudioEncoding};
    let env = Env::start(None);
    let mut audio = FakeAudio::new(&env.socket(), "vm", "snd0");
    let s = env.session().await;
    // A client that offers nothing (as every client before codecs) gets PCM.
    let mut pcm = s.attach_audio("vm", "snd0", false).await.unwrap();
    assert_eq!(pcm.encoding(), AudioEncoding::Pcm);
    let mut first = s
        .attach_audio_with("vm", "snd0", false, &[AudioCodec::Opus, AudioCodec::Pcm])
        .await
        .unwrap();
    let AudioEncoding::Opus(params) = first.encoding() else {
        panic!(
            "Opus was offered and the device is stereo s16, got {:?}",
            first.encoding()
        );
    };
    assert_eq!((params.channels, params.frame_samples), (2, 480));
    const PERIODS: u64 = 100; // 1 s of 10 ms periods
    let push = |audio: &mut FakeAudio, range: std::ops::Range<u64>| {
        for n in range {
            let pcm = tone_period(440.0, n, 480);
            assert!(audio.try_push_pcm(n * 10_000_000, 480, &pcm).unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    push(&mut audio, 0..20);
    // The second Opus subscriber joins the running encoder: its frames continue the
    // first one's numbering and are the same packets.
    let mut second = s
        .attach_audio_with("vm", "snd0", false, &[AudioCodec::Opus])
        .await
        .unwrap();
    assert_eq!(second.encoding(), AudioEncoding::Opus(params));
    push(&mut audio, 20..PERIODS);
    let mut opus_frames = Vec::new();
    while opus_frames.len() < 90 {
        let f = tokio::time::timeout(WAIT, first.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        opus_frames.push(f);
    }
    let joined = tokio::time::timeout(WAIT, second.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        joined.seq > 0,
        "the second subscriber started its own encoder"
    );
    let same = opus_frames.iter().find(|f| f.seq == joined.seq).unwrap();
    assert_eq!(same.pcm, joined.pcm);
    // PCM is the device's own bytes, untouched.
    let p = tokio::time::timeout(WAIT, pcm.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&p.pcm[..], &tone_period(440.0, 0, 480)[..]);
    // Opus decodes to the tone: 48 kHz, its frequency, no holes.
    let mut player = Player::new(first.encoding(), first.format().unwrap(), 0, true).unwrap();
    for f in opus_frames {
        player.push(0, f);
    }
    let mut decoded = Vec::new();
    while player.buffered() > 0 {
        if let Some(t) = player.tick(1_000_000_000) {
            decoded.extend(t.pcm);
        }
    }
    let tone = testbed::tone::analyze_s16le(&decoded, 2, 48_000);
    assert!((tone.frequency_hz - 440.0).abs() < 2.0, "{tone:?}");
    assert!(tone.active_frames > 48_000 * 8 / 10, "{tone:?}");
    assert_eq!(tone.holes, 0, "{tone:?}");
    assert_eq!(player.stats().jitter.concealed, 0);
    // Three subscribers: the encoder's own input is not counted as one.
    let stats = s.stats().await.unwrap();
    let snd = stats.iter().find(|e| e.device.device == "snd0").unwrap();
    assert_eq!(snd.device.subscribers, 3);
    drop((pcm, first, second));
    env.stop().await;
}

/// `ringcast mic`'s path: PCM a writer sends reaches the device's capture ring exactly, in
/// the format the device announced; one sender at a time; a listener with every right
/// but write, and a device whose sound card records nothing, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mic_audio_reaches_the_capture_ring_and_only_a_writer_with_the_audio_right_sends_it() {
    let ids = tempfile::tempdir().unwrap();
    let alice = identity(ids.path(), "alice");
    let spy = identity(ids.path(), "spy");
    let env = Env::start(Some(&format!(
        "{} vm/* audio,write\n{} vm/* audio,read,spy,monitor\n",
        alice.fingerprint(),
        spy.fingerprint()
    )));
    let input = shm_ring::handover::AudioFormat {
        frequency: 44_100,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    let mut audio = FakeAudio::with_input(&env.socket(), "vm", "snd0", input);
    let _plain = FakeAudio::new(&env.socket(), "vm", "snd1");
    let s = env.session_as(Some(alice.clone())).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while s.list().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both devices listed");
    let mut m = s.attach_mic("vm", "snd0").await.unwrap();
    let f = m.format();
    assert_eq!((f.rate, f.channels, f.sample_format), (44_100, 2, 3));
    assert_eq!(m.frame_bytes(), 4);
    let sent = stream(7, 0, 441 * 4 * 10);
    for chunk in sent.chunks(441 * 4) {
        m.send(chunk).await.unwrap();
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < sent.len() && std::time::Instant::now() < deadline {
        got.extend(audio.read_input());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(got == sent, "{} of {} bytes arrived", got.len(), sent.len());
    // One sender per device.
    let other = env.session_as(Some(alice.clone())).await.unwrap();
    let e = other.attach_mic("vm", "snd0").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::WriterBusy), "{e}");
    // A listener cannot send, whatever else it may do; it still listens.
    let watcher = env.session_as(Some(spy)).await.unwrap();
    let e = watcher.attach_mic("vm", "snd0").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
    assert!(
        e.to_string().contains("needs the audio and write rights"),
        "{e}"
    );
    watcher.attach_audio("vm", "snd0", false).await.unwrap();
    assert!(audio.read_input().is_empty());
    // A sound card that records nothing has no microphone.
    let e = s.attach_mic("vm", "snd1").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotAttached), "{e}");
    assert!(e.to_string().contains("has no audio input"), "{e}");
    // Once the sender leaves, another may send.
    m.detach().await;
    let mut m2 = tokio::time::timeout(WAIT, async {
        loop {
            match other.attach_mic("vm", "snd0").await {
                Ok(m) => return m,
                Err(e) if e.code() == Some(ErrorCode::WriterBusy) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    m2.send(&[1, 2, 3, 4]).await.unwrap();
    m2.detach().await;
    drop((s, other, watcher));
    env.stop().await;
}
