//! One opened device (a `-chardev plugin` or an `-audiodev plugin`), its link to the
//! daemon, and the main-loop callbacks QEMU calls back into.
//!
//! Everything here runs on QEMU's main loop or a vCPU thread with the big lock held, so
//! there is no concurrency, only re-entrancy: handing input to the guest can make the
//! frontend call `accept_input` while we are still pumping. The state therefore sits in a
//! `RefCell`, and a re-entrant call that finds it busy leaves a note instead of blocking.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};

use shm_ring::handover::{AudioFormat, DeviceDescription, DeviceKind};

use crate::abi;
use crate::audio::{AudioStats, InputVoice, Voice};
use crate::console::{Console, Frontend, RingPoisoned};
use crate::host::{Host, Level, Timer, Watch};
use crate::link::{self, LinkEvent, LinkState, RETRY_MAX_MS, RETRY_MIN_MS};
use crate::opts::Options;

/// Who the device is, as announced to the daemon.
pub(crate) struct Identity {
    pub vm_name: String,
    pub vm_uuid: String,
    pub device: String,
}

impl Identity {
    /// "vm/device" as clients see it: the device part is `name=` when given.
    fn label(&self, name: Option<&str>) -> String {
        let vm = if !self.vm_name.is_empty() {
            &self.vm_name
        } else if !self.vm_uuid.is_empty() {
            &self.vm_uuid
        } else {
            "vm"
        };
        format!("{vm}/{}", name.unwrap_or(&self.device))
    }
}

enum Device {
    Console(Option<Console>),
    Audio {
        voice: Option<Voice>,
        enabled: bool,
        /// The capture voice QEMU opened, if any: it gets silence.
        input: Option<InputVoice>,
        stats: AudioStats,
    },
}

struct Inner {
    id: Identity,
    label: String,
    opts: Options,
    link: LinkState,
    retry: Option<Timer>,
    backoff_ms: u64,
    /// The last "cannot reach the daemon" reason logged, so a retry loop logs once.
    last_complaint: Option<String>,
    input_watch: Option<Watch>,
    device: Device,
}

pub(crate) struct Instance {
    host: Host,
    inner: RefCell<Inner>,
    /// `accept_input` arrived while the state was busy: pump again before returning.
    input_pending: Cell<bool>,
}

const POLICY_CONSOLE: &str =
    "console output is kept in a flight recorder (newest bytes, drops counted) until it is back";
const POLICY_AUDIO: &str = "audio periods are dropped and counted until it is back";

impl Instance {
    fn boxed(host: Host, id: Identity, opts: Options, device: Device) -> Box<Instance> {
        let label = id.label(opts.name.as_deref());
        Box::new(Instance {
            host,
            inner: RefCell::new(Inner {
                id,
                label,
                opts,
                link: LinkState::Idle,
                retry: None,
                backoff_ms: RETRY_MIN_MS,
                last_complaint: None,
                input_watch: None,
                device,
            }),
            input_pending: Cell::new(false),
        })
    }

    fn opaque(&self) -> *mut c_void {
        self as *const Instance as *mut c_void
    }

    /// Opens a console and starts connecting to the daemon.
    pub(crate) fn open_console(
        host: Host,
        id: Identity,
        opts: Options,
        frontend: Frontend,
    ) -> Result<Box<Instance>, String> {
        let name = opts.name.clone().unwrap_or_else(|| id.device.clone());
        let console = Console::new(&name, opts.ring_bytes, opts.input_ring_bytes, frontend)
            .map_err(|e| format!("cannot create the rings: {e}"))?;
        let inst = Instance::boxed(host, id, opts, Device::Console(Some(console)));
        inst.start()?;
        Ok(inst)
    }

    /// Opens an audio device; it registers once QEMU opens an output voice.
    pub(crate) fn open_audio(
        host: Host,
        id: Identity,
        opts: Options,
    ) -> Result<Box<Instance>, String> {
        let inst = Instance::boxed(
            host,
            id,
            opts,
            Device::Audio {
                voice: None,
                enabled: false,
                input: None,
                stats: AudioStats::default(),
            },
        );
        inst.start()?;
        Ok(inst)
    }

    /// Creates the retry timer and the input watch (they need the final address), then
    /// makes the first connection attempt.
    fn start(&self) -> Result<(), String> {
        {
            let mut inner = self.inner.borrow_mut();
            inner.retry = Some(
                self.host
                    .timer(on_retry_timer, self.opaque())
                    .ok_or("QEMU refused a timer")?,
            );
            self.watch_input(&mut inner)?;
        }
        self.try_connect();
        Ok(())
    }

