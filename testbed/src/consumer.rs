//! A minimal consumer standing in for ringcastd: listens on a registration socket, accepts
//! devices (description + rings + doorbells), acknowledges them and reads the rings.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::{self, Ack, DeviceDescription, DeviceKind};
use shm_ring::{
    ByteConsumer, ByteProducer, Doorbell, RecordConsumer, RecordMeta, RingKind, RingMemory,
};

/// A listening registration socket.
#[derive(Debug)]
pub struct TestConsumer {
    path: PathBuf,
    listener: OwnedFd,
}

/// A registered console, seen from the consumer side.
#[derive(Debug)]
pub struct ConsoleEnd {
    /// What the plugin announced.
    pub desc: DeviceDescription,
    /// The connection; dropping it tells the plugin the consumer is gone.
    pub sock: OwnedFd,
    /// Guest output.
    pub out: ByteConsumer,
    out_data: Doorbell,
    out_space: Doorbell,
    /// Input to the guest.
    pub input: ByteProducer,
    in_data: Doorbell,
    in_space: Doorbell,
    /// Bytes the flight recorder discarded while we were reading (sum of `lost`).
    pub lost: u64,
    /// Ring position of the first byte still in the ring when we attached: positions are
    /// device offsets, so the bytes before it were dropped before we came.
    pub start_position: u64,
}

/// A registered audio output, seen from the consumer side.
#[derive(Debug)]
pub struct AudioEnd {
    /// What the plugin announced.
    pub desc: DeviceDescription,
    /// The connection.
    pub sock: OwnedFd,
    /// The periods.
    pub rx: RecordConsumer,
    data: Doorbell,
    /// The guest's capture side (when the plugin has an input voice): PCM written here is
    /// what the guest records.
    pub input: Option<ByteProducer>,
}

/// A device that registered.
#[derive(Debug)]
pub enum Registration {
    /// A character device.
    Console(ConsoleEnd),
    /// An audio output.
    Audio(AudioEnd),
}

impl Registration {
    /// The console, or a panic naming what came instead.
    pub fn console(self) -> ConsoleEnd {
        match self {
            Registration::Console(c) => c,
            Registration::Audio(a) => panic!("expected a console, got audio {:?}", a.desc),
        }
    }

    /// The audio output, or a panic naming what came instead.
    pub fn audio(self) -> AudioEnd {
        match self {
            Registration::Audio(a) => a,
            Registration::Console(c) => panic!("expected audio, got a console {:?}", c.desc),
        }
    }
}

impl TestConsumer {
    /// Listens at `path` (removing a stale socket file first).
    pub fn bind(path: &Path) -> std::io::Result<TestConsumer> {
        let _ = std::fs::remove_file(path);
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = SocketAddrUnix::new(path)?;
        rustix::net::bind(&listener, &addr)?;
        rustix::net::listen(&listener, 16)?;
        Ok(TestConsumer {
            path: path.to_owned(),
            listener,
        })
    }

    /// The socket path, for `config=socket=...`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next device, maps its rings and acknowledges it.
    pub fn accept(&self, timeout: Duration) -> Result<Registration, String> {
        let (desc, fds, sock) = self.receive(timeout)?;
        let reg = map(desc, fds, &sock)?;
        handover::send_with_fds(
            &sock,
            &Ack {
                accepted: true,
                message: String::new(),
            }
            .encode(),
            &[],
        )
        .map_err(|e| e.to_string())?;
        Ok(match reg {
            Mapped::Console(mut c) => {
                c.sock = sock;
                Registration::Console(c)
            }
            Mapped::Audio(mut a) => {
                a.sock = sock;
                Registration::Audio(a)
            }
        })
    }

    /// Waits for the next device and refuses it with `why`.
    pub fn refuse(&self, timeout: Duration, why: &str) -> Result<DeviceDescription, String> {
        let (desc, _fds, sock) = self.receive(timeout)?;
        handover::send_with_fds(
            &sock,
            &Ack {
                accepted: false,
                message: why.into(),
            }
            .encode(),
            &[],
        )
        .map_err(|e| e.to_string())?;
        Ok(desc)
    }

