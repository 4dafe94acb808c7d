//! 256 MiB through a ring between two processes, with doorbells, backpressure and a
//! checksum on each side. The test spawns itself as the producer process.
// Needs memfds, mmap and processes, which Miri cannot run.
#![cfg(not(any(loom, miri)))]

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use shm_ring::{ByteConsumer, ByteProducer, Doorbell, FenceMode, RingError, RingKind, RingMemory};

const TOTAL: u64 = 256 << 20;
const CHILD_ENV: &str = "SHM_RING_TEST_PRODUCER_FDS";
const OPEN_ENV: &str = "SHM_RING_TEST_OPEN_FD";
/// Set in the environment, it makes this process use the SeqCst fence fallback.
const FALLBACK: (&str, &str) = ("SHM_RING_FENCE", "seqcst");

/// The mode a ring created by this process gets: the fallback when asked for (or when the
/// kernel has no membarrier), membarrier otherwise.
fn expected_mode() -> FenceMode {
    let forced = std::env::var(FALLBACK.0).is_ok_and(|v| v == FALLBACK.1);
    let mode = FenceMode::of_this_process();
    if forced {
        assert_eq!(
            mode,
            FenceMode::SeqCst,
            "{}={} must force the fallback",
            FALLBACK.0,
            FALLBACK.1
        );
    }
    mode
}

/// A deterministic byte stream both sides can regenerate.
fn fill(buf: &mut [u8], pos: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let p = pos + i as u64;
        *b = (p ^ (p >> 8) ^ (p >> 17)) as u8;
    }
}

fn inheritable(fd: impl AsFd) -> i32 {
    let dup = fd.as_fd().try_clone_to_owned().unwrap();
    rustix::io::fcntl_setfd(&dup, rustix::io::FdFlags::empty()).unwrap();
    let raw = dup.as_raw_fd();
    std::mem::forget(dup); // stays open for the child to inherit
    raw
}

fn producer(fds: &str) {
    let fds: Vec<i32> = fds.split(',').map(|s| s.parse().unwrap()).collect();
    let [mem, data, space] = fds[..] else {
        panic!("three fds expected")
    };
    // SAFETY: the parent passed these descriptors to us through exec and nothing else in
    // this process owns them.
    let (mem, data, space) = unsafe {
        (
            OwnedFd::from_raw_fd(mem),
            OwnedFd::from_raw_fd(data),
            OwnedFd::from_raw_fd(space),
        )
    };
    let mem = Arc::new(RingMemory::open(mem, RingKind::Bytes).unwrap());
    // The ring's mode is its creator's, whatever this process could do.
    assert_eq!(mem.geometry().fence, expected_mode());
    let data = Doorbell::from_fd(data).unwrap();
    let space = Doorbell::from_fd(space).unwrap();
    let mut tx = ByteProducer::new(mem).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 4096];
    let mut pos = 0u64;
    let (mut waits, mut bells) = (0u64, 0u64);
    while pos < TOTAL {
        let n = buf.len().min((TOTAL - pos) as usize);
        fill(&mut buf[..n], pos);
        let mut off = 0;
        while off < n {
            let w = tx.write(&buf[off..n]).unwrap();
            if w.wake_consumer {
                data.ring();
                bells += 1;
            }
            off += w.bytes;
            if w.bytes == 0
                && !tx
                    .space_or_arm(1, || {
                        space.drain();
                    })
                    .unwrap()
            {
                waits += 1;
                space.wait(-1);
            }
        }
        hash.update(&buf[..n]);
        pos += n as u64;
    }
    println!("sha256={:x} waits={waits} bells={bells}", hash.finalize());
}

#[test]
fn two_processes_move_256_mib_with_equal_checksums() {
    if let Ok(fds) = std::env::var(CHILD_ENV) {
        producer(&fds);
        return;
    }
    let mem = Arc::new(RingMemory::create("two-process", RingKind::Bytes, 1 << 16, 0).unwrap());
    assert_eq!(mem.geometry().fence, expected_mode());
    let data = Doorbell::new().unwrap();
    let space = Doorbell::new().unwrap();
    let fds = format!(
        "{},{},{}",
        inheritable(mem.fd()),
        inheritable(&data),
        inheritable(&space)
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_processes_move_256_mib_with_equal_checksums",
            "--nocapture",
        ])
        .env(CHILD_ENV, fds)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let mut rx = ByteConsumer::new(mem).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 15];
    let mut expect = vec![0u8; 1 << 15];
    let mut got = 0u64;
    let mut sleeps = 0u64;
    while got < TOTAL {
        let r = rx.read(&mut buf).unwrap();
        assert_eq!(r.lost, 0, "backpressure mode never loses bytes");
        if r.wake_producer {
            space.ring();
        }
        if r.bytes == 0 {
            if rx.prepare_sleep().unwrap() {
                sleeps += 1;
                assert!(data.wait(30_000), "producer went silent at {got} bytes");
                data.drain();
            }
            continue;
        }
        assert_eq!(r.position, got);
        fill(&mut expect[..r.bytes], got);
        assert_eq!(
            &buf[..r.bytes],
            &expect[..r.bytes],
            "bytes differ near {got}"
        );
        hash.update(&buf[..r.bytes]);
        got += r.bytes as u64;
    }
    let ours = format!("sha256={:x}", hash.finalize());
    let mut line = String::new();
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        if l.starts_with("sha256=") {
            line = l;
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(
        line.starts_with(&ours),
        "producer said {line}, consumer computed {ours}"
    );
    eprintln!("consumer sleeps={sleeps}; producer {line}");
}

/// Runs this test binary's `test` in a child process with the fence fallback forced (and
/// `env`); returns its output.
fn run_with_fallback(test: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture"])
        .env(FALLBACK.0, FALLBACK.1);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn two_processes_with_the_seqcst_fence_fallback_move_256_mib_with_equal_checksums() {
    // Both processes in the fallback: SeqCst fences on the hot path and the sleeping side.
    // A lost wakeup would stall the consumer ("producer went silent").
    let out = run_with_fallback("two_processes_move_256_mib_with_equal_checksums", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_process_without_membarrier_refuses_a_ring_that_relies_on_it() {
    if let Ok(fd) = std::env::var(OPEN_ENV) {
        // SAFETY: the parent passed this descriptor through exec; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd.parse().unwrap()) };
        match RingMemory::open(fd, RingKind::Bytes) {
            Err(e @ RingError::FenceUnsupported) => println!("refused: {e}"),
            other => println!("accepted: {:?}", other.map(|m| m.geometry())),
        }
        return;
    }
    if FenceMode::of_this_process() != FenceMode::Membarrier {
        // No membarrier on this kernel: every ring is a SeqCst ring, nothing to refuse.
        eprintln!("membarrier unavailable here: every ring uses the SeqCst fallback");
        return;
    }
    let mem = RingMemory::create("membarrier", RingKind::Bytes, 4096, 0).unwrap();
    assert_eq!(mem.geometry().fence, FenceMode::Membarrier);
    let out = run_with_fallback(
        "a_process_without_membarrier_refuses_a_ring_that_relies_on_it",
        &[(OPEN_ENV, inheritable(mem.fd()).to_string())],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("refused:")
            && said.contains("membarrier")
            && said.contains("SHM_RING_FENCE=seqcst"),
        "{said}"
    );
}
