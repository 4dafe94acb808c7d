//! The lossy link: traffic crosses it, it delays, it loses what the seed says, it can be cut and
//! restored, TCP survives it, and it cleans up after itself.
//!
//! These tests need root and iproute2 (CI runs them as root). Without either they fail with the
//! reason; they never pass silently.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::kit::Ringcastd;
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    // The link counts a datagram after writing it, so the last echo can arrive a moment
    // before it is counted.
    testbed::kit::wait_until(
        "the link to count 10 datagrams each way",
        Duration::from_secs(5),
        || {
            let s = l.stats();
            (s.a_to_b.forwarded, s.b_to_a.forwarded) == (10, 10)
        },
    );
    let s = l.stats();
    assert_eq!(s.a_to_b.dropped() + s.b_to_a.dropped(), 0);
}

/// Sends `count` datagrams from A to B, paced so no socket buffer overflows; returns how many
/// arrived.
fn send_datagrams(l: &LossyLink, count: u32) -> u32 {
    let (a, b, b_addr) = udp_pair(l);
    // Room for every datagram (each costs about 1 KiB of buffer), so a receiver the machine
    // stalls for a moment loses none at its socket: the count then checks the link alone.
    // SO_RCVBUFFORCE needs root (CI runs as root); without it the default size stays.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&b, 16 << 20);
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
    let l = link(LinkSpec::default());
    let a = l.exec_in_a("ip -4 -o addr show dev tun0").unwrap();
    let b = l.exec_in_b("ip -4 -o addr show dev tun0").unwrap();
    assert!(String::from_utf8_lossy(&a.stdout).contains("198.18.0.1/30"));
    assert!(String::from_utf8_lossy(&b.stdout).contains("198.18.0.2/30"));
}

#[test]
fn the_control_language_cuts_restores_sets_loss_and_reports_counters() {
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
    let l = link(LinkSpec::default());
    let (a, b) = (l.ns_a().to_owned(), l.ns_b().to_owned());
    assert!(netns_exists(&a) && netns_exists(&b));
    drop(l);
    assert!(!netns_exists(&a) && !netns_exists(&b));
}

