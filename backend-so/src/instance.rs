//! One opened device (a `-chardev plugin` or an `-audiodev plugin`), its link to the
//! daemon, and the main-loop callbacks QEMU calls back into.
//!
//! Everything here runs on QEMU's main loop or a vCPU thread with the big lock held, so
//! there is no concurrency, only re-entrancy: handing input to the guest can make the
//! frontend call `accept_input` while we are still pumping. The state therefore sits in a
//! `RefCell`, and a re-entrant call that finds it busy leaves a note instead of blocking.
//!
//! What runs where: the guest's writes (`chr_write`, `audio_out_write`, on a vCPU thread)
//! only copy into a ring. Everything slow (connecting, creating new rings after the daemon
//! broke one) happens on the retry timer, on the main loop.
//!
//! A panic inside the plugin is caught at the entry point and latches the instance as
//! broken (`guarded`): one line in QEMU's log, then the device accepts and counts what
//! the guest writes without touching its rings again, so a bug cannot become a busy loop.

mod audio_ops;
mod callbacks;
mod chardev;
mod connect;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi;
use crate::audio::{AudioStats, Voice};
use crate::audio_input::InputVoice;
use crate::console::{Console, Frontend};
use crate::host::{Host, Level, Timer, Watch};
use crate::link::LinkState;
use crate::opts::Options;
use crate::reconnect::Reconnect;

/// Who the device is, as announced to the daemon.
pub(crate) struct Identity {
    pub vm_name: String,
    pub vm_uuid: String,
    pub device: String,
}

impl Identity {
    /// "vm/device" as clients see it: the device part is `name=` when given. Escaped
    /// (`protocol::names::escape`): it goes into QEMU's log, and a name may hold control
    /// characters that ringcastd will refuse.
    fn label(&self, name: Option<&str>) -> String {
        let vm = if !self.vm_name.is_empty() {
            &self.vm_name
        } else if !self.vm_uuid.is_empty() {
            &self.vm_uuid
        } else {
            "vm"
        };
        let device = name.unwrap_or(&self.device);
        format!(
            "{}/{}",
            protocol::names::escape(vm),
            protocol::names::escape(device)
        )
    }
}

enum Device {
    Console(Console),
    Audio {
        voice: Option<Voice>,
        enabled: bool,
        /// The capture voice QEMU opened, if any: it gets what clients send (`ringcast
        /// mic`) through the daemon, or silence.
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
    reconnect: Reconnect,
    /// The daemon broke a ring: new rings are made on the retry timer, not on the (vCPU)
    /// thread that noticed. Until then console output waits and audio is counted dropped.
    renew_pending: bool,
    /// The last "cannot reach the daemon" reason logged, so a retry loop logs once.
    last_complaint: Option<String>,
    input_watch: Option<Watch>,
    device: Device,
}

impl Inner {
    /// A new voice is a new session: re-register with the new rings, from a fresh start.
    fn new_session(&mut self) {
        self.link = LinkState::Idle;
        self.renew_pending = false;
        self.reconnect = Reconnect::new(self.opts.grace_ms);
    }

    fn device_name(&self) -> String {
        self.opts
            .name
            .clone()
            .unwrap_or_else(|| self.id.device.clone())
    }
}

pub(crate) struct Instance {
    host: Host,
    inner: RefCell<Inner>,
    /// `accept_input` arrived while the state was busy: pump again before returning.
    input_pending: Cell<bool>,
    /// A panic was caught: the instance does nothing but count from now on.
    broken: Cell<bool>,
    /// Bytes (console) or periods (audio) the guest handed over after the instance broke.
    broken_discarded: Cell<u64>,
}

const POLICY_CONSOLE: &str =
    "console output is kept in a flight recorder (newest bytes, drops counted) until it is back";
const POLICY_AUDIO: &str = "audio periods are dropped and counted until it is back";

impl Instance {
    fn boxed(host: Host, id: Identity, opts: Options, device: Device) -> Box<Instance> {
        let label = id.label(opts.name.as_deref());
        let reconnect = Reconnect::new(opts.grace_ms);
        Box::new(Instance {
            host,
            inner: RefCell::new(Inner {
                id,
                label,
                opts,
                link: LinkState::Idle,
                retry: None,
                reconnect,
                renew_pending: false,
                last_complaint: None,
                input_watch: None,
                device,
            }),
            input_pending: Cell::new(false),
            broken: Cell::new(false),
            broken_discarded: Cell::new(0),
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
        let inst = Instance::boxed(host, id, opts, Device::Console(console));
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
                    .timer(callbacks::on_retry_timer, self.opaque())
                    .ok_or("QEMU refused a timer")?,
            );
            self.watch_input(&mut inner)?;
        }
        self.try_connect();
        Ok(())
    }

