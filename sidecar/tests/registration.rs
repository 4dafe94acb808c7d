//! The registration socket against a real ringcastd: a peer of another uid is refused at
//! accept, before it sends anything; a connection that does not register in time is closed
//! with the reason; connections waiting to register are capped.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack};
use testbed::kit::*;

fn daemon(dir: &Path) -> Ringcastd {
    let mut d = Ringcastd::with_binary(dir, &dir.join("state"), env!("CARGO_BIN_EXE_ringcastd"))
        .args(&["--no-network"]);
    d.spawn();
    d
}

/// Connects to the registration socket and sends nothing.
fn connect(socket: &Path) -> OwnedFd {
    let addr = SocketAddrUnix::new(socket).unwrap();
    let s = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::connect(&s, &addr).unwrap();
    s
}

/// What ringcastd says on `s` within `secs` seconds, without anything sent to it: the
/// refusal's message, or why there is none.
fn refusal(s: &OwnedFd, secs: i64) -> Result<String, String> {
    let mut pfd = [PollFd::new(s, PollFlags::IN)];
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    if poll(&mut pfd, Some(&t)).map_err(|e| e.to_string())? == 0 {
        return Err(format!("nothing within {secs} s"));
    }
    let (msg, _) = handover::recv_with_fds(s)
        .map_err(|e| e.to_string())?
        .ok_or("closed without a word")?;
    let ack = Ack::decode(&msg).map_err(|e| e.to_string())?;
    if ack.accepted {
        return Err(format!("accepted: {}", ack.message));
    }
    Ok(ack.message)
}

const FOREIGN_ENV: &str = "SIDECAR_TEST_SILENT_FOREIGN";

#[test]
fn a_peer_of_another_uid_is_refused_at_accept_before_it_sends_anything() {
    if let Ok(sock) = std::env::var(FOREIGN_ENV) {
        let s = connect(Path::new(&sock));
        match refusal(&s, 10) {
            Ok(m) => println!("outcome: refused: {m}"),
            Err(e) => println!("outcome: {e}"),
        }
        return;
    }
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: cannot start a process as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    let mut d = daemon(dir.path());
    // Loosened on purpose so that the peer-credential check is what stops it.
    let sock = d.socket();
    open(&dir.path().join("run"), 0o755);
    open(&sock, 0o666);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_peer_of_another_uid_is_refused_at_accept_before_it_sends_anything",
            "--nocapture",
        ])
        .env(FOREIGN_ENV, &sock)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("outcome: refused: ringcastd runs as uid 0 and accepts devices only from"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.log().contains("registration connection refused"),
        "{}",
        d.log()
    );
    d.kill9();
}

#[test]
fn a_connection_that_does_not_register_in_time_is_closed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path());
    let s = connect(&d.socket());
    let m = refusal(&s, 40).expect("a refusal for a silent connection");
    assert!(
        m.contains("no device description within 10 s of connecting"),
        "{m}"
    );
    // And the connection is closed.
    let mut buf = [0u8; 16];
    let n = rustix::net::recv(&s, &mut buf, rustix::net::RecvFlags::empty()).unwrap();
    assert_eq!(n.0, 0, "the connection is still open");
    d.kill9();
}

#[test]
fn connections_waiting_to_register_are_capped_and_registered_devices_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path());
    // A registered device holds its connection for good: it does not count as waiting.
    let mut c = FakeConsole::new(&d.socket(), "vm", "serial0", 1, 4096);
    c.connect();
    let waiting: Vec<OwnedFd> = (0..64).map(|_| connect(&d.socket())).collect();
    let extra = connect(&d.socket());
    let m = refusal(&extra, 10).expect("a refusal beyond the cap");
    assert!(
        m.contains("64 registration connections are already waiting to register"),
        "{m}"
    );
    // Once they are gone, registering works again.
    drop(waiting);
    d.wait_until(
        "the waiting connections to go",
        Duration::from_secs(30),
        || {
            FakeConsole::new(&d.socket(), "vm", "serial1", 1, 4096)
                .try_connect()
                .is_ok()
        },
    );
    assert!(c.attached());
    d.kill9();
}

#[test]
fn a_live_devices_name_cannot_be_taken_even_with_its_session_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path());
    let mut owner = FakeConsole::new(&d.socket(), "vm", "serial0", 7, 1 << 16);
    owner.connect();
    owner.write_all(b"owner's bytes");
    owner.wait_drained();
    // Another process of the same uid claims the name with the owner's session id.
    let mut thief = FakeConsole::new(&d.socket(), "vm", "serial0", 7, 1 << 16);
    let e = thief
        .try_connect()
        .expect_err("the live device was taken over");
    assert!(
        e.contains("vm/serial0 is attached to a running QEMU (pid"),
        "{e}"
    );
    // The owner keeps the device: its bytes still reach the journal.
    assert!(owner.attached());
    owner.write_all(b", and more");
    owner.wait_drained();
    d.wait_until("the owner's bytes", Duration::from_secs(30), || {
        d.stat("vm/serial0", "BYTES").as_deref() == Some("23")
    });
    assert_eq!(d.stat("vm/serial0", "REGS").as_deref(), Some("1"));
    // Once the owner is gone, the same session may come back (a reconnect).
    drop(owner);
    d.wait_until("the owner to be gone", Duration::from_secs(30), || {
        thief.try_connect().is_ok()
    });
    d.kill9();
}