#[test]
fn a_namespace_left_by_a_dead_process_is_removed_by_the_next_create() {
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
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

/// ringcastd in namespace A (QUIC on A's address, the client's certificate authorized), a
/// fake QEMU writing a guest stream into it, and `ringcast` commands run in namespace B.
struct Served {
    // Dropped first: ringcastd is killed before the link (and its namespaces) go.
    ringcastd: Ringcastd,
    dir: tempfile::TempDir,
    server: String,
    link: LossyLink,
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const WAIT: Duration = Duration::from_secs(120);

/// Waits for `c` to exit; fails the test after `timeout`.
fn wait_exit(
    c: &mut std::process::Child,
    what: &str,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

impl Served {
    fn start(spec: LinkSpec, ringcastd_args: &[&str]) -> Served {
        let link = link(spec);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The client's identity, and an authorization file naming it.
        let out = Command::new(testbed::kit::bins::binary("ringcast"))
            .arg("--identity-dir")
            .arg(d.join("id"))
            .args(["identity", "new", "--name", "lossy"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fp = text
            .split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
            .to_owned();
        std::fs::write(
            d.join("authorized_clients"),
            format!("{fp} */* read,spy,audio\n"),
        )
        .unwrap();
        let server = format!("{}:7878", link.addr_a());
        let mut ringcastd = Ringcastd::with_launcher(
            d,
            &d.join("state"),
            link.launcher_in_a(testbed::kit::bins::binary("ringcastd")),
        )
        .listen(&server)
        .rust_log("info,sidecar::net::attach=debug")
        .args(&[
            std::ffi::OsString::from("--authorized-clients"),
            d.join("authorized_clients").into(),
        ])
        .args(ringcastd_args);
        ringcastd.spawn();
        Served {
            ringcastd,
            dir,
            server,
            link,
        }
    }

    fn log(&self) -> String {
        self.ringcastd.log()
    }

    /// Like [`wait_for`], with ringcastd's log, the clients' stderr and the link's counters
    /// in the failure message.
    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() >= deadline {
                let mut errs = String::new();
                for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                    if e.path().extension().is_some_and(|x| x == "err") {
                        errs += &format!(
                            "--- {}:\n{}\n",
                            e.path().display(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        );
                    }
                }
                let sock = self.dir.path().join("run/ringcastd.sock");
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({} exists: {})\n{errs}--- link: {:?}\n--- ringcastd:\n{}",
                    sock.display(),
                    sock.exists(),
                    self.link.stats(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A fake QEMU (the real plugin) writing `bytes` of guest stream `seed` to vml/serial0;
    /// it exits when everything is written.
    fn fake_qemu(&self, seed: u64, bytes: u64) -> Kill {
        let child = Command::new(env!("CARGO_BIN_EXE_fake-qemu"))
            .env("RINGCAST_BACKEND_SO", testbed::kit::bins::plugin())
            .args(["--vm", "vml", "--opts"])
            .arg(format!(
                "socket={}",
                self.dir.path().join("run/ringcastd.sock").display()
            ))
            .arg(format!("serial0={seed}:{bytes}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.wait("the device to register", Duration::from_secs(30), || {
            self.log().contains("device attached device=vml/serial0")
        });
        Kill(child)
    }

    /// `ringcast capture vml/serial0 ARGS -o FILE` in namespace B, stderr to `FILE.err`.
    fn capture(&self, file: &Path, args: &[&str]) -> Kill {
        let d = self.dir.path();
        let err = std::fs::File::create(file.with_extension("err")).unwrap();
        let child = self
            .link
            .command_in_b(testbed::kit::bins::binary("ringcast"))
            .args(["--server", &self.server, "--known-hosts"])
            .arg(d.join("known_hosts"))
            .arg("--identity-dir")
            .arg(d.join("id"))
            .args(["capture", "vml/serial0"])
            .args(args)
            .arg("-o")
            .arg(file)
            .env("HOME", d.join("home"))
            .env_remove("RINGCAST_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Kill(child)
    }
}

fn interrupt(c: &std::process::Child) {
    // SAFETY: kill(2) with a pid this test spawned and has not reaped.
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
}

/// Waits until the capture file holds `total` bytes and checks they are the stream's.
fn assert_capture_is_the_stream(s: &Served, file: &Path, seed: u64, total: u64) {
    s.wait("the capture to hold the whole stream", WAIT, || {
        file_len(file) >= total
    });
    let got = std::fs::read(file).unwrap();
    assert_eq!(
        got.len() as u64,
        total,
        "the capture is longer than the stream"
    );
    let want = testbed::stream::GuestStream::bytes(seed, total as usize);
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!("the capture differs from the stream at byte {i}");
    }
}

#[test]
fn a_capture_across_a_link_cut_for_8_s_gets_every_byte_once_and_reports_the_outage() {
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
    const SEED: u64 = 11;
    const TOTAL: u64 = 6 << 20;
    let s = Served::start(
        LinkSpec {
            delay_ms: 10.0,
            rate_mbit: 8.0,
            seed: 5,
            ..LinkSpec::default()
        },
        &[],
    );
    let file = s.dir.path().join("capture.log");
    let mut qemu = s.fake_qemu(SEED, TOTAL);
    let mut cap = s.capture(&file, &["--follow"]);
    // 8 Mbit/s carries about 1 MiB a second: at 1 MiB the transfer is under way.
    s.wait("1 MiB captured", WAIT, || file_len(&file) >= 1 << 20);
    s.link.set_cut(true);
    std::thread::sleep(Duration::from_secs(8));
    let during = file_len(&file);
    s.link.set_cut(false);
    assert!(during < TOTAL, "the transfer ended before the cut");
    assert!(s.link.stats().b_to_a.dropped_cut + s.link.stats().a_to_b.dropped_cut > 0);
    assert!(wait_exit(&mut qemu.0, "fake-qemu", WAIT).success());
    assert_capture_is_the_stream(&s, &file, SEED, TOTAL);
    assert!(
        cap.0.try_wait().unwrap().is_none(),
        "capture --follow ended: {}",
        std::fs::read_to_string(file.with_extension("err")).unwrap_or_default()
    );
    interrupt(&cap.0);
    let st = wait_exit(&mut cap.0, "capture after SIGINT", Duration::from_secs(30));
    let err = std::fs::read_to_string(file.with_extension("err")).unwrap();
    assert!(st.success(), "capture failed ({st}): {err}");
    assert!(err.contains("nothing from the server for "), "{err}");
    assert!(err.contains("the server is heard again after"), "{err}");
    assert!(err.contains(&format!("captured {TOTAL} bytes")), "{err}");
    assert!(err.contains("0 gaps, 0 bytes missing"), "{err}");
    assert_eq!(file_len(&file), TOTAL, "nothing was written twice");
}

#[test]
fn a_cut_longer_than_the_idle_timeout_ends_the_capture_and_resume_completes_it_exactly() {
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
    const SEED: u64 = 12;
    const TOTAL: u64 = 4 << 20;
    let s = Served::start(
        LinkSpec {
            delay_ms: 10.0,
            rate_mbit: 8.0,
            seed: 6,
            ..LinkSpec::default()
        },
        &["--idle-timeout", "6s"],
    );
    let file = s.dir.path().join("capture.log");
    let mut qemu = s.fake_qemu(SEED, TOTAL);
    let mut cap = s.capture(&file, &["--follow"]);
    s.wait("1 MiB captured", WAIT, || file_len(&file) >= 1 << 20);
    s.link.set_cut(true);
    // The link is reported down after 3 s of silence and the connection given up after 6 s:
    // the capture exits with the reason.
    let st = wait_exit(
        &mut cap.0,
        "capture on a dead link",
        Duration::from_secs(30),
    );
    s.link.set_cut(false);
    let err = std::fs::read_to_string(file.with_extension("err")).unwrap();
    assert!(!st.success(), "{err}");
    assert!(err.contains("nothing from the server for "), "{err}");
    assert!(err.contains("timed out"), "{err}");
    let kept = file_len(&file);
    assert!(kept < TOTAL, "the transfer ended before the cut");
    assert!(wait_exit(&mut qemu.0, "fake-qemu", WAIT).success());
    // What users do next: the same command with --resume.
    let mut again = s.capture(&file, &["--resume"]);
    let st = wait_exit(&mut again.0, "capture --resume", WAIT);
    let err = std::fs::read_to_string(file.with_extension("err")).unwrap();
    assert!(st.success(), "{err}");
    assert!(err.contains(&format!("offsets {kept}..{TOTAL}")), "{err}");
    assert_capture_is_the_stream(&s, &file, SEED, TOTAL);
}

/// A stereo s16 tone of `hz` at 48 kHz: period `n` of 480 frames (10 ms).
fn tone_period(hz: f64, n: u64) -> Vec<u8> {
    (n * 480..(n + 1) * 480)
        .flat_map(|i| {
            let t = i as f64 / 48_000.0;
            let v = (12_000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
            [v.to_le_bytes(), v.to_le_bytes()].concat()
        })
        .collect()
}

#[test]
fn opus_over_a_lossy_narrow_link_rebuilds_lost_frames_from_fec_and_keeps_the_tone() {
    if testbed::kit::skip_slow("lossy-link test") {
        return;
    }
    // 5% loss each way, 40 ms round trip, 1 Mbit/s: PCM (1.5 Mbit/s) cannot fit.
    let s = Served::start(
        LinkSpec {
            loss_pct: 5.0,
            delay_ms: 20.0,
            rate_mbit: 1.0,
            seed: 17,
            ..LinkSpec::default()
        },
        &[],
    );
    let sock = s.dir.path().join("run/ringcastd.sock");
    s.wait("ringcastd's socket", WAIT, || sock.exists());
    let mut audio = testbed::kit::FakeAudio::new(&sock, "vml", "snd0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // The sound card's pace: a 10 ms period every 10 ms, on a schedule (no drift).
    let producer = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = audio.try_push_pcm(n * 10_000_000, 480, &tone_period(1000.0, n));
            n += 1;
            let next = t0 + Duration::from_millis(10 * n);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    let d = s.dir.path();
    let wav = d.join("opus.wav");
    let out = s
        .link
        .command_in_b(testbed::kit::bins::binary("ringcast"))
        .args(["--server", &s.server, "--known-hosts"])
        .arg(d.join("known_hosts"))
        .arg("--identity-dir")
        .arg(d.join("id"))
        .args(["play", "vml/snd0", "--codec", "opus", "--datagrams"])
        .args(["--seconds", "8", "--wav"])
        .arg(&wav)
        .env("HOME", d.join("home"))
        .env_remove("RINGCAST_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", s.log());
    let line = err
        .lines()
        .find(|l| l.contains("units played"))
        .unwrap_or_else(|| panic!("no summary: {err}"));
    let count = |what: &str| -> u64 {
        let at = line
            .find(what)
            .unwrap_or_else(|| panic!("no {what:?} in {line}"));
        line[at + what.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after {what:?} in {line}"))
    };
    eprintln!("{line}");
    let (recovered, concealed) = (count("recovered by FEC"), count("concealed"));
    // About 5% of 800 frames are lost: FEC rebuilds the ones whose next frame arrived.
    assert!(recovered >= 10, "{line}\n{:?}\n{}", s.link.stats(), s.log());
    assert!(concealed < recovered * 2, "{line}");
    // A canonical 44-byte WAV header, then 48 kHz stereo s16.
    let file = std::fs::read(&wav).unwrap();
    assert_eq!(u32::from_le_bytes(file[24..28].try_into().unwrap()), 48_000);
    let bytes = &file[44..];
    assert_eq!(bytes.len(), 8 * 48_000 * 4, "{line}");
    let tone = testbed::tone::analyze_s16le(bytes, 2, 48_000);
    assert!((tone.frequency_hz - 1000.0).abs() < 5.0, "{tone:?} {line}");
    assert!(tone.active_frames > 48_000 * 79 / 10, "{tone:?} {line}");
}
