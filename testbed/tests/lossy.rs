//! The lossy link: traffic crosses it, it delays, it loses what the seed says, it can be cut and
//! restored, TCP survives it, and it cleans up after itself.
//!
//! These tests need root and iproute2 (CI runs them as root). Without either they fail with the
//! reason; they never pass silently.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::lossy::{Dir, LinkSpec, LossyLink};

fn link(spec: LinkSpec) -> LossyLink {
    LossyLink::create(spec).unwrap_or_else(|e| panic!("cannot create the lossy link: {e}"))
}

fn netns_exists(name: &str) -> bool {
    Path::new("/var/run/netns").join(name).exists()
}

/// A UDP socket bound in namespace A and one in namespace B, the latter on port 7000.
fn udp_pair(l: &LossyLink) -> (UdpSocket, UdpSocket, SocketAddr) {
    let a_addr = SocketAddr::from((l.addr_a(), 0));
    let b_addr = SocketAddr::from((l.addr_b(), 7000));
    let a = l
        .run_in_a(move || UdpSocket::bind(a_addr))
        .unwrap()
        .unwrap();
    let b = l
        .run_in_b(move || UdpSocket::bind(b_addr))
        .unwrap()
        .unwrap();
    (a, b, b_addr)
}

#[test]
fn a_udp_echo_crosses_the_link_and_each_round_trip_takes_at_least_twice_the_delay() {
    let l = link(LinkSpec {
        delay_ms: 15.0,
        ..LinkSpec::default()
    });
    let (a, b, b_addr) = udp_pair(&l);
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            b.send_to(&buf[..n], from).unwrap();
        }
    });
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..10u32 {
        let msg = format!("ping {i}");
        let t = Instant::now();
        a.send_to(msg.as_bytes(), b_addr).unwrap();
        let (n, _) = a.recv_from(&mut buf).expect("the echo comes back");
        let rtt = t.elapsed();
        assert_eq!(&buf[..n], msg.as_bytes());
        assert!(
            rtt >= Duration::from_millis(30),
            "round trip {rtt:?} is shorter than 2 x 15 ms"
        );
    }
    echo.join().unwrap();
    let s = l.stats();
    assert_eq!((s.a_to_b.forwarded, s.b_to_a.forwarded), (10, 10));
    assert_eq!(s.a_to_b.dropped() + s.b_to_a.dropped(), 0);
}