    fn receive(
        &self,
        timeout: Duration,
    ) -> Result<(DeviceDescription, Vec<OwnedFd>, OwnedFd), String> {
        let mut pfd = [rustix::event::PollFd::new(
            &self.listener,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        if rustix::event::poll(&mut pfd, Some(&ts)).map_err(|e| e.to_string())? == 0 {
            return Err(format!("no device registered within {timeout:?}"));
        }
        let sock = rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC)
            .map_err(|e| e.to_string())?;
        let (msg, fds) = handover::recv_with_fds(&sock)
            .map_err(|e| e.to_string())?
            .ok_or("peer closed before describing a device")?;
        let desc = DeviceDescription::decode(&msg).map_err(|e| e.to_string())?;
        if fds.len() != desc.fd_count() {
            return Err(format!("{} fds for a {:?}", fds.len(), desc.kind));
        }
        Ok((desc, fds, sock))
    }
}

enum Mapped {
    Console(ConsoleEnd),
    Audio(AudioEnd),
}

fn map(desc: DeviceDescription, fds: Vec<OwnedFd>, sock: &OwnedFd) -> Result<Mapped, String> {
    let e = |e: shm_ring::RingError| e.to_string();
    let placeholder = || sock.as_fd().try_clone_to_owned().map_err(|e| e.to_string());
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("count checked");
    Ok(match desc.kind {
        DeviceKind::Console => {
            let out_mem = Arc::new(RingMemory::open(next(), RingKind::Bytes).map_err(e)?);
            let out_data = Doorbell::from_fd(next()).map_err(e)?;
            let out_space = Doorbell::from_fd(next()).map_err(e)?;
            let in_mem = Arc::new(RingMemory::open(next(), RingKind::Bytes).map_err(e)?);
            let in_data = Doorbell::from_fd(next()).map_err(e)?;
            let in_space = Doorbell::from_fd(next()).map_err(e)?;
            let out = ByteConsumer::new(out_mem).map_err(e)?;
            Mapped::Console(ConsoleEnd {
                desc,
                sock: placeholder()?,
                start_position: out.position(),
                out,
                out_data,
                out_space,
                input: ByteProducer::new(in_mem).map_err(e)?,
                in_data,
                in_space,
                lost: 0,
            })
        }
        DeviceKind::Audio => {
            let mem = Arc::new(RingMemory::open(next(), RingKind::Records).map_err(e)?);
            let has_input = desc.audio_in.is_some();
            Mapped::Audio(AudioEnd {
                desc,
                sock: placeholder()?,
                rx: RecordConsumer::new(mem).map_err(e)?,
                data: Doorbell::from_fd(next()).map_err(e)?,
                input: if has_input {
                    let mem = RingMemory::open(next(), RingKind::Bytes).map_err(e)?;
                    Some(ByteProducer::new(Arc::new(mem)).map_err(e)?)
                } else {
                    None
                },
            })
        }
    })
}

impl ConsoleEnd {
    /// Reads what is there now into `into`; returns the byte count.
    pub fn read_now(&mut self, into: &mut Vec<u8>) -> Result<usize, String> {
        let mut buf = [0u8; 64 << 10];
        let mut total = 0;
        loop {
            let r = self.out.read(&mut buf).map_err(|p| p.to_string())?;
            self.lost += r.lost;
            if r.wake_producer {
                self.out_space.ring();
            }
            if r.bytes == 0 {
                return Ok(total);
            }
            into.extend_from_slice(&buf[..r.bytes]);
            total += r.bytes;
        }
    }

    /// Reads until `into` holds `len` bytes, sleeping on the data doorbell in between;
    /// `pause` after each read makes a deliberately slow consumer.
    pub fn read_until(
        &mut self,
        into: &mut Vec<u8>,
        len: usize,
        pause: Duration,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while into.len() < len {
            if self.read_now(into)? > 0 {
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                continue;
            }
            if self.out.prepare_sleep().map_err(|p| p.to_string())? {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("only {} of {len} bytes arrived", into.len()));
                }
                self.out_data.wait(left.as_millis().min(1000) as i32);
                self.out_data.drain();
            }
        }
        Ok(())
    }

    /// Queues input for the guest; returns the bytes that fit.
    pub fn send_input(&mut self, data: &[u8]) -> Result<usize, String> {
        let w = self.input.write(data).map_err(|p| p.to_string())?;
        if w.wake_consumer {
            self.in_data.ring();
        }
        Ok(w.bytes)
    }

    /// The input ring's "space available" doorbell (rung when the plugin consumed input
    /// the consumer was waiting to send).
    pub fn input_space_doorbell(&self) -> &Doorbell {
        &self.in_space
    }
}

impl AudioEnd {
    /// Takes every period that is there now.
    pub fn pop_all(&mut self) -> Result<Vec<(RecordMeta, Vec<u8>)>, String> {
        let mut v = Vec::new();
        loop {
            let mut payload = Vec::new();
            match self.rx.pop(&mut payload).map_err(|p| p.to_string())? {
                Some(p) => v.push((p.meta, payload)),
                None => return Ok(v),
            }
        }
    }

    /// Waits on the data doorbell until a period may be there.
    pub fn wait(&mut self, timeout: Duration) -> Result<(), String> {
        if self.rx.prepare_sleep().map_err(|p| p.to_string())? {
            self.data
                .wait(timeout.as_millis().min(i32::MAX as u128) as i32);
            self.data.drain();
        }
        Ok(())
    }
}
