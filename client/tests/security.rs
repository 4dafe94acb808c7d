//! Refusals and per-client limits against a ringcastd process: raw UDP garbage, clients
//! without a certificate or with one not authorized, no plaintext mode (what travels is
//! encrypted; clients without TLS or ringcast's ALPN get nothing), the per-client stream
//! limit and the request rate limit.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{ConsoleItem, ErrorCode, Identity, Mode, Session, StartAt};
use quinn::rustls;
use testbed::kit::bins::binary;
use testbed::kit::clients::RingcastdExt;
use testbed::kit::FakeConsole;
use testbed::kit::Ringcastd;

const WAIT: Duration = Duration::from_secs(30);

/// ringcastd with an authorization file naming `alice` (read, write, spy on everything).
fn with_alice(dir: &std::path::Path) -> (Ringcastd, Identity) {
    let authz = dir.join("authorized_clients");
    let alice =
        testbed::kit::authorized_client(&dir.join("alice"), "alice", &authz, "read,write,spy");
    let authz = authz.to_str().unwrap().to_owned();
    let d = Ringcastd::start(dir, &dir.join("state"), &["--authorized-clients", &authz]);
    (d, alice)
}

async fn connect(d: &Ringcastd, id: Option<Identity>) -> Result<Session, client::Error> {
    tokio::time::timeout(WAIT, Session::connect(&d.server(), id, d.target().trust()))
        .await
        .expect("connect timed out")
}