    fn watch_input(&self, inner: &mut Inner) -> Result<(), String> {
        inner.input_watch = None;
        if let Device::Console(c) = &inner.device {
            inner.input_watch = Some(
                self.host
                    .watch(
                        c.input_fd(),
                        abi::QBP_EVENT_IN,
                        callbacks::on_input_fd,
                        self.opaque(),
                    )
                    .ok_or("QEMU refused an fd watch")?,
            );
        }
        Ok(())
    }

    fn attached(inner: &Inner) -> bool {
        matches!(inner.link, LinkState::Attached { .. })
    }

    /// Runs `f` unless the instance is broken; a panic in `f` breaks it. Either way, a
    /// broken instance answers with `on_broken` (which counts what the guest handed over).
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> T, on_broken: impl FnOnce() -> T) -> T {
        if self.broken.get() {
            return on_broken();
        }
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(e) => {
                self.latch_broken(&crate::ffi::panic_message(&*e));
                on_broken()
            }
        }
    }

    /// Marks the instance broken after a caught panic: one log line, no more watches (an
    /// unserved doorbell must not wake the main loop forever), no more daemon link.
    fn latch_broken(&self, what: &str) {
        self.broken.set(true);
        let label = match self.inner.try_borrow_mut() {
            Ok(mut inner) => {
                inner.input_watch = None;
                inner.link = LinkState::Idle;
                inner.label.clone()
            }
            Err(_) => "device".into(),
        };
        self.host.log(
            Level::Error,
            &format!(
                "{label}: internal error in the ringcast backend ({what}); the device is \
                 disabled: guest output is discarded and counted until QEMU closes it"
            ),
        );
    }

    /// What a broken instance does with `n` units of guest output: count them.
    pub(crate) fn discard(&self, n: u64) {
        self.broken_discarded
            .set(self.broken_discarded.get().saturating_add(n));
    }

    /// A last word in QEMU's log about what was lost, when the device goes away.
    pub(crate) fn log_summary(&self) {
        let Ok(inner) = self.inner.try_borrow() else {
            return;
        };
        if self.broken.get() {
            let unit = match inner.device {
                Device::Console(_) => "console bytes",
                Device::Audio { .. } => "audio periods",
            };
            self.host.log(
                Level::Info,
                &format!(
                    "{}: {} {unit} discarded after the internal error",
                    inner.label,
                    self.broken_discarded.get()
                ),
            );
        }
        if let Device::Audio { stats, .. } = &inner.device {
            if stats.silent_input_frames + stats.input_frames > 0 {
                self.host.log(
                    Level::Info,
                    &format!(
                        "{}: {} frames of client audio and {} frames of silence delivered to \
                         the guest's audio input",
                        inner.label, stats.input_frames, stats.silent_input_frames
                    ),
                );
            }
        }
        let msg = match &inner.device {
            Device::Console(c) if c.stats.flight_dropped + c.stats.poison_lost > 0 => format!(
                "{}: {} console bytes written, {} dropped by the flight recorder, {} lost with \
                 rings the daemon broke",
                inner.label, c.stats.written, c.stats.flight_dropped, c.stats.poison_lost
            ),
            Device::Audio { stats, .. }
                if stats.dropped_full + stats.dropped_unattached + stats.dropped_poisoned > 0 =>
            {
                format!(
                    "{}: {} audio records sent, {} dropped (ring full), {} dropped (no daemon), \
                     {} lost with rings the daemon broke",
                    inner.label,
                    stats.periods,
                    stats.dropped_full,
                    stats.dropped_unattached,
                    stats.dropped_poisoned
                )
            }
            _ => return,
        };
        self.host.log(Level::Info, &msg);
    }
}
