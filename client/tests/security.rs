//! Refusals and per-client limits against a ringcastd process: raw UDP garbage, clients
//! without a certificate or with one not authorized, no plaintext mode, the per-client
//! stream limit and the request rate limit.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use client::{ConsoleItem, ErrorCode, Identity, Mode, Session, StartAt};
use support::{Ringcastd, RingcastdExt};
use testbed::kit::FakeConsole;

const WAIT: Duration = Duration::from_secs(30);

/// ringcastd with an authorization file naming `alice` (read, write, spy on everything).
fn with_alice(dir: &std::path::Path) -> (Ringcastd, Identity) {
    let alice = Identity::create(&dir.join("alice"), "alice", "alice", &["alice".into()]).unwrap();
    let authz = dir.join("authorized_clients");
    std::fs::write(
        &authz,
        format!("{} */* read,write,spy\n", alice.fingerprint()),
    )
    .unwrap();
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
    let mallory = Identity::create(&dir.path().join("m"), "mallory", "mallory", &[]).unwrap();
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
    // The CLI (its identity directory is empty) says the same.
    let out = d.ringcast().arg("list").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("NOT_AUTHORIZED") && err.contains("without a certificate"),
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
        log.contains("refused: not in the authorization file"),
        "{log}"
    );
    eprintln!("garbage: {sent} bytes sent, {replied} replies, {reply_bytes} bytes");
}

#[test]
fn there_is_no_plaintext_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (bin, help) in [
        (support::binary("ringcastd"), "--help"),
        (support::binary("ringcast"), "--help"),
    ] {
        let out = std::process::Command::new(&bin).arg(help).output().unwrap();
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
        let out = std::process::Command::new(support::binary("ringcastd"))
            .args(["--state-dir"])
            .arg(dir.path())
            .arg(flag)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "ringcastd {flag}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
    }
    // Nothing listens on TCP at the QUIC port either.
    let d = Ringcastd::start(dir.path(), &dir.path().join("state"), &[]);
    assert!(std::net::TcpStream::connect(d.server()).is_err());
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
