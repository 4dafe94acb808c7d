//! Starting and stopping ringcastd, and the [`Handle`] the network layer uses. Its
//! sockets (registration and control) are in `sockets`.

mod mic;
mod recover;
mod sockets;

pub use sockets::query_stats;
use sockets::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use shm_ring::handover::AudioFormat;
use shm_ring::Doorbell;

use crate::device::{lock, Device, DeviceKind, DeviceState, DeviceStats};
use crate::error::Error;
use crate::journal::{Journal, JournalConfig, Meta};
use crate::names::{dir_component, DeviceKey};
use crate::signal::Signal;
use crate::subscribe::{AudioSubscription, ConsoleSubscription, StartAt};

/// Everything ringcastd can be told. [`Config::default`] is the zero-config setup.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registration socket (SOCK_SEQPACKET) QEMU connects to.
    pub socket: PathBuf,
    /// Local control socket for `ringcastd stats`.
    pub control_socket: PathBuf,
    /// Where journals live.
    pub state_dir: PathBuf,
    /// Journal shape per console device.
    pub journal: JournalConfig,
    /// Audio periods queued per subscriber before the oldest are dropped.
    pub audio_queue: usize,
    /// How audio devices are encoded for Opus subscribers.
    pub opus: crate::transcode::OpusConfig,
}

impl Default for Config {
    fn default() -> Self {
        let socket = shm_ring::handover::default_socket_path("ringcast");
        Config {
            control_socket: control_socket_for(&socket),
            socket,
            state_dir: default_state_dir(),
            journal: JournalConfig {
                window: 4 << 20,
                segment_size: 16 << 20,
                segment_age: Duration::from_secs(24 * 3600),
                retention: 256 << 20,
            },
            audio_queue: 64,
            opus: Default::default(),
        }
    }
}

/// `$XDG_STATE_HOME/ringcast`, or `/var/lib/ringcast` without it.
pub fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("ringcast"),
        _ => PathBuf::from("/var/lib/ringcast"),
    }
}

/// The control socket that goes with a registration socket: `ringcastd.ctl` beside it.
pub fn control_socket_for(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("ringcastd.ctl")
}

/// Name, kind and state of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device.
    pub key: DeviceKey,
    /// Console or audio.
    pub kind: DeviceKind,
    /// Whether its QEMU is connected.
    pub state: DeviceState,
    /// Audio format (audio devices that registered since ringcastd started).
    pub audio: Option<AudioFormat>,
    /// A console that is a QEMU monitor (it greeted as one).
    pub monitor: bool,
}

/// Devices by name, shared by the ingest thread and handles.
#[derive(Debug)]
pub(crate) struct Registry {
    pub cfg: Config,
    pub devices: Mutex<BTreeMap<DeviceKey, Arc<Device>>>,
    pub changed: Signal,
    pub closed: Arc<AtomicBool>,
    /// Rights the admin granted on this host.
    pub grants: crate::grants::LocalGrants,
    /// The browser client's links and sessions (minted through the control socket).
    pub web: Arc<crate::web::auth::WebAuth>,
}

impl Registry {
    /// The journal directory of a device: `<state>/<vm>/<device>` with each name made a
    /// directory name one to one ([`dir_component`]).
    fn device_dir(&self, key: &DeviceKey) -> PathBuf {
        self.cfg
            .state_dir
            .join(dir_component(&key.vm))
            .join(dir_component(&key.device))
    }

    /// The device named `key`, if known.
    pub fn existing(&self, key: &DeviceKey) -> Option<Arc<Device>> {
        lock(&self.devices).get(key).cloned()
    }

    /// Why a `wanted` device cannot take the name of a `known` one.
    pub fn kind_conflict(&self, key: &DeviceKey, known: DeviceKind, wanted: DeviceKind) -> String {
        format!(
            "{key} is already known as a {} device; give the {} device another id",
            known.name(),
            wanted.name()
        )
    }

