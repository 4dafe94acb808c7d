//! The browser client's two sockets on one port number: UDP for QUIC (`ringcast/1` and
//! WebTransport) and TCP for the page.
//!
//! With a port of 0 the kernel picks the UDP port, and the TCP port of that number may
//! already be someone else's (any TCP socket, a listener or an outgoing connection, can
//! hold it). Binding the two separately would then fail a start that asked for "any free
//! port", more often the busier the machine; so with port 0 a taken TCP port means another
//! pick, until a number free for both is found.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

/// Picks of a port free for both before giving up (each taken TCP port is one pick).
const ATTEMPTS: usize = 64;

/// Binds UDP and TCP on `addr`'s address and one port number: `addr`'s, or with port 0 one
/// free for both. The error names the address that could not be bound.
pub fn bind_same_port(
    addr: SocketAddr,
) -> Result<(UdpSocket, TcpListener), (SocketAddr, io::Error)> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let udp = transport_quic::endpoint::udp_socket(addr).map_err(|e| (addr, e))?;
        let port = udp.local_addr().map_err(|e| (addr, e))?.port();
        let tcp = SocketAddr::new(addr.ip(), port);
        match TcpListener::bind(tcp) {
            Ok(listener) => return Ok((udp, listener)),
            // Only a port the kernel picked may be picked again.
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last = Some((tcp, e));
            }
            Err(e) => return Err((tcp, e)),
        }
    }
    Err(last.unwrap_or_else(|| (addr, io::Error::from(io::ErrorKind::AddrInUse))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many TCP ports of the kernel's ephemeral range are taken (as on a busy machine),
    /// and still every start on port 0 gets a UDP and a TCP socket of one number.
    #[test]
    fn port_0_binds_udp_and_tcp_of_one_number_while_tcp_ports_are_taken() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let taken: Vec<TcpListener> = (0..1500)
            .map_while(|_| TcpListener::bind(any).ok())
            .collect();
        assert!(
            taken.len() > 500,
            "only {} TCP ports could be taken",
            taken.len()
        );
        let mut pairs = Vec::new();
        for n in 0..400 {
            let (udp, tcp) = bind_same_port(any)
                .unwrap_or_else(|(a, e)| panic!("start {n}: cannot bind {a}: {e}"));
            let (u, t) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
            assert_eq!(u.port(), t.port(), "start {n}");
            assert_ne!(u.port(), 0);
            pairs.push((udp, tcp));
        }
    }

    /// A port that was asked for is bound as asked, or the error names it.
    #[test]
    fn a_taken_port_that_was_asked_for_is_an_error_naming_it() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        match bind_same_port(addr) {
            Err((a, e)) => {
                assert_eq!(a, addr);
                assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            }
            Ok((u, _)) => panic!("bound {:?} beside a held TCP port", u.local_addr()),
        }
    }
}
