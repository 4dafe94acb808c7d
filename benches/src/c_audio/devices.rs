//! The fake devices of scenario C: registered with the in-process ringcastd through its
//! real socket, the way the backend does, and written from threads of this process.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack, AudioFormat, DeviceDescription, DeviceKind};
use shm_ring::{ByteProducer, Doorbell, RecordProducer, RingKind, RingMemory};

use super::{mono_ns, AUDIO_DEV, CONSOLE_DEV, RATE, VM};

/// The longest period the producer writes (10 ms at 48 kHz).
pub(super) const MAX_FRAMES: u32 = 480;

/// Registers a device through the daemon's socket the way the backend does.
pub(super) fn register(path: &Path, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<OwnedFd, String> {
    let addr = SocketAddrUnix::new(path).map_err(|e| e.to_string())?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| e.to_string())?;
    rustix::net::connect(&sock, &addr).map_err(|e| e.to_string())?;
    handover::send_with_fds(&sock, msg, fds).map_err(|e| e.to_string())?;
    let mut pfd = [PollFd::new(&sock, PollFlags::IN)];
    let t = Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    if poll(&mut pfd, Some(&t)).map_err(|e| e.to_string())? == 0 {
        return Err("no acknowledgement".into());
    }
    let (reply, _) = handover::recv_with_fds(&sock)
        .map_err(|e| e.to_string())?
        .ok_or("connection closed before the acknowledgement")?;
    let ack = Ack::decode(&reply).map_err(|e| e.to_string())?;
    if !ack.accepted {
        return Err(format!("refused: {}", ack.message));
    }
    Ok(sock)
}

fn description(kind: DeviceKind, device: &str, audio: Option<AudioFormat>) -> DeviceDescription {
    DeviceDescription {
        kind,
        pid: std::process::id(),
        session: 1,
        vm_name: VM.into(),
        vm_uuid: String::new(),
        device_id: device.into(),
        audio,
    }
}

/// The audio producer: a thread pushing one stamped period of `frames` frames (read before
/// each period, so the period length can change between runs) every `frames / 48 kHz` until
/// stopped. Returns (periods pushed, periods the ring refused).
pub(super) fn start_audio(
    socket: &Path,
    frames: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<(u64, u64)>, String> {
    let mem = Arc::new(
        RingMemory::create("audio", RingKind::Records, 1 << 16, 4096).map_err(|e| e.to_string())?,
    );
    let desc = description(
        DeviceKind::Audio,
        AUDIO_DEV,
        Some(AudioFormat {
            frequency: RATE,
            channels: 2,
            sample_format: 3,
            big_endian: false,
        }),
    );
    let data = Doorbell::new().map_err(|e| e.to_string())?;
    let msg = desc.encode().map_err(|e| e.to_string())?;
    let sock = register(socket, &msg, &[mem.fd(), data.as_fd()])?;
    let mut tx = RecordProducer::new(mem.clone()).map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let _keep = (sock, mem);
        let pcm: Vec<u8> = (0..MAX_FRAMES * 4).map(|i| i as u8).collect();
        let (mut pushed, mut refused) = (0u64, 0u64);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = frames.load(Ordering::Relaxed).clamp(1, MAX_FRAMES);
            next += Duration::from_nanos(u64::from(n) * 1_000_000_000 / u64::from(RATE));
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_millis(100) {
                // Far behind (the machine stalled): start the schedule again from now.
                next = now;
            }
            match tx.push(mono_ns(), n, 0, &pcm[..n as usize * 4]) {
                Ok(p) => {
                    pushed += 1;
                    refused += u64::from(!p.stored);
                    if p.wake_consumer {
                        data.ring();
                    }
                }
                Err(_) => break,
            }
        }
        (pushed, refused)
    }))
}

/// The console flood: writes as fast as the ring takes bytes while `on` is set.
pub(super) fn start_flood(
    socket: &Path,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<u64>, String> {
    fn e(e: impl std::fmt::Display) -> String {
        e.to_string()
    }
    let out_mem = Arc::new(RingMemory::create("out", RingKind::Bytes, 1 << 20, 0).map_err(e)?);
    let in_mem = Arc::new(RingMemory::create("in", RingKind::Bytes, 4096, 0).map_err(e)?);
    let (out_data, out_space) = (Doorbell::new().map_err(e)?, Doorbell::new().map_err(e)?);
    let (in_data, in_space) = (Doorbell::new().map_err(e)?, Doorbell::new().map_err(e)?);
    let desc = description(DeviceKind::Console, CONSOLE_DEV, None);
    let msg = desc.encode().map_err(|e| e.to_string())?;
    let sock = register(
        socket,
        &msg,
        &[
            out_mem.fd(),
            out_data.as_fd(),
            out_space.as_fd(),
            in_mem.fd(),
            in_data.as_fd(),
            in_space.as_fd(),
        ],
    )?;
    let mut tx = ByteProducer::new(out_mem.clone()).map_err(|e| e.to_string())?;
    Ok(std::thread::spawn(move || {
        let _keep = (sock, out_mem, in_mem, in_data, in_space);
        let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| b' ' + (i % 95) as u8).collect();
        let mut written = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if !on.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let Ok(w) = tx.write(&chunk) else { break };
            written += w.bytes as u64;
            if w.wake_consumer {
                out_data.ring();
            }
            if w.bytes == 0
                && !tx
                    .space_or_arm(1, || {
                        out_space.drain();
                    })
                    .unwrap_or(true)
            {
                out_space.wait(50);
            }
        }
        written
    }))
}