    /// The device named `key`, created if new. Fails when it exists with another kind.
    pub fn device_for(&self, key: &DeviceKey, kind: DeviceKind) -> Result<Arc<Device>, String> {
        let mut devices = lock(&self.devices);
        if let Some(d) = devices.get(key) {
            if d.kind != kind {
                return Err(self.kind_conflict(key, d.kind, kind));
            }
            return Ok(d.clone());
        }
        let journal = match kind {
            DeviceKind::Audio => None,
            DeviceKind::Console => {
                let meta = Meta {
                    vm: key.vm.clone(),
                    device: key.device.clone(),
                    kind: "console".into(),
                    ..Meta::default()
                };
                Some(
                    Journal::open(self.device_dir(key), self.cfg.journal.clone(), meta)
                        .map_err(|e| format!("cannot open the journal of {key}: {e}"))?,
                )
            }
        };
        let d = Device::new(key.clone(), kind, journal);
        devices.insert(key.clone(), d.clone());
        drop(devices);
        self.changed.notify();
        Ok(d)
    }

    fn get(&self, key: &DeviceKey) -> Result<Arc<Device>, Error> {
        lock(&self.devices)
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NoSuchDevice(key.to_string()))
    }
}

/// A running ringcastd: the ingest thread and the control socket thread.
#[derive(Debug)]
pub struct Daemon {
    handle: Handle,
    stop: Doorbell,
    ingest: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    /// The control socket's listener, to wake its thread out of `accept` at shutdown (even
    /// when the socket's file is gone).
    control_listener: Option<UnixListener>,
}

impl Daemon {
    /// Creates the state dir and sockets, recovers the journals and starts ingesting.
    pub fn start(cfg: Config) -> Result<Daemon, Error> {
        // Registers for membarrier now, not when the ingest thread takes its first ring,
        // and says once how this process fences its rings.
        let fence = shm_ring::fence::init();
        match &fence.fallback {
            None => tracing::debug!("ring fence: {fence}"),
            Some(_) => tracing::warn!(
                "ring fence: {fence}; rings still work, each publish costs a little more \
                 (`ringcastd stats` shows this too)"
            ),
        }
        crate::private::ensure_dir(&cfg.state_dir, "state directory", "--state-dir")?;
        let listener = bind_registration(&cfg.socket)?;
        let control = bind_control(&cfg.control_socket)?;
        let grants = crate::grants::LocalGrants::open(&cfg.state_dir)?;
        let registry = Arc::new(Registry {
            grants,
            web: Default::default(),
            cfg,
            devices: Mutex::new(BTreeMap::new()),
            changed: Signal::default(),
            closed: Arc::new(AtomicBool::new(false)),
        });
        registry.recover();
        let stop =
            Doorbell::new().map_err(|e| Error::io("eventfd", "", std::io::Error::other(e)))?;
        let stop2 = stop
            .try_clone()
            .map_err(|e| Error::io("eventfd", "", std::io::Error::other(e)))?;
        let uring = crate::uring::Uring::new(4096).map_err(Error::Uring)?;
        let reg = registry.clone();
        let ingest = std::thread::Builder::new()
            .name("ringcast-ingest".into())
            .spawn(move || crate::ingest::run(uring, reg, listener, stop2))
            .map_err(|e| Error::io("spawn ingest thread", "", e))?;
        let handle = Handle { reg: registry };
        let h2 = handle.clone();
        let control_listener = control.try_clone().ok();
        let control = std::thread::Builder::new()
            .name("ringcast-control".into())
            .spawn(move || serve_control(control, h2))
            .map_err(|e| Error::io("spawn control thread", "", e))?;
        tracing::info!(
            socket = %handle.reg.cfg.socket.display(),
            state = %handle.reg.cfg.state_dir.display(),
            "journals and registration socket up"
        );
        Ok(Daemon {
            handle,
            stop,
            ingest: Some(ingest),
            control: Some(control),
            control_listener,
        })
    }

    /// A handle for subscribers and stats.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Waits until the ingest thread ends (it ends only on shutdown or a fatal error).
    pub fn wait(mut self) {
        if let Some(t) = self.ingest.take() {
            let _ = t.join();
        }
    }