/// Sends `count` datagrams from A to B, paced so no socket buffer overflows; returns how many
/// arrived.
fn send_datagrams(l: &LossyLink, count: u32) -> u32 {
    let (a, b, b_addr) = udp_pair(l);
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let rx = std::thread::spawn(move || {
        let mut got = 0u32;
        let mut buf = [0u8; 2048];
        while b.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    for i in 0..count {
        a.send_to(&i.to_le_bytes(), b_addr).unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    rx.join().unwrap()
}

#[test]
fn loss_over_5000_datagrams_is_near_the_set_rate_and_the_same_for_the_same_seed() {
    let spec = LinkSpec {
        loss_pct: 5.0,
        seed: 42,
        ..LinkSpec::default()
    };
    let first = link(spec.clone());
    let arrived = send_datagrams(&first, 5000);
    let s1 = first.stats().a_to_b;
    drop(first);
    assert_eq!(
        s1.received, 5000,
        "only the test's datagrams cross the link"
    );
    assert!(
        (200..=300).contains(&s1.dropped_loss),
        "5% of 5000 is 250; dropped {}",
        s1.dropped_loss
    );
    // The link's count is exact; the receiving socket may still overflow if the machine stalls
    // the receiver, so arrivals are checked loosely.
    let arrived = u64::from(arrived);
    assert!(
        arrived <= s1.forwarded && arrived + 100 >= s1.forwarded,
        "{arrived} of {} forwarded arrived",
        s1.forwarded
    );
    assert_eq!(s1.forwarded + s1.dropped_loss, 5000);

    let second = link(spec.clone());
    send_datagrams(&second, 5000);
    assert_eq!(
        second.stats().a_to_b.dropped_loss,
        s1.dropped_loss,
        "same seed, same losses"
    );
    drop(second);

    let other = link(LinkSpec { seed: 43, ..spec });
    send_datagrams(&other, 5000);
    let s3 = other.stats().a_to_b;
    assert!(
        (200..=300).contains(&s3.dropped_loss),
        "seed 43 dropped {}",
        s3.dropped_loss
    );
}

#[test]
fn loss_can_be_set_per_direction_at_run_time() {
    let l = link(LinkSpec::default());
    l.set_loss(Dir::AToB, 100.0);
    assert_eq!(send_datagrams(&l, 100), 0);
    l.set_loss(Dir::AToB, 0.0);
    l.set_loss(Dir::BToA, 100.0);
    assert_eq!(
        send_datagrams(&l, 100),
        100,
        "B to A loss does not touch A to B"
    );
    assert_eq!(l.stats().a_to_b.dropped_loss, 100);
}

#[test]
fn cutting_the_link_drops_everything_and_restoring_it_resumes_delivery() {
    let l = link(LinkSpec {
        delay_ms: 5.0,
        ..LinkSpec::default()
    });
    let (a, b, b_addr) = udp_pair(&l);
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];

    a.send_to(b"before", b_addr).unwrap();
    assert_eq!(
        b.recv(&mut buf).map(|n| buf[..n].to_vec()).unwrap(),
        b"before"
    );

    l.set_cut(true);
    for _ in 0..20 {
        a.send_to(b"during", b_addr).unwrap();
    }
    assert!(b.recv(&mut buf).is_err(), "nothing crosses a cut link");
    assert_eq!(l.stats().a_to_b.dropped_cut, 20);

    l.set_cut(false);
    a.send_to(b"after", b_addr).unwrap();
    assert_eq!(
        b.recv(&mut buf).map(|n| buf[..n].to_vec()).unwrap(),
        b"after"
    );
}

#[test]
fn a_tcp_connection_survives_a_cut_of_several_seconds() {
    let l = link(LinkSpec {
        delay_ms: 5.0,
        ..LinkSpec::default()
    });
    let (mut a, mut b) = tcp_pair(&l);
    a.write_all(b"one").unwrap();
    let mut buf = [0u8; 3];
    b.read_exact(&mut buf).unwrap();
    l.set_cut(true);
    a.write_all(b"two").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    l.set_cut(false);
    b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    b.read_exact(&mut buf)
        .expect("the retransmission arrives once the link is back");
    assert_eq!(&buf, b"two");
    assert!(l.stats().a_to_b.dropped_cut >= 1);
}

/// A TCP connection from A to B (port 7001); returns (A's end, B's end).
fn tcp_pair(l: &LossyLink) -> (TcpStream, TcpStream) {
    let b_addr = SocketAddr::from((l.addr_b(), 7001));
    let listener = l
        .run_in_b(move || TcpListener::bind(b_addr))
        .unwrap()
        .unwrap();
    let a = l
        .run_in_a(move || TcpStream::connect_timeout(&b_addr, Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    let (b, _) = listener.accept().unwrap();
    (a, b)
}

#[test]
fn a_tcp_transfer_over_a_one_percent_loss_link_delivers_every_byte_in_order() {
    let l = link(LinkSpec {
        loss_pct: 1.0,
        delay_ms: 5.0,
        jitter_ms: 1.0,
        seed: 7,
        ..LinkSpec::default()
    });
    let (mut a, mut b) = tcp_pair(&l);
    const LEN: usize = 4 << 20;
    let data: Vec<u8> = (0..LEN as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let expect = data.clone();
    let tx = std::thread::spawn(move || {
        a.write_all(&data).unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(LEN);
    b.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    b.read_to_end(&mut got).unwrap();
    tx.join().unwrap();
    assert_eq!(got.len(), LEN);
    assert!(got == expect, "bytes differ");
    let s = l.stats();
    assert!(s.a_to_b.dropped_loss > 0, "the link lost nothing: {s:?}");
}

#[test]
fn a_rate_limit_holds_a_transfer_to_the_set_rate() {
    // 8 Mbit/s is 1 MB/s: 1 MB cannot arrive in much less than a second.
    let l = link(LinkSpec {
        rate_mbit: 8.0,
        ..LinkSpec::default()
    });
    let (mut a, mut b) = tcp_pair(&l);
    let t = Instant::now();
    let tx = std::thread::spawn(move || {
        a.write_all(&vec![7u8; 1_000_000]).unwrap();
    });
    let mut buf = vec![0u8; 1_000_000];
    b.read_exact(&mut buf).unwrap();
    tx.join().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "1 MB at 8 Mbit/s took {:?}",
        t.elapsed()
    );
}

#[test]
fn commands_run_inside_each_namespace_see_their_own_address() {
    let l = link(LinkSpec::default());
    let a = l.exec_in_a("ip -4 -o addr show dev tun0").unwrap();
    let b = l.exec_in_b("ip -4 -o addr show dev tun0").unwrap();
    assert!(String::from_utf8_lossy(&a.stdout).contains("198.18.0.1/30"));
    assert!(String::from_utf8_lossy(&b.stdout).contains("198.18.0.2/30"));
}

#[test]
fn the_control_language_cuts_restores_sets_loss_and_reports_counters() {
    let l = link(LinkSpec::default());
    let c = l.control();
    assert_eq!(c.command("cut on"), "ok cut");
    assert!(l.is_cut());
    assert_eq!(c.command("cut off"), "ok restored");
    assert!(!l.is_cut());
    assert_eq!(c.command("loss-ab 100"), "ok loss-ab 100");
    assert_eq!(send_datagrams(&l, 10), 0);
    assert!(c.command("loss 101").starts_with("error"));
    assert!(c.command("stats").contains("dropped_loss=10"));
}

#[test]
fn dropping_the_link_deletes_both_namespaces() {
    let l = link(LinkSpec::default());
    let (a, b) = (l.ns_a().to_owned(), l.ns_b().to_owned());
    assert!(netns_exists(&a) && netns_exists(&b));
    drop(l);
    assert!(!netns_exists(&a) && !netns_exists(&b));
}

#[test]
fn a_namespace_left_by_a_dead_process_is_removed_by_the_next_create() {
    // A pid that is certainly gone: a child that has exited and been reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("rcl{dead}x0a");
    let ok = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(ok.success(), "cannot make the stale namespace");
    let l = link(LinkSpec::default());
    assert!(!netns_exists(&stale), "stale namespace {stale} survived");
    drop(l);
}
