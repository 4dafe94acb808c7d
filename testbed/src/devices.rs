//! Devices as the backend makes them, without QEMU or the plugin: rings created and
//! registered with ringcastd through the real handover socket, written from the calling
//! thread. For tests and benches that need many devices, exact timing or a producer in the
//! same process as the measurement.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack, AudioFormat, DeviceDescription, DeviceKind};
use shm_ring::{ByteConsumer, ByteProducer, Doorbell, RecordProducer, RingKind, RingMemory};

/// Sends a device description with its fds to ringcastd at `path` and waits (10 s at most)
/// for the acknowledgement. The returned socket is the registration: closing it unregisters.
pub fn register(path: &Path, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<OwnedFd, String> {
    fn e<'a>(what: &'a str, path: &'a Path) -> impl Fn(rustix::io::Errno) -> String + 'a {
        move |err| format!("{what} {}: {err}", path.display())
    }
    let addr = SocketAddrUnix::new(path).map_err(e("socket path", path))?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(e("socket for", path))?;
    rustix::net::connect(&sock, &addr).map_err(e("connect to", path))?;
    handover::send_with_fds(&sock, msg, fds).map_err(|err| format!("send: {err}"))?;
    let mut pfd = [PollFd::new(&sock, PollFlags::IN)];
    let t = Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    if poll(&mut pfd, Some(&t)).map_err(e("poll", path))? == 0 {
        return Err("ringcastd sent no acknowledgement within 10 s".into());
    }
    let (reply, _) = handover::recv_with_fds(&sock)
        .map_err(|err| format!("receive: {err}"))?
        .ok_or("ringcastd closed the connection before the acknowledgement")?;
    let ack = Ack::decode(&reply).map_err(|err| err.to_string())?;
    if !ack.accepted {
        return Err(format!("refused: {}", ack.message));
    }
    Ok(sock)
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// True when ringcastd hung up on the registration.
fn hung_up(sock: &OwnedFd) -> bool {
    let mut pfd = [PollFd::new(sock, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut pfd, Some(&zero)), Ok(n) if n > 0)
}

/// How long [`FakeConsole::write_all`] and [`FakeConsole::wait_drained`] wait without
/// progress before they fail.
pub const NO_PROGRESS: Duration = Duration::from_secs(30);

/// A console device: output ring of a chosen capacity, a 4 KiB input ring, four doorbells.
///
/// The panicking methods (`new`, `connect`, `write_all`, ...) are for tests; benches use the
/// `try_` forms, which return the error.
pub struct FakeConsole {
    /// What is sent at registration.
    pub desc: DeviceDescription,
    /// Output ring (guest → ringcastd).
    pub out_mem: Arc<RingMemory>,
    /// Its producer.
    pub tx: ByteProducer,
    /// "Data available" doorbell of the output ring.
    pub out_data: Doorbell,
    /// "Space available" doorbell of the output ring.
    pub out_space: Doorbell,
    /// Input ring (ringcastd → guest).
    pub in_mem: Arc<RingMemory>,
    /// Its consumer.
    pub rx: ByteConsumer,
    /// "Data available" doorbell of the input ring.
    pub in_data: Doorbell,
    /// "Space available" doorbell of the input ring.
    pub in_space: Doorbell,
    /// The registration, once connected.
    pub sock: Option<OwnedFd>,
    /// ringcastd's registration socket.
    pub socket_path: PathBuf,
    /// Bytes dropped by [`FakeConsole::write_overwriting`].
    pub dropped: u64,
}

impl FakeConsole {
    /// Creates the rings for ringcastd at `socket`; [`FakeConsole::try_connect`] registers
    /// them.
    pub fn try_new(
        socket: &Path,
        vm: &str,
        device: &str,
        session: u64,
        capacity: u64,
    ) -> Result<Self, String> {
        let out_mem = Arc::new(RingMemory::create("out", RingKind::Bytes, capacity, 0).map_err(s)?);
        let in_mem = Arc::new(RingMemory::create("in", RingKind::Bytes, 4096, 0).map_err(s)?);
        Ok(FakeConsole {
            desc: DeviceDescription {
                kind: DeviceKind::Console,
                pid: std::process::id(),
                session,
                vm_name: vm.into(),
                vm_uuid: String::new(),
                device_id: device.into(),
                audio: None,
                audio_in: None,
            },
            tx: ByteProducer::new(out_mem.clone()).map_err(s)?,
            rx: ByteConsumer::new(in_mem.clone()).map_err(s)?,
            out_mem,
            in_mem,
            out_data: Doorbell::new().map_err(s)?,
            out_space: Doorbell::new().map_err(s)?,
            in_data: Doorbell::new().map_err(s)?,
            in_space: Doorbell::new().map_err(s)?,
            sock: None,
            socket_path: socket.to_owned(),
            dropped: 0,
        })
    }

    /// [`FakeConsole::try_new`], panicking on failure.
    pub fn new(socket: &Path, vm: &str, device: &str, session: u64, capacity: u64) -> Self {
        Self::try_new(socket, vm, device, session, capacity)
            .unwrap_or_else(|e| panic!("fake console {vm}/{device}: {e}"))
    }

    /// Registers the device with ringcastd.
    pub fn try_connect(&mut self) -> Result<(), String> {
        let msg = self.desc.encode().map_err(|e| e.to_string())?;
        let fds = [
            self.out_mem.fd(),
            self.out_data.as_fd(),
            self.out_space.as_fd(),
            self.in_mem.fd(),
            self.in_data.as_fd(),
            self.in_space.as_fd(),
        ];
        self.sock = Some(register(&self.socket_path, &msg, &fds)?);
        Ok(())
    }

    /// [`FakeConsole::try_connect`], panicking on failure.
    pub fn connect(&mut self) {
        if let Err(e) = self.try_connect() {
            panic!(
                "registering {}/{} with {}: {e}",
                self.desc.vm_name,
                self.desc.device_id,
                self.socket_path.display()
            );
        }
    }

    /// Connected and ringcastd has not hung up.
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

    /// Writes everything with backpressure (the policy while ringcastd is attached),
    /// waiting on the space doorbell when the ring is full. Fails after `timeout` without
    /// progress.
    pub fn try_write_all(&mut self, mut data: &[u8], timeout: Duration) -> Result<(), String> {
        let mut progress = Instant::now();
        while !data.is_empty() {
            let w = self.tx.write(data).map_err(|e| e.to_string())?;
            if w.wake_consumer {
                self.out_data.ring();
            }
            data = &data[w.bytes..];
            if w.bytes > 0 {
                progress = Instant::now();
                continue;
            }
            if progress.elapsed() > timeout {
                return Err(format!(
                    "ringcastd took nothing from the ring for {timeout:?}"
                ));
            }
            let out_space = &self.out_space;
            if !self
                .tx
                .space_or_arm(1, || {
                    out_space.drain();
                })
                .map_err(|e| e.to_string())?
            {
                self.out_space.wait(100);
            }
        }
        Ok(())
    }

    /// [`FakeConsole::try_write_all`] with [`NO_PROGRESS`], panicking on failure.
    pub fn write_all(&mut self, data: &[u8]) {
        if let Err(e) = self.try_write_all(data, NO_PROGRESS) {
            panic!("{}/{}: {e}", self.desc.vm_name, self.desc.device_id);
        }
    }

    /// Writes with the flight-recorder policy (nobody attached): keeps the newest bytes.
    pub fn try_write_overwriting(&mut self, data: &[u8]) -> Result<(), String> {
        let w = self.tx.write_overwriting(data).map_err(|e| e.to_string())?;
        self.dropped += w.dropped;
        if w.wake_consumer {
            self.out_data.ring();
        }
        Ok(())
    }

    /// [`FakeConsole::try_write_overwriting`], panicking on failure.
    pub fn write_overwriting(&mut self, data: &[u8]) {
        self.try_write_overwriting(data)
            .unwrap_or_else(|e| panic!("{}/{}: {e}", self.desc.vm_name, self.desc.device_id));
    }

    /// Free bytes in the output ring.
    pub fn free(&mut self) -> usize {
        self.tx.free().expect("a healthy ring")
    }

    /// Waits until ringcastd took every byte out of the output ring (panics after
    /// [`NO_PROGRESS`]).
    pub fn wait_drained(&mut self) {
        let cap = self.out_mem.geometry().capacity as usize;
        let what = format!(
            "ringcastd to drain the ring of {}/{}",
            self.desc.vm_name, self.desc.device_id
        );
        crate::kit::wait_until(&what, NO_PROGRESS, || self.tx.free().unwrap() == cap);
    }
}

/// An audio output device: a records ring of 64 KiB with 4 KiB periods at most, 48 kHz
/// stereo s16.
pub struct FakeAudio {
    /// What is sent at registration.
    pub desc: DeviceDescription,
    /// The records ring.
    pub mem: Arc<RingMemory>,
    /// Its producer.
    pub tx: RecordProducer,
    /// "Data available" doorbell.
    pub data: Doorbell,
    /// The registration.
    pub sock: Option<OwnedFd>,
    /// The capture side's ring (a device made with [`FakeAudio::with_input`]): what
    /// ringcastd writes for `ringcast mic`.
    pub input: Option<ByteConsumer>,
}

impl FakeAudio {
    /// Creates the ring and registers it with ringcastd at `socket`.
    pub fn try_new(socket: &Path, vm: &str, device: &str) -> Result<Self, String> {
        Self::try_with_input(socket, vm, device, None)
    }

    /// A device whose sound card also records, in `input` (a 64 KiB input ring).
    pub fn with_input(socket: &Path, vm: &str, device: &str, input: AudioFormat) -> Self {
        Self::try_with_input(socket, vm, device, Some(input))
            .unwrap_or_else(|e| panic!("fake audio device {vm}/{device}: {e}"))
    }

    fn try_with_input(
        socket: &Path,
        vm: &str,
        device: &str,
        audio_in: Option<AudioFormat>,
    ) -> Result<Self, String> {
        let mem =
            Arc::new(RingMemory::create("audio", RingKind::Records, 1 << 16, 4096).map_err(s)?);
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
            audio_in,
        };
        let data = Doorbell::new().map_err(s)?;
        let msg = desc.encode().map_err(|e| e.to_string())?;
        let input = match audio_in {
            Some(_) => Some(Arc::new(
                RingMemory::create("audio-in", RingKind::Bytes, 1 << 16, 0).map_err(s)?,
            )),
            None => None,
        };
        let mut fds = vec![mem.fd(), data.as_fd()];
        fds.extend(input.as_ref().map(|m| m.fd()));
        let sock = register(socket, &msg, &fds)?;
        Ok(FakeAudio {
            desc,
            tx: RecordProducer::new(mem.clone()).map_err(|e| e.to_string())?,
            mem,
            data,
            sock: Some(sock),
            input: match input {
                Some(m) => Some(ByteConsumer::new(m).map_err(|e| e.to_string())?),
                None => None,
            },
        })
    }

    /// Takes what the capture side's ring holds now (as QEMU's input voice would).
    pub fn read_input(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        let rx = self.input.as_mut().expect("a device without input");
        while let Ok(r) = rx.read(&mut buf) {
            if r.bytes == 0 {
                break;
            }
            all.extend_from_slice(&buf[..r.bytes]);
        }
        all
    }

    /// [`FakeAudio::try_new`], panicking on failure.
    pub fn new(socket: &Path, vm: &str, device: &str) -> Self {
        Self::try_new(socket, vm, device)
            .unwrap_or_else(|e| panic!("fake audio device {vm}/{device}: {e}"))
    }

    /// Pushes one period stamped `timestamp_ns`; false when the ring was full (dropped).
    pub fn try_push_pcm(
        &mut self,
        timestamp_ns: u64,
        frames: u32,
        pcm: &[u8],
    ) -> Result<bool, String> {
        let p = self
            .tx
            .push(timestamp_ns, frames, 0, pcm)
            .map_err(|e| e.to_string())?;
        if p.wake_consumer {
            self.data.ring();
        }
        Ok(p.stored)
    }

    /// Pushes period `seq`: `frames` stereo s16 frames whose bytes are
    /// [`crate::kit::stream`]`(seq, 0, frames * 4)`, stamped `seq * 1000` ns; false when
    /// the ring was full (dropped).
    pub fn push(&mut self, seq: u64, frames: u32) -> bool {
        let pcm = crate::kit::stream(seq, 0, u64::from(frames) * 4);
        self.try_push_pcm(seq * 1000, frames, &pcm)
            .unwrap_or_else(|e| panic!("{}/{}: {e}", self.desc.vm_name, self.desc.device_id))
    }
}

impl std::fmt::Debug for FakeConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConsole")
            .field("desc", &self.desc)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FakeAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAudio")
            .field("desc", &self.desc)
            .finish_non_exhaustive()
    }
}
