//! The ringcast CLI against a server that lies: a hand-written QUIC server speaking the
//! protocol, whose answers are not what ringcastd would send.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use transport_quic::codec::{
    AudioEncoding, DeviceEntry, DeviceKind, DeviceState, Frame, GapReason,
};
use transport_quic::io::{send_frame, FrameReader};
use transport_quic::tls::Identity;

/// A server with one console, `vm/serial0`, whose journal it says ends at 10; an attach
/// gets 4 bytes and then a gap of 1 TiB.
fn lying_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (identity, _, _) = Identity::generate("liar", &["localhost".into()]).unwrap();
    let server_cfg = transport_quic::tls::server_config(&identity, &Default::default()).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = quinn::Endpoint::new(
        transport_quic::endpoint::server_endpoint_config(&identity),
        Some(server_cfg),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            tokio::spawn(serve(conn));
        }
    });
    (addr, task)
}

fn entry() -> DeviceEntry {
    DeviceEntry {
        vm: "vm".into(),
        device: "serial0".into(),
        kind: DeviceKind::Console,
        state: DeviceState::Attached,
        audio: None,
        bytes: 10,
        periods: 0,
        journal_start: 0,
        journal_end: 10,
        subscribers: 0,
    }
}

async fn serve(conn: quinn::Connection) {
    let Ok((mut send, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut reader = FrameReader::new(recv);
    let Ok(Some(Frame::Hello { .. })) = reader.next().await else {
        return;
    };
    let welcome = Frame::Welcome {
        version: transport_quic::proto::MAX_VERSION,
        software: "liar".into(),
    };
    if send_frame(&mut send, &welcome).await.is_err() {
        return;
    }
    let attachments = conn.clone();
    tokio::spawn(async move {
        while let Ok((mut send, recv)) = attachments.accept_bi().await {
            let mut reader = FrameReader::new(recv);
            let Ok(Some(Frame::Attach { .. })) = reader.next().await else {
                return;
            };
            let frames = [
                Frame::Attached {
                    kind: DeviceKind::Console,
                    offset: 0,
                    audio: None,
                    encoding: AudioEncoding::Pcm,
                },
                Frame::Data {
                    offset: 0,
                    bytes: Bytes::from_static(b"0123"),
                },
                Frame::Gap {
                    offset: 4,
                    len: 1 << 40,
                    reason: GapReason::Lost,
                },
            ];
            for f in &frames {
                if send_frame(&mut send, f).await.is_err() {
                    return;
                }
            }
            // Keep the stream open: the client decides.
            let _ = reader.next().await;
        }
    });
    while let Ok(Some(frame)) = reader.next().await {
        let reply = match frame {
            Frame::ListDevices { request } => Frame::Devices {
                request,
                devices: vec![entry()],
            },
            Frame::GetStats { request } => Frame::error(
                request,
                transport_quic::ErrorCode::Internal,
                "vm\u{1b}]0;owned\u{7}\u{1b}[31m is broken",
            ),
            _ => return,
        };
        if send_frame(&mut send, &reply).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_beyond_the_journal_the_server_reports_stops_capture_without_a_huge_file() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = lying_server();
    let file = dir.path().join("capture.log");
    let mut child = std::process::Command::new(testbed::kit::bins::binary("ringcast"))
        .arg("--server")
        .arg(addr.to_string())
        .arg("--known-hosts")
        .arg(dir.path().join("known_hosts"))
        .arg("--identity-dir")
        .arg(dir.path().join("identity"))
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join(".config"))
        .env("XDG_STATE_HOME", dir.path().join(".state"))
        .args(["capture", "vm/serial0", "-o"])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let len = std::fs::metadata(&file).map_or(0, |m| m.len());
            panic!("ringcast capture did not end; the file is {len} bytes long");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().unwrap();
    server.abort();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the server sent a gap of 1099511627776 bytes at offset 4, beyond the end of vm/serial0's journal it reports (10)"),
        "{err}"
    );
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len <= 10, "the capture file is {len} bytes long");
    assert_eq!(&std::fs::read(&file).unwrap()[..4], b"0123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_error_message_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = lying_server();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            std::process::Command::new(testbed::kit::bins::binary("ringcast"))
                .arg("--server")
                .arg(addr.to_string())
                .arg("--known-hosts")
                .arg(dir.join("known_hosts"))
                .arg("--identity-dir")
                .arg(dir.join("identity"))
                .env("HOME", &dir)
                .env("XDG_CONFIG_HOME", dir.join(".config"))
                .env("XDG_STATE_HOME", dir.join(".state"))
                .arg("stats")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    server.abort();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains(['\u{1b}', '\u{7}']), "{err:?}");
    assert!(
        err.contains("vm\\u{1b}]0;owned\\u{7}\\u{1b}[31m is broken"),
        "{err}"
    );
}