const UUID_A: &str = "5c1b2a9e-0c3f-4a1e-9b7d-2f6e8a4c1d3b";
const UUID_B: &str = "0f0e0d0c-0b0a-4909-8807-060504030201";

fn console_of(socket: &Path, vm: &str, uuid: &str, session: u64) -> FakeConsole {
    let mut c = FakeConsole::new(socket, vm, "serial0", session, 1 << 16);
    c.desc.vm_uuid = uuid.into();
    c
}

#[test]
fn a_vm_name_stays_with_the_vm_uuid_that_registered_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path());
    let mut owner = console_of(&d.socket(), "prod", UUID_A, 1);
    owner.connect();
    owner.write_all(b"owner's history");
    owner.wait_drained();
    drop(owner);
    d.wait_until("the owner to be gone", Duration::from_secs(30), || {
        d.stat("prod/serial0", "STATE").as_deref() == Some("gone")
    });
    let claim = |d: &Ringcastd, uuid: &str, session| {
        console_of(&d.socket(), "prod", uuid, session).try_connect()
    };
    // Another VM (another UUID, or none) cannot take the name and its history.
    let e = claim(&d, UUID_B, 2).expect_err("another VM took the name");
    assert!(
        e.contains(&format!(
            "prod/serial0 belongs to the VM with UUID {UUID_A}, and this VM has UUID {UUID_B}"
        )),
        "{e}"
    );
    let e = claim(&d, "", 3).expect_err("a VM without a UUID took the name");
    assert!(e.contains("and this registration has no UUID"), "{e}");
    assert_eq!(d.stat("prod/serial0", "REGS").as_deref(), Some("1"));
    // The binding is kept in the journal: the same after a restart of ringcastd.
    d.kill9();
    d.spawn();
    let e = claim(&d, UUID_B, 4).expect_err("another VM took the name after a restart");
    assert!(
        e.contains(&format!("belongs to the VM with UUID {UUID_A}")),
        "{e}"
    );
    // The VM itself comes back (a new QEMU of the same VM: a new session).
    let mut back = console_of(&d.socket(), "prod", UUID_A, 5);
    back.connect();
    back.write_all(b"!");
    back.wait_drained();
    let (spool, _) = read_spool(&d.state.join("prod").join("serial0"));
    assert!(spool.starts_with(b"owner's history"), "{spool:?}");
    assert!(spool.ends_with(b"!"));
    d.kill9();
}

/// An audio registration announcing a capture voice must carry the input ring as its third
/// descriptor: with two, it is refused with the count it needed; with three, it is taken.
#[test]
fn an_audio_registration_with_a_capture_voice_needs_its_input_ring() {
    use shm_ring::handover::{AudioFormat, DeviceDescription, DeviceKind};
    use shm_ring::{Doorbell, RingKind, RingMemory};
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon(dir.path());
    let format = AudioFormat {
        frequency: 44_100,
        channels: 2,
        sample_format: 3,
        big_endian: false,
    };
    let desc = DeviceDescription {
        kind: DeviceKind::Audio,
        pid: std::process::id(),
        session: 3,
        vm_name: "vm".into(),
        vm_uuid: String::new(),
        device_id: "snd0".into(),
        audio: Some(format),
        audio_in: Some(format),
    };
    let msg = desc.encode().unwrap();
    let out = RingMemory::create("out", RingKind::Records, 1 << 16, 4096).unwrap();
    let bell = Doorbell::new().unwrap();
    let input = RingMemory::create("in", RingKind::Bytes, 1 << 16, 0).unwrap();
    let s = connect(&d.socket());
    handover::send_with_fds(&s, &msg, &[out.fd(), bell.as_fd()]).unwrap();
    let why = refusal(&s, 10).unwrap();
    assert!(why.contains("expected 3 file descriptors, got 2"), "{why}");
    let s = connect(&d.socket());
    handover::send_with_fds(&s, &msg, &[out.fd(), bell.as_fd(), input.fd()]).unwrap();
    let answer = refusal(&s, 10).expect_err("the registration was refused");
    assert!(answer.starts_with("accepted: "), "{answer}");
    d.kill9();
}