    /// Stops ingesting, closes every QEMU connection (their backends switch to flight
    /// recorder mode) and the sockets. Journals stay on disk.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let reg = &self.handle.reg;
        reg.closed.store(true, Relaxed);
        self.stop.ring();
        if let Some(t) = self.ingest.take() {
            let _ = t.join();
        }
        // Wake the control thread out of accept(): shutting a listening socket down makes
        // accept fail at once (a connection to its path would need the file to be there).
        match &self.control_listener {
            Some(l) => {
                let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Both);
            }
            None => {
                let _ = UnixStream::connect(&reg.cfg.control_socket);
            }
        }
        if let Some(t) = self.control.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&reg.cfg.socket);
        let _ = std::fs::remove_file(&reg.cfg.control_socket);
        for d in lock(&reg.devices).values() {
            d.set_attachment(DeviceState::Gone, None);
            for q in lock(&d.state).audio_queues.iter() {
                q.signal.notify();
            }
        }
        reg.changed.notify();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.ingest.is_some() {
            self.stop_now();
        }
    }
}

/// What the network layer (and tests) use: devices, subscriptions, console input, stats.
/// Cheap to clone; every method may be called from any thread.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) reg: Arc<Registry>,
}

impl Handle {
    /// Rights the host's admin granted through the control socket.
    pub fn local_grants(&self) -> &crate::grants::LocalGrants {
        &self.reg.grants
    }

    /// The browser client's links and sessions.
    pub fn web_auth(&self) -> Arc<crate::web::auth::WebAuth> {
        self.reg.web.clone()
    }

    /// All known devices (registered now, or with a journal from before).
    pub fn devices(&self) -> Vec<DeviceInfo> {
        lock(&self.reg.devices)
            .values()
            .map(|d| {
                let (state, audio) = {
                    let s = lock(&d.state);
                    (s.attachment, s.audio_format)
                };
                DeviceInfo {
                    key: d.key.clone(),
                    kind: d.kind,
                    state,
                    audio,
                    monitor: d.journal.as_ref().is_some_and(|j| lock(j).is_monitor()),
                }
            })
            .collect()
    }

    /// A number that changes whenever a device appears or changes state.
    pub fn devices_generation(&self) -> u64 {
        self.reg.changed.generation()
    }

    /// Waits until [`Handle::devices_generation`] differs from `seen`.
    pub async fn devices_changed(&self, seen: u64) {
        self.reg.changed.changed(seen).await
    }

    /// Stats of every device.
    pub fn stats(&self) -> Vec<DeviceStats> {
        let devices: Vec<_> = lock(&self.reg.devices).values().cloned().collect();
        devices.iter().map(|d| d.stats()).collect()
    }

    /// Stats of one device.
    pub fn device_stats(&self, key: &DeviceKey) -> Result<DeviceStats, Error> {
        Ok(self.reg.get(key)?.stats())
    }

    /// Reads a console's journal from `start` on, at the subscriber's own pace.
    pub fn subscribe(&self, key: &DeviceKey, start: StartAt) -> Result<ConsoleSubscription, Error> {
        let d = self.reg.get(key)?;
        if d.kind != DeviceKind::Console {
            return Err(Error::WrongKind(key.to_string(), "console"));
        }
        Ok(ConsoleSubscription::new(d, self.reg.closed.clone(), start))
    }

    /// Listens to an audio device live, with a queue of `queue_periods` (0: the default).
    pub fn subscribe_audio(
        &self,
        key: &DeviceKey,
        queue_periods: usize,
    ) -> Result<AudioSubscription, Error> {
        let d = self.reg.get(key)?;
        if d.kind != DeviceKind::Audio {
            return Err(Error::WrongKind(key.to_string(), "audio"));
        }
        let cap = if queue_periods == 0 {
            self.reg.cfg.audio_queue
        } else {
            queue_periods
        };
        Ok(AudioSubscription::new(d, self.reg.closed.clone(), cap))
    }

