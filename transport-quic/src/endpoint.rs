//! The QUIC endpoints: their UDP sockets; the server's stateless reset keys that survive a
//! restart, random connection ids.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::Identity;

/// The receive and send buffer asked for on every QUIC socket (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` for a QUIC endpoint, with [`SOCKET_BUFFER`]-sized buffers.
/// UDP has no flow control: a datagram arriving at a full receive buffer is dropped, and
/// the default (208 KiB) holds a few milliseconds of a flood on loopback. A smaller buffer
/// than asked (the host's cap) still works, only with more losses under load.
pub fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, SOCKET_BUFFER);
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&socket, SOCKET_BUFFER);
    Ok(socket)
}

/// The endpoint setup. The key of QUIC stateless resets is derived from the server's
/// private key so that it survives a restart: a client whose ringcastd was killed and
/// started again learns at its next packet that its connection is gone (and resumes),
/// instead of waiting for the idle timeout. Connection IDs are random and not checked
/// against a per-process key: quinn's default generator keys them per start, so a new
/// process would drop the old connections' packets without a reset.
pub fn server_endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    use ring::hmac;
    let secret = hmac::Key::new(hmac::HMAC_SHA256, identity.key.secret_der());
    let derived = hmac::sign(&secret, b"ringcast/1 QUIC stateless reset key");
    let mut cfg = quinn::EndpointConfig::new(Arc::new(hmac::Key::new(
        hmac::HMAC_SHA256,
        derived.as_ref(),
    )));
    cfg.cid_generator(|| Box::new(RandomCids));
    cfg
}

struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut b = [0u8; 8];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
            // The system RNG does not fail on Linux; a fallback keeps IDs distinct anyway.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            b = NEXT.fetch_add(1, Relaxed).to_le_bytes();
        }
        quinn::ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::ConnectionIdGenerator;

    #[test]
    fn quic_sockets_get_larger_buffers_than_the_default() {
        let s = udp_socket("127.0.0.1:0".parse().expect("valid")).expect("a UDP socket");
        let default = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let size = |s: &std::net::UdpSocket| {
            rustix::net::sockopt::socket_recv_buffer_size(s).expect("SO_RCVBUF")
        };
        assert!(
            size(&s) > size(&default),
            "{} vs {}",
            size(&s),
            size(&default)
        );
    }

    #[test]
    fn connection_ids_are_random_and_eight_bytes() {
        let mut g = RandomCids;
        let (a, b) = (g.generate_cid(), g.generate_cid());
        assert_eq!((a.len(), g.cid_len()), (8, 8));
        assert_ne!(a, b);
        assert_eq!(g.cid_lifetime(), None);
    }
}