    fn watch_input(&self, inner: &mut Inner) -> Result<(), String> {
        inner.input_watch = None;
        if let Device::Console(Some(c)) = &inner.device {
            inner.input_watch = Some(
                self.host
                    .watch(c.input_fd(), abi::QBP_EVENT_IN, on_input_fd, self.opaque())
                    .ok_or("QEMU refused an fd watch")?,
            );
        }
        Ok(())
    }

    fn attached(inner: &Inner) -> bool {
        matches!(inner.link, LinkState::Attached { .. })
    }

    fn schedule_retry(inner: &mut Inner, delay_ms: u64) {
        if let Some(t) = &inner.retry {
            t.arm_in(delay_ms);
        }
    }

    /// One connection attempt; never blocks.
    fn try_connect(&self) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        if !matches!(inner.link, LinkState::Idle) {
            return;
        }
        let desc = DeviceDescription {
            kind: DeviceKind::Console,
            pid: std::process::id(),
            session: 0,
            vm_name: inner.id.vm_name.clone(),
            vm_uuid: inner.id.vm_uuid.clone(),
            device_id: inner
                .opts
                .name
                .clone()
                .unwrap_or_else(|| inner.id.device.clone()),
            audio: None,
        };
        let path = inner.opts.socket.clone();
        let result = match &inner.device {
            Device::Console(Some(c)) => c
                .describe(desc)
                .encode()
                .map_err(|e| e.to_string())
                .and_then(|m| link::connect_and_send(&path, &m, &c.handover_fds())),
            Device::Console(None) => return,
            Device::Audio { voice: Some(v), .. } => v
                .describe(desc)
                .encode()
                .map_err(|e| e.to_string())
                .and_then(|m| link::connect_and_send(&path, &m, &v.handover_fds())),
            // No voice yet: nothing to register.
            Device::Audio { voice: None, .. } => return,
        };
        match result {
            Ok(sock) => {
                let fd = link::raw_fd(&sock);
                match self
                    .host
                    .watch(fd, abi::QBP_EVENT_IN, on_link_fd, self.opaque())
                {
                    Some(w) => inner.link = LinkState::AwaitingAck { sock, _watch: w },
                    None => {
                        self.host.log(Level::Error, "QEMU refused an fd watch");
                        let d = inner.backoff_ms;
                        Self::schedule_retry(&mut inner, d);
                    }
                }
            }
            Err(why) => {
                if inner.last_complaint.as_deref() != Some(why.as_str()) {
                    let policy = match inner.device {
                        Device::Console(_) => POLICY_CONSOLE,
                        Device::Audio { .. } => POLICY_AUDIO,
                    };
                    self.host
                        .log(Level::Info, &format!("{}: {why}; {policy}", inner.label));
                    inner.last_complaint = Some(why);
                }
                let d = inner.backoff_ms;
                inner.backoff_ms = (d * 2).min(RETRY_MAX_MS);
                Self::schedule_retry(&mut inner, d);
            }
        }
    }

    fn on_link_readable(&self) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        match link::on_readable(&inner.link) {
            LinkEvent::Nothing => {}
            LinkEvent::Attached => {
                if let LinkState::AwaitingAck { sock, _watch } =
                    std::mem::replace(&mut inner.link, LinkState::Idle)
                {
                    inner.link = LinkState::Attached { sock, _watch };
                }
                inner.backoff_ms = RETRY_MIN_MS;
                inner.last_complaint = None;
                let note = match &inner.device {
                    Device::Console(Some(c)) if c.stats.flight_dropped > 0 => format!(
                        " ({} older console bytes were dropped while it was away)",
                        c.stats.flight_dropped
                    ),
                    Device::Audio { stats, .. } if stats.dropped_unattached > 0 => format!(
                        " ({} audio periods were dropped while it was away)",
                        stats.dropped_unattached
                    ),
                    _ => String::new(),
                };
                self.host.log(
                    Level::Info,
                    &format!("{}: streaming to the daemon{note}", inner.label),
                );
            }
            LinkEvent::Refused(why) => {
                self.host.log(
                    Level::Warning,
                    &format!(
                        "{}: the daemon refused the device: {why}; retrying in {} s",
                        inner.label,
                        RETRY_MAX_MS / 1000
                    ),
                );
                inner.link = LinkState::Idle;
                Self::schedule_retry(&mut inner, RETRY_MAX_MS);
            }
            LinkEvent::Lost(why) => {
                let was_attached = Self::attached(&inner);
                inner.link = LinkState::Idle;
                let policy = match &inner.device {
                    Device::Console(c) => {
                        if let Some(c) = c {
                            c.kick_writer();
                        }
                        POLICY_CONSOLE
                    }
                    Device::Audio { .. } => POLICY_AUDIO,
                };
                if was_attached {
                    self.host.log(
                        Level::Warning,
                        &format!("{}: lost the daemon ({why}); {policy}", inner.label),
                    );
                }
                inner.backoff_ms = RETRY_MIN_MS;
                Self::schedule_retry(&mut inner, RETRY_MIN_MS);
            }
        }
    }

    /// The daemon broke a ring: drop the connection and start over with fresh rings.
    fn on_poisoned(&self, inner: &mut Inner, p: RingPoisoned) {
        self.host.log(
            Level::Error,
            &format!(
                "{}: the daemon corrupted the shared ring ({}); disconnecting and starting \
                 over with new rings",
                inner.label, p.0
            ),
        );
        inner.link = LinkState::Idle;
        let name = inner
            .opts
            .name
            .clone()
            .unwrap_or_else(|| inner.id.device.clone());
        match &mut inner.device {
            Device::Console(slot) => {
                if let Some(c) = slot.take() {
                    match c.renew(&name) {
                        Ok(c) => *slot = Some(c),
                        Err(e) => self.host.log(
                            Level::Error,
                            &format!("cannot create new rings: {e}; console output is discarded"),
                        ),
                    }
                }
            }
            Device::Audio { voice, .. } => {
                if let Some(v) = voice.take() {
                    match Voice::new(&name, v.format) {
                        Ok(v) => *voice = Some(v),
                        Err(e) => self.host.log(
                            Level::Error,
                            &format!("cannot create a new ring: {e}; audio is discarded"),
                        ),
                    }
                }
            }
        }
        if let Err(e) = self.watch_input(inner) {
            self.host.log(Level::Error, &e);
        }
        Self::schedule_retry(inner, RETRY_MIN_MS);
    }

    // ---- chardev operations -----------------------------------------------------------

    pub(crate) fn chr_write(&self, buf: &[u8]) -> c_int {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return 0;
        };
        let attached = Self::attached(&inner);
        let Device::Console(Some(c)) = &mut inner.device else {
            // No rings (creation failed after a poisoning): accept and discard, loudly
            // logged when it happened; never stall the guest.
            return buf.len().min(c_int::MAX as usize) as c_int;
        };
        let buf = &buf[..buf.len().min(c_int::MAX as usize)];
        match c.write(buf, attached) {
            Ok(n) => n as c_int,
            Err(p) => {
                self.on_poisoned(&mut inner, p);
                0
            }
        }
    }

    pub(crate) fn chr_write_ready(&self) -> bool {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            // Only reachable if QEMU asked from inside one of our own callbacks, which its
            // watch (prepare/check on the main loop) never does. "Not ready" is the safe
            // answer: the watch stays armed and asks again on the next loop iteration.
            return false;
        };
        let attached = Self::attached(&inner);
        let Device::Console(Some(c)) = &mut inner.device else {
            return true;
        };
        match c.write_ready(attached) {
            Ok(ready) => ready,
            Err(p) => {
                self.on_poisoned(&mut inner, p);
                true
            }
        }
    }

    pub(crate) fn chr_write_wait_fd(&self) -> c_int {
        match self.inner.try_borrow() {
            Ok(inner) => match &inner.device {
                Device::Console(Some(c)) => c.write_wait_fd(),
                _ => -1,
            },
            Err(_) => -1,
        }
    }

    /// Input arrived (doorbell) or the frontend can take more (accept_input).
    pub(crate) fn pump_input(&self) {
        self.input_pending.set(true);
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            // We are inside our own pump (the frontend called back): it will loop.
            return;
        };
        while self.input_pending.replace(false) {
            let Device::Console(Some(c)) = &mut inner.device else {
                return;
            };
            if let Err(p) = c.pump_input() {
                self.on_poisoned(&mut inner, p);
                return;
            }
        }
    }

    // ---- audio operations -------------------------------------------------------------

    pub(crate) fn audio_out_open(&self, format: AudioFormat) -> Result<(), String> {
        {
            let mut inner = self.inner.try_borrow_mut().map_err(|_| "busy")?;
            let name = inner
                .opts
                .name
                .clone()
                .unwrap_or_else(|| inner.id.device.clone());
            let Device::Audio { voice, .. } = &mut inner.device else {
                return Err("not an audio device".into());
            };
            *voice = Some(Voice::new(&name, format)?);
            // A new voice is a new session: re-register with the new ring.
            inner.link = LinkState::Idle;
            inner.backoff_ms = RETRY_MIN_MS;
        }
        self.try_connect();
        Ok(())
    }

    pub(crate) fn audio_out_close(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if let Device::Audio { voice, .. } = &mut inner.device {
                *voice = None;
            }
            inner.link = LinkState::Idle;
        }
    }

    pub(crate) fn audio_out_enable(&self, on: bool) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if let Device::Audio { enabled, .. } = &mut inner.device {
                *enabled = on;
            }
        }
    }

    pub(crate) fn audio_out_write(&self, buf: &[u8]) -> usize {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return buf.len();
        };
        let attached = Self::attached(&inner);
        let Device::Audio { voice, stats, .. } = &mut inner.device else {
            return buf.len();
        };
        match voice {
            Some(v) if attached => {
                if let Err(p) = v.write(buf, monotonic_ns(), stats) {
                    self.on_poisoned(&mut inner, RingPoisoned(p));
                }
            }
            _ => stats.dropped_unattached += 1,
        }
        buf.len()
    }

    pub(crate) fn audio_in_open(&self, format: AudioFormat) -> Result<(), String> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| "busy")?;
        let Device::Audio { input, .. } = &mut inner.device else {
            return Err("not an audio device".into());
        };
        *input = Some(InputVoice::new(format)?);
        Ok(())
    }

    pub(crate) fn audio_in_close(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if let Device::Audio { input, .. } = &mut inner.device {
                *input = None;
            }
        }
    }

    pub(crate) fn audio_in_enable(&self, on: bool) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        let inner = &mut *inner;
        if let Device::Audio {
            input: Some(v),
            stats,
            ..
        } = &mut inner.device
        {
            v.enabled = on;
            // Said once per device, when the guest first records: why its input is silent.
            if on && stats.silent_input_frames == 0 && !v.announced {
                v.announced = true;
                self.host.log(
                    Level::Info,
                    &format!(
                        "{}: the guest opened audio input; ringcast has no audio input and \
                         delivers silence (counted)",
                        inner.label
                    ),
                );
            }
        }
    }

    /// Fills `buf` with silence (whole frames); the bytes filled. 0 without an input voice
    /// (QEMU then pads with silence itself).
    pub(crate) fn audio_in_read(&self, buf: &mut [u8]) -> usize {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return 0;
        };
        match &mut inner.device {
            Device::Audio {
                input: Some(v),
                stats,
                ..
            } => v.read(buf, stats),
            _ => 0,
        }
    }

    /// A last word in QEMU's log about what was lost, when the device goes away.
    pub(crate) fn log_summary(&self) {
        let Ok(inner) = self.inner.try_borrow() else {
            return;
        };
        if let Device::Audio { stats, .. } = &inner.device {
            if stats.silent_input_frames > 0 {
                self.host.log(
                    Level::Info,
                    &format!(
                        "{}: {} frames of silence delivered to the guest's audio input",
                        inner.label, stats.silent_input_frames
                    ),
                );
            }
        }
        let msg = match &inner.device {
            Device::Console(Some(c)) if c.stats.flight_dropped > 0 => format!(
                "{}: {} console bytes written, {} dropped by the flight recorder",
                inner.label, c.stats.written, c.stats.flight_dropped
            ),
            Device::Audio { stats, .. } if stats.dropped_full + stats.dropped_unattached > 0 => {
                format!(
                    "{}: {} audio periods sent, {} dropped (ring full), {} dropped (no daemon)",
                    inner.label, stats.periods, stats.dropped_full, stats.dropped_unattached
                )
            }
            _ => return,
        };
        self.host.log(Level::Info, &msg);
    }
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

// ---- callbacks from QEMU's main loop ----------------------------------------------------

/// # Safety
/// `opaque` is the address of a live `Instance`: watches and timers are removed when the
/// instance drops, so QEMU never calls these for a freed one.
unsafe fn instance<'a>(opaque: *mut c_void) -> &'a Instance {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &*(opaque as *const Instance) }
}

unsafe extern "C" fn on_retry_timer(opaque: *mut c_void) {
    crate::guard((), || {
        // SAFETY: registered with this instance's address in `start`.
        unsafe { instance(opaque) }.try_connect()
    })
}

unsafe extern "C" fn on_link_fd(opaque: *mut c_void, _fd: c_int, _revents: u32) {
    crate::guard((), || {
        // SAFETY: registered with this instance's address in `try_connect`.
        unsafe { instance(opaque) }.on_link_readable()
    })
}

unsafe extern "C" fn on_input_fd(opaque: *mut c_void, _fd: c_int, _revents: u32) {
    crate::guard((), || {
        // SAFETY: registered with this instance's address in `watch_input`.
        unsafe { instance(opaque) }.pump_input()
    })
}
