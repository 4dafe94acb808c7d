//! An in-process daemon: it accepts the plugin's registrations (each must decode and its
//! rings map), and keeps the rings and doorbells it was handed for the operation stream to
//! drain, fill, scribble over and hang up on.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, DeviceDescription, DeviceKind};
use shm_ring::{ByteConsumer, ByteProducer, Doorbell, RecordConsumer, RingKind, RingMemory};

use crate::input::Input;
use crate::peer::Peer;

pub(super) struct Conn {
    pub(super) sock: Option<OwnedFd>,
    pub(super) peers: Vec<Peer>,
    pub(super) bells: Vec<Doorbell>,
    pub(super) out: Option<ByteConsumer>,
    pub(super) input: Option<ByteProducer>,
    pub(super) audio: Option<RecordConsumer>,
}

pub(super) struct Daemon {
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
    listener: OwnedFd,
    conns: Vec<Conn>,
}

impl Daemon {
    pub(super) fn new() -> Daemon {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringcast-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        rustix::net::listen(&listener, 16).unwrap();
        Daemon {
            dir,
            path,
            listener,
            conns: Vec::new(),
        }
    }

    /// Takes pending registrations; every one must be well formed.
    pub(super) fn accept(&mut self) {
        while let Ok(sock) =
            rustix::net::accept_with(&self.listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)
        {
            let Ok(Some((msg, fds))) = handover::recv_with_fds(&sock) else {
                continue;
            };
            let desc = DeviceDescription::decode(&msg)
                .unwrap_or_else(|e| panic!("the plugin sent a bad registration: {e}"));
            assert_eq!(fds.len(), desc.fd_count(), "{desc:?}");
            let mut fds = fds.into_iter().map(Some).collect::<Vec<_>>();
            let mut take = |i: usize| fds[i].take().unwrap();
            let mut conn = Conn {
                sock: Some(sock),
                peers: Vec::new(),
                bells: Vec::new(),
                out: None,
                input: None,
                audio: None,
            };
            let open = |fd: OwnedFd, kind| {
                RingMemory::open(fd, kind)
                    .unwrap_or_else(|e| panic!("the plugin handed a bad ring: {e}"))
            };
            match desc.kind {
                DeviceKind::Console => {
                    let out = std::sync::Arc::new(open(take(0), RingKind::Bytes));
                    let inp = std::sync::Arc::new(open(take(3), RingKind::Bytes));
                    conn.peers.push(Peer::map(&out));
                    conn.peers.push(Peer::map(&inp));
                    conn.out = ByteConsumer::new(out).ok();
                    conn.input = ByteProducer::new(inp).ok();
                    for i in [1, 2, 4, 5] {
                        conn.bells.push(Doorbell::from_fd(take(i)).unwrap());
                    }
                }
                DeviceKind::Audio => {
                    assert!(desc.audio.is_some());
                    let mem = std::sync::Arc::new(open(take(0), RingKind::Records));
                    conn.peers.push(Peer::map(&mem));
                    conn.audio = RecordConsumer::new(mem).ok();
                    conn.bells.push(Doorbell::from_fd(take(1)).unwrap());
                }
            }
            self.conns.push(conn);
            if self.conns.len() > 8 {
                self.conns.remove(0);
            }
        }
    }

    pub(super) fn pick(&mut self, inp: &mut Input<'_>) -> Option<&mut Conn> {
        if self.conns.is_empty() {
            return None;
        }
        let i = inp.u8() as usize % self.conns.len();
        Some(&mut self.conns[i])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
