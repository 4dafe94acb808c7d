//! ringcastd checks what a registration hands it before it uses anything: a ring region of
//! a size no ring has (a sealed 64 GiB memfd) is refused before it is mapped, and a doorbell
//! that is not an eventfd is refused; both with the reason in the acknowledgement.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use shm_ring::handover::{DeviceDescription, DeviceKind};
use shm_ring::{Doorbell, RingKind, RingMemory};
use sidecar::Daemon;
use testbed::devices::register;
use testbed::kit::*;

fn description(id: &str) -> Vec<u8> {
    DeviceDescription {
        kind: DeviceKind::Console,
        pid: std::process::id(),
        session: 1,
        vm_name: "vm".into(),
        vm_uuid: String::new(),
        device_id: id.into(),
        audio: None,
        audio_in: None,
    }
    .encode()
    .unwrap()
}

fn sealed_memfd(len: u64) -> OwnedFd {
    let fd = memfd_create("big", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    ftruncate(&fd, len).unwrap();
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).unwrap();
    fd
}

#[test]
fn oversized_regions_and_non_eventfd_doorbells_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let daemon = Daemon::start(cfg.clone()).unwrap();
    let out = RingMemory::create("o", RingKind::Bytes, 4096, 0).unwrap();
    let inp = RingMemory::create("i", RingKind::Bytes, 4096, 0).unwrap();
    let bells: Vec<Doorbell> = (0..4).map(|_| Doorbell::new().unwrap()).collect();
    let fds = |out: BorrowedFd<'_>, data: BorrowedFd<'_>| -> Vec<OwnedFd> {
        [
            out,
            data,
            bells[1].as_fd(),
            inp.fd(),
            bells[2].as_fd(),
            bells[3].as_fd(),
        ]
        .iter()
        .map(|f| f.try_clone_to_owned().unwrap())
        .collect()
    };
    let send = |id: &str, fds: Vec<OwnedFd>| {
        let b: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        register(&cfg.socket, &description(id), &b)
    };

    // A sealed 64 GiB memfd as the output ring: refused by its size, never mapped.
    let huge = sealed_memfd(64 << 30);
    let e = send("huge", fds(huge.as_fd(), bells[0].as_fd())).unwrap_err();
    assert!(e.contains("68719476736 bytes"), "{e}");

    // A pipe as the output ring's data doorbell.
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let e = send("pipe", fds(out.fd(), r.as_fd())).unwrap_err();
    assert!(e.contains("not an eventfd") && e.contains("pipe:["), "{e}");

    // The same rings with proper doorbells are taken.
    let ok = send("good", fds(out.fd(), bells[0].as_fd()));
    assert!(ok.is_ok(), "{ok:?}");
    daemon.shutdown();
}