/// Reads console items until `want` has arrived (gaps are an error).
async fn read_exact(c: &mut client::ConsoleStream, want: &[u8]) {
    let mut got = Vec::new();
    while got.len() < want.len() {
        match tokio::time::timeout(WAIT, c.next()).await.expect("no data") {
            Ok(Some(ConsoleItem::Chunk { bytes, .. })) => got.extend_from_slice(&bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_no_certificate_and_unknown_certificates_are_refused_and_the_daemon_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (mut d, alice) = with_alice(dir.path());
    let mut qemu = FakeConsole::new(&d.socket(), "vm", "serial0", 1, 1 << 16);
    qemu.connect();

    // Raw UDP garbage. Tiny datagrams get nothing; larger ones may draw what QUIC mandates
    // for unknown packets (a version negotiation, a stateless reset), never a handshake and
    // never more bytes than were sent (no amplification).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut x = 0x243f_6a88_85a3_08d3u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut sent, mut replied, mut reply_bytes) = (0usize, 0usize, 0usize);
    let mut buf = [0u8; 2048];
    // 80 datagrams of each size, then whatever came back (all of it answers that size).
    for len in [1usize, 20, 100, 1200, 1350] {
        for i in 0..80 {
            let mut g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 {
                g[0] |= 0xc0; // a long header, with a random version
            }
            sock.send_to(&g, d.server()).unwrap();
            sent += len;
        }
        while let Ok(n) = sock.recv(&mut buf) {
            assert!(len > 20, "a {len}-byte datagram was answered");
            replied += 1;
            reply_bytes += n;
            let version = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let negotiation = buf[0] & 0x80 != 0 && version == 0;
            let reset = buf[0] & 0xc0 == 0x40;
            assert!(negotiation || reset, "reply {:02x?}", &buf[..n.min(16)]);
            assert!(n <= len, "{n} bytes answered {len}");
        }
    }
    assert!(reply_bytes <= sent, "{reply_bytes} bytes answered {sent}");
    assert!(d.running(), "ringcastd died");

    // A client without a certificate, and one with a certificate not in the file.
    let e = connect(&d, None)
        .await
        .expect_err("anonymous client served");
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
    assert!(
        e.to_string()
            .contains("client without a certificate is not authorized here"),
        "{e}"
    );
    let mallory = testbed::kit::client_identity(&dir.path().join("m"), "mallory");
    let fp = mallory.fingerprint().to_string();
    let e = connect(&d, Some(mallory))
        .await
        .expect_err("mallory served");
    assert_eq!(e.code(), Some(ErrorCode::NotAuthorized), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("client {fp} is not authorized here")),
        "{e}"
    );
    // The CLI with a new identity, where no local ringcastd can authorize it, says the
    // same and what the server's admin can do.
    let out = d
        .ringcast()
        .args(["--control-socket", "/nonexistent/ringcastd.ctl", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("NOT_AUTHORIZED")
            && err.contains("its admin can run: ringcastd authorize SHA256:"),
        "{err}"
    );

    // After all that, the daemon serves alice.
    let s = connect(&d, Some(alice)).await.unwrap();
    let mut c = s
        .attach_console("vm", "serial0", Mode::Read, StartAt::Now)
        .await
        .unwrap();
    qemu.write_all(b"alive\r\n");
    read_exact(&mut c, b"alive\r\n").await;
    let log = d.log();
    assert!(
        log.contains("refused: no authorization rule names this client"),
        "{log}"
    );
    eprintln!("garbage: {sent} bytes sent, {replied} replies, {reply_bytes} bytes");
}

/// Which way a relayed datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
}

/// Relayed datagrams, in the order the relay received them.
type Datagrams = Vec<(Dir, Vec<u8>)>;

/// A UDP relay between one client and a server that keeps a copy of every datagram: what
/// the client sends, and whatever reaches its server-side socket from anywhere.
struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Datagrams>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(server: SocketAddr) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let pump = |from: UdpSocket, to: UdpSocket, dir: Dir| {
            let (seen, stop, client) = (seen.clone(), stop.clone(), client.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Relaxed) {
                    let Ok((n, peer)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    seen.lock().unwrap().push((dir, buf[..n].to_vec()));
                    let dest = match dir {
                        Dir::ToServer => {
                            *client.lock().unwrap() = Some(peer);
                            Some(server)
                        }
                        Dir::ToClient => *client.lock().unwrap(),
                    };
                    if let Some(dest) = dest {
                        let _ = to.send_to(&buf[..n], dest);
                    }
                }
            })
        };
        let threads = vec![
            pump(
                front.try_clone().unwrap(),
                back.try_clone().unwrap(),
                Dir::ToServer,
            ),
            pump(back, front, Dir::ToClient),
        ];
        Relay {
            addr,
            seen,
            stop,
            threads,
        }
    }

    /// Stops relaying; every datagram it saw.
    fn finish(mut self) -> Datagrams {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Accepts any server certificate: for probing what the server accepts, not for trust.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A QUIC handshake with `server` offering these ALPN protocols (TLS 1.3, any server
/// certificate, no client certificate).
async fn quic_handshake(server: SocketAddr, alpn: &[&str]) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let r = match tokio::time::timeout(WAIT, endpoint.connect(server, "localhost").unwrap()).await {
        Ok(Ok(conn)) => {
            conn.close(0u32.into(), b"probe");
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    };
    endpoint.close(0u32.into(), b"");
    r
}

/// Nothing ringcast serves travels or is reachable without QUIC's TLS: console bytes that
/// went from a fake QEMU through ringcastd to `ringcast capture` are nowhere in plaintext in
/// the UDP datagrams between them (captured by a relay); ringcast frames sent in the clear
/// get nothing back but what QUIC mandates for unknown packets; a QUIC client that does not
/// offer ringcast's ALPN fails its handshake; nothing listens on TCP; and neither program
/// has an option for a plaintext mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_is_no_plaintext_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let server: SocketAddr = d.server().parse().unwrap();

    // Known console bytes, every line marked.
    const MARK: &[u8] = b"PLAINTEXT-CANARY";
    let payload: Vec<u8> = (0..2000)
        .flat_map(|i| {
            format!("PLAINTEXT-CANARY line {i:05} of the guest's console\r\n").into_bytes()
        })
        .collect();
    let mut qemu = FakeConsole::new(&d.socket(), "vm", "serial0", 1, 1 << 17);
    qemu.connect();
    qemu.write_all(&payload);
    qemu.wait_drained();

    // `ringcast capture` through the relay gets every byte.
    let relay = Relay::start(server);
    let home = dir.path().join("relayed-client");
    let file = dir.path().join("capture.log");
    let out = std::process::Command::new(binary("ringcast"))
        .arg("--server")
        .arg(relay.addr.to_string())
        .arg("--known-hosts")
        .arg(home.join("known_hosts"))
        .arg("--identity-dir")
        .arg(home.join("identity"))
        .arg("--control-socket")
        .arg(d.control_socket())
        .args(["capture", "vm/serial0", "-o"])
        .arg(&file)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env_remove("RINGCAST_SERVER")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "capture through the relay: {err}"
    );
    assert!(
        std::fs::read(&file).unwrap() == payload,
        "capture differs: {err}"
    );
    let datagrams = relay.finish();

    // The relay carried the session: a QUIC v1 Initial first, more bytes back than the
    // payload, and the marked lines nowhere in them: not in a datagram, not across two.
    let (first_dir, first) = &datagrams[0];
    assert_eq!(*first_dir, Dir::ToServer);
    assert!(
        first[0] & 0xf0 == 0xc0 && first[1..5] == [0, 0, 0, 1] && first.len() >= 1200,
        "the first datagram is not a QUIC v1 Initial: {:02x?}",
        &first[..first.len().min(16)]
    );
    let bytes = |dir: Dir| -> Vec<u8> {
        datagrams
            .iter()
            .filter(|(d, _)| *d == dir)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    };
    let (up, down) = (bytes(Dir::ToServer), bytes(Dir::ToClient));
    assert!(down.len() > payload.len(), "{} bytes came back", down.len());
    for (i, (dir, g)) in datagrams.iter().enumerate() {
        if let Some(at) = find(g, MARK) {
            panic!(
                "console bytes in plaintext in datagram {i} ({dir:?}, {} bytes) at {at}: {:?}",
                g.len(),
                String::from_utf8_lossy(&g[at..g.len().min(at + 64)])
            );
        }
    }
    for (dir, all) in [(Dir::ToServer, &up), (Dir::ToClient, &down)] {
        assert_eq!(
            find(all, MARK),
            None,
            "console bytes in plaintext ({dir:?})"
        );
    }
    eprintln!(
        "relay: {} datagrams, {} bytes to the server, {} to the client; no console byte in \
         plaintext",
        datagrams.len(),
        up.len(),
        down.len()
    );

    // A ringcast client without TLS: its Hello in a datagram of its own, and padded to a
    // QUIC Initial's size. At most what QUIC mandates for unknown packets comes back.
    let mut hello = Vec::new();
    transport_quic::codec::Frame::Hello {
        min_version: 1,
        max_version: 1,
        software: "plaintext".into(),
    }
    .encode(&mut hello)
    .unwrap();
    let mut padded = hello.clone();
    padded.resize(1200, 0);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for g in [&hello, &padded] {
        sock.send_to(g, server).unwrap();
        while let Ok(n) = sock.recv(&mut buf) {
            let version = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let negotiation = buf[0] & 0x80 != 0 && version == 0;
            let reset = buf[0] & 0xc0 == 0x40;
            assert!(
                (negotiation || reset) && n <= g.len(),
                "a plaintext Hello of {} bytes drew {n} bytes: {:02x?}",
                g.len(),
                &buf[..n.min(32)]
            );
            assert_eq!(find(&buf[..n], b"ringcast"), None);
        }
    }

    // QUIC with TLS but without ringcast's ALPN: the handshake fails. The same client
    // offering ringcast/1 completes it.
    for alpn in [&[][..], &["h3"], &["ringcast/0", "http/1.1"]] {
        let e = quic_handshake(server, alpn).await.expect_err(&format!(
            "a QUIC client offering ALPN {alpn:?} completed its handshake"
        ));
        // TLS alert 120: no_application_protocol.
        assert!(
            e.contains("aborted by peer") && e.contains("error 120"),
            "ALPN {alpn:?}: {e}"
        );
    }
    quic_handshake(server, &["ringcast/1"])
        .await
        .expect("the probing client offering ringcast/1");

    // No option for a plaintext mode; nothing on TCP at the QUIC port.
    for bin in [binary("ringcastd"), binary("ringcast")] {
        let out = std::process::Command::new(&bin)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success());
        for word in ["plaintext", "insecure", "no-tls", "--tcp", "unencrypted"] {
            assert!(
                !text.contains(word),
                "{} --help mentions {word}",
                bin.display()
            );
        }
    }
    for flag in ["--insecure", "--no-tls", "--plaintext"] {
        let out = std::process::Command::new(binary("ringcastd"))
            .args(["--state-dir"])
            .arg(dir.path())
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "ringcastd {flag}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
    }
    assert!(std::net::TcpStream::connect(server).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_no_stream_beyond_its_limit_and_is_rate_limited_while_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    let mut qemu = FakeConsole::new(&d.socket(), "vm", "serial0", 1, 1 << 16);
    qemu.connect();
    let limits = transport_quic::proto::Limits::default();
    let s = d.session().await;
    // The control stream is one of the `max_streams`.
    let mut attached = Vec::new();
    for _ in 1..limits.max_streams {
        attached.push(
            s.attach_console("vm", "serial0", Mode::Read, StartAt::Now)
                .await
                .unwrap(),
        );
    }
    // One more is not granted: the attach waits for a stream.
    let extra = tokio::time::timeout(
        Duration::from_secs(2),
        s.attach_console("vm", "serial0", Mode::Read, StartAt::Now),
    )
    .await;
    assert!(extra.is_err(), "a stream beyond the limit was granted");
    // Those already attached keep working, and so does the control stream.
    qemu.write_all(b"limit\r\n");
    for c in attached.iter_mut() {
        read_exact(c, b"limit\r\n").await;
    }
    assert_eq!(
        s.list().await.unwrap()[0].subscribers as usize,
        attached.len()
    );
    // Detached streams are given back (quinn announces new stream credit once more than an
    // eighth of the limit is free: 5 of 32).
    for _ in 0..=limits.max_streams / 8 {
        attached.pop().unwrap().detach().await;
    }
    let again = tokio::time::timeout(
        WAIT,
        s.attach_console("vm", "serial0", Mode::Read, StartAt::Now),
    )
    .await
    .expect("no stream after a detach")
    .unwrap();
    attached.push(again);

    // Requests beyond the rate: the burst passes, then RATE_LIMITED closes that client.
    let greedy = d.session().await;
    let mut served = 0u32;
    let e = loop {
        match greedy.list().await {
            Ok(_) => served += 1,
            Err(e) => break e,
        }
        assert!(served < 10 * limits.request_burst, "never rate limited");
    };
    assert_eq!(e.code(), Some(ErrorCode::RateLimited), "{e}");
    assert!(
        served >= limits.request_burst - 2,
        "only {served} requests before the limit"
    );
    // Others are unaffected: the first session still lists and reads, a new one connects.
    assert!(!s.list().await.unwrap().is_empty());
    qemu.write_all(b"after\r\n");
    for c in attached.iter_mut() {
        read_exact(c, b"after\r\n").await;
    }
    assert!(!d.session().await.list().await.unwrap().is_empty());
    eprintln!("rate limit: {served} requests served before RATE_LIMITED");
}