    /// Listens to an audio device as Opus frames from its one shared encoder, which starts
    /// with its first Opus subscriber. Fails with [`Error::NoOpus`] when Opus cannot carry
    /// the device's audio (the caller falls back to PCM).
    pub fn subscribe_opus(
        &self,
        key: &DeviceKey,
        queue_frames: usize,
    ) -> Result<AudioSubscription, Error> {
        let d = self.reg.get(key)?;
        if d.kind != DeviceKind::Audio {
            return Err(Error::WrongKind(key.to_string(), "audio"));
        }
        let cap = if queue_frames == 0 {
            self.reg.cfg.audio_queue
        } else {
            queue_frames
        };
        AudioSubscription::new_opus(d, self.reg.closed.clone(), cap, &self.reg.cfg.opus)
    }

    /// The Opus parameters a subscriber of `key` would get now, `None` when Opus cannot
    /// carry its audio.
    pub fn opus_params(&self, key: &DeviceKey) -> Option<protocol::codec::OpusParams> {
        let d = self.reg.get(key).ok()?;
        let format = lock(&d.state).audio_format?;
        self.reg.cfg.opus.params_for(&format)
    }

    fn console(&self, key: &DeviceKey) -> Result<Arc<Device>, Error> {
        let d = self.reg.get(key)?;
        if d.kind != DeviceKind::Console {
            return Err(Error::WrongKind(key.to_string(), "console"));
        }
        Ok(d)
    }

    /// How many times the device has registered (a new QEMU process, or the same one
    /// again after ringcastd restarted): a writer's session belongs to one registration.
    pub fn registrations(&self, key: &DeviceKey) -> Result<u64, Error> {
        Ok(self.reg.get(key)?.counters.registrations.load(Relaxed))
    }

    /// Writes console input into the device's input ring. Returns how many bytes were
    /// taken: fewer than `bytes.len()` (maybe 0) when the ring is full; then wait with
    /// [`Handle::input_ready`] and write the rest.
    pub fn write_input(&self, key: &DeviceKey, bytes: &[u8]) -> Result<usize, Error> {
        let d = self.console(key)?;
        let mut input = lock(&d.input);
        let Some(side) = input.as_mut() else {
            return Err(Error::NotAttached(key.to_string()));
        };
        let w = side
            .producer
            .write(bytes)
            .map_err(|p| Error::Poisoned(key.to_string(), p))?;
        if w.wake_consumer {
            if let Some(bell) = &side.data_bell {
                bell.ring();
            }
        }
        d.counters.input_bytes.fetch_add(w.bytes as u64, Relaxed);
        Ok(w.bytes)
    }

    /// Checks for input space, arming the "space" doorbell when there is none.
    fn input_space(d: &Device, key: &DeviceKey) -> Result<bool, Error> {
        let mut input = lock(&d.input);
        let Some(side) = input.as_mut() else {
            return Err(Error::NotAttached(key.to_string()));
        };
        side.producer
            .space_or_arm(1, || {})
            .map_err(|p| Error::Poisoned(key.to_string(), p))
    }

    /// Waits until the input ring has room for at least one byte.
    pub async fn input_ready(&self, key: &DeviceKey) -> Result<(), Error> {
        let d = self.console(key)?;
        loop {
            let seen = d.input_signal.generation();
            if Self::input_space(&d, key)? {
                return Ok(());
            }
            if self.reg.closed.load(Relaxed) {
                return Err(Error::Closed);
            }
            d.input_signal.changed(seen).await;
        }
    }

    /// Blocking form of [`Handle::input_ready`]: false when `timeout` passed first.
    pub fn wait_input_ready(&self, key: &DeviceKey, timeout: Duration) -> Result<bool, Error> {
        let d = self.console(key)?;
        let deadline = Instant::now() + timeout;
        loop {
            let seen = d.input_signal.generation();
            if Self::input_space(&d, key)? {
                return Ok(true);
            }
            if self.reg.closed.load(Relaxed) {
                return Err(Error::Closed);
            }
            if !d.input_signal.wait_blocking(seen, deadline) {
                return Ok(false);
            }
        }
    }
}

/// Raises the open-file soft limit to the hard limit (each device holds up to 7 fds).
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}
