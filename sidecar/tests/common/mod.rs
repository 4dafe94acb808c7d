//! A fake QEMU for the sidecar tests: creates rings the way the backend does, registers
//! them through the real socket, and produces console bytes or audio periods.
#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use sha2::{Digest, Sha256};
use shm_ring::handover::{self, Ack, AudioFormat, DeviceDescription, DeviceKind};
use shm_ring::{ByteConsumer, ByteProducer, Doorbell, RecordProducer, RingKind, RingMemory};
use sidecar::{Config, JournalConfig};

/// A deterministic stream per device seed.
pub fn fill(buf: &mut [u8], pos: u64, seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let p = pos + i as u64;
        let x = p.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        *b = (x >> 56) as u8 ^ (p as u8);
    }
}

pub fn stream(seed: u64, from: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    fill(&mut v, from, seed);
    v
}

pub fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

pub fn config(dir: &Path) -> Config {
    let socket = dir.join("run").join("ringcastd.sock");
    Config {
        control_socket: sidecar::control_socket_for(&socket),
        socket,
        state_dir: dir.join("state"),
        journal: JournalConfig {
            window: 256 << 10,
            segment_size: 1 << 20,
            segment_age: Duration::from_secs(3600),
            retention: 1 << 30,
        },
        audio_queue: 64,
    }
}

/// Every byte of a device's spool, in offset order, with the holes between segments.
pub fn read_spool(dir: &Path) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_suffix(".log")?;
            if digits.len() != 20 {
                return None;
            }
            Some((digits.parse::<u64>().ok()?, e.path()))
        })
        .collect();
    segs.sort();
    let mut data = Vec::new();
    let mut holes = Vec::new();
    let mut end = 0u64;
    for (start, path) in segs {
        let bytes = std::fs::read(path).unwrap();
        if start > end {
            holes.push((end, start - end));
        }
        assert!(start >= end, "segments overlap");
        end = start + bytes.len() as u64;
        data.extend_from_slice(&bytes);
    }
    (data, holes)
}

pub use testbed::kit::wait_until;

fn connect(
    path: &Path,
    msg: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<OwnedFd, String> {
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

fn hung_up(sock: &OwnedFd) -> bool {
    let mut pfd = [PollFd::new(sock, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut pfd, Some(&zero)), Ok(n) if n > 0)
}

/// A console device as the backend makes it.
pub struct FakeConsole {
    pub desc: DeviceDescription,
    pub out_mem: Arc<RingMemory>,
    pub tx: ByteProducer,
    pub out_data: Doorbell,
    pub out_space: Doorbell,
    pub in_mem: Arc<RingMemory>,
    pub rx: ByteConsumer,
    pub in_data: Doorbell,
    pub in_space: Doorbell,
    pub sock: Option<OwnedFd>,
    pub socket_path: PathBuf,
    pub dropped: u64,
}

impl FakeConsole {
    pub fn new(socket_path: &Path, vm: &str, device: &str, session: u64, capacity: u64) -> Self {
        let out_mem = Arc::new(RingMemory::create("out", RingKind::Bytes, capacity, 0).unwrap());
        let in_mem = Arc::new(RingMemory::create("in", RingKind::Bytes, 4096, 0).unwrap());
        FakeConsole {
            desc: DeviceDescription {
                kind: DeviceKind::Console,
                pid: std::process::id(),
                session,
                vm_name: vm.into(),
                vm_uuid: String::new(),
                device_id: device.into(),
                audio: None,
            },
            tx: ByteProducer::new(out_mem.clone()).unwrap(),
            rx: ByteConsumer::new(in_mem.clone()).unwrap(),
            out_mem,
            in_mem,
            out_data: Doorbell::new().unwrap(),
            out_space: Doorbell::new().unwrap(),
            in_data: Doorbell::new().unwrap(),
            in_space: Doorbell::new().unwrap(),
            sock: None,
            socket_path: socket_path.to_owned(),
            dropped: 0,
        }
    }

    pub fn try_connect(&mut self) -> Result<(), String> {
        let msg = self.desc.encode().unwrap();
        let fds = [
            self.out_mem.fd(),
            self.out_data.as_fd(),
            self.out_space.as_fd(),
            self.in_mem.fd(),
            self.in_data.as_fd(),
            self.in_space.as_fd(),
        ];
        self.sock = Some(connect(&self.socket_path, &msg, &fds)?);
        Ok(())
    }

    pub fn connect(&mut self) {
        self.try_connect().unwrap()
    }

    /// Connected and the daemon has not hung up.
    pub fn attached(&mut self) -> bool {
        match &self.sock {
            Some(s) if !hung_up(s) => true,
            Some(_) => {
                self.sock = None;
                false
            }
            None => false,
        }
    }

    /// Writes everything with backpressure (the attached policy).
    pub fn write_all(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let w = self.tx.write(data).unwrap();
            if w.wake_consumer {
                self.out_data.ring();
            }
            data = &data[w.bytes..];
            if w.bytes == 0
                && !self
                    .tx
                    .space_or_arm(1, || {
                        self.out_space.drain();
                    })
                    .unwrap()
            {
                self.out_space.wait(100);
            }
        }
    }

    /// Writes with the flight-recorder policy (no daemon attached).
    pub fn write_overwriting(&mut self, data: &[u8]) {
        let w = self.tx.write_overwriting(data).unwrap();
        self.dropped += w.dropped;
        if w.wake_consumer {
            self.out_data.ring();
        }
    }

    pub fn free(&mut self) -> usize {
        self.tx.free().unwrap()
    }

    /// Waits until the daemon took every byte out of the ring.
    pub fn wait_drained(&mut self) {
        let cap = self.out_mem.geometry().capacity as usize;
        wait_until("the ring to drain", Duration::from_secs(30), || {
            self.tx.free().unwrap() == cap
        });
    }
}

/// An audio device as the backend makes it.
pub struct FakeAudio {
    pub desc: DeviceDescription,
    pub mem: Arc<RingMemory>,
    pub tx: RecordProducer,
    pub data: Doorbell,
    pub sock: Option<OwnedFd>,
}

impl FakeAudio {
    pub fn new(socket_path: &Path, vm: &str, device: &str) -> Self {
        let mem = Arc::new(RingMemory::create("audio", RingKind::Records, 1 << 16, 4096).unwrap());
        let desc = DeviceDescription {
            kind: DeviceKind::Audio,
            pid: std::process::id(),
            session: 1,
            vm_name: vm.into(),
            vm_uuid: String::new(),
            device_id: device.into(),
            audio: Some(AudioFormat {
                frequency: 48_000,
                channels: 2,
                sample_format: 3,
                big_endian: false,
            }),
        };
        let data = Doorbell::new().unwrap();
        let msg = desc.encode().unwrap();
        let sock = connect(socket_path, &msg, &[mem.fd(), data.as_fd()]).unwrap();
        FakeAudio {
            desc,
            tx: RecordProducer::new(mem.clone()).unwrap(),
            mem,
            data,
            sock: Some(sock),
        }
    }

    /// Pushes one period of `frames` stereo s16 frames whose bytes derive from `seq`.
    pub fn push(&mut self, seq: u64, frames: u32) -> bool {
        let pcm = stream(seq, 0, u64::from(frames) * 4);
        let p = self.tx.push(seq * 1000, frames, 0, &pcm).unwrap();
        if p.wake_consumer {
            self.data.ring();
        }
        p.stored
    }
}
