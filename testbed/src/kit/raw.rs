//! A client that writes frames and bytes by hand: how a server treats what the client
//! library never sends (input on a read-only attachment, malformed frames).

use bytes::Bytes;
use client::{Identity, Trust};
use transport_quic::codec::Frame;
use transport_quic::io::{send_frame, FrameReader, ReadFrameError};
use transport_quic::rules;
use transport_quic::{ErrorCode, QuicErrorCode};

/// A connection that has done the handshake and nothing else.
#[derive(Debug)]
pub struct RawClient {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// Kept open for the connection's life (the server only reads it).
    _control: (quinn::SendStream, FrameReader),
}

/// One stream of a [`RawClient`].
#[derive(Debug)]
pub struct RawStream {
    send: quinn::SendStream,
    reader: FrameReader,
}

impl RawClient {
    /// Connects to `addr` (`host:port`) as `identity` and says Hello.
    pub async fn connect(addr: &str, trust: Trust, identity: Option<Identity>) -> RawClient {
        let target: std::net::SocketAddr = addr.parse().expect("an IP address and port");
        let setup =
            transport_quic::tls::client_config(identity.as_ref(), &trust, addr).expect("TLS setup");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("a UDP socket");
        endpoint.set_default_client_config(setup.config);
        let conn = endpoint
            .connect(target, "localhost")
            .expect("a connection attempt")
            .await
            .expect("connected");
        let (mut send, recv) = conn.open_bi().await.expect("the control stream");
        send_frame(&mut send, &rules::client::hello("raw test client"))
            .await
            .expect("Hello sent");
        let mut reader = FrameReader::new(recv);
        rules::client::on_welcome(reader.next().await.expect("a Welcome")).expect("welcomed");
        RawClient {
            _endpoint: endpoint,
            conn,
            _control: (send, reader),
        }
    }

    /// Opens a stream and sends `first` on it.
    pub async fn open(&self, first: &Frame) -> RawStream {
        let (mut send, recv) = self.conn.open_bi().await.expect("a new stream");
        send_frame(&mut send, first)
            .await
            .expect("first frame sent");
        RawStream {
            send,
            reader: FrameReader::new(recv),
        }
    }
}

impl RawStream {
    /// Writes `bytes` as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.send
            .write_all_chunks(&mut [Bytes::copy_from_slice(bytes)])
            .await
            .expect("bytes written");
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: &Frame) {
        send_frame(&mut self.send, frame)
            .await
            .expect("frame written");
    }

    /// The server's next frame.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadFrameError> {
        self.reader.next().await
    }
}

/// The error-table code a read failed with when the server closed the connection.
pub fn closed_with(e: &ReadFrameError) -> Option<ErrorCode> {
    match e {
        ReadFrameError::Read(quinn::ReadError::ConnectionLost(
            quinn::ConnectionError::ApplicationClosed(c),
        )) => ErrorCode::from_varint(c.error_code),
        _ => None,
    }
}
