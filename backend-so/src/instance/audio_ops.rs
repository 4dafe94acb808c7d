//! The audio operations QEMU calls: output voices into the record ring, input voices out
//! of the input ring (counted silence when it is empty).

use shm_ring::handover::AudioFormat;

use super::{Device, Instance};
use crate::audio::Voice;
use crate::audio_input::InputVoice;
use crate::console::RingPoisoned;
use crate::host::Level;
use crate::link::LinkState;

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

impl Instance {
    pub(crate) fn audio_out_open(&self, format: AudioFormat) -> Result<(), String> {
        {
            let mut inner = self.inner.try_borrow_mut().map_err(|_| "busy")?;
            let name = inner.device_name();
            let Device::Audio { voice, .. } = &mut inner.device else {
                return Err("not an audio device".into());
            };
            *voice = Some(Voice::new(&name, format)?);
            inner.new_session();
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
        let attached = Self::attached(&inner) && !inner.renew_pending;
        let Device::Audio { voice, stats, .. } = &mut inner.device else {
            return buf.len();
        };
        match voice {
            Some(v) if attached => {
                if let Err(p) = v.write(buf, monotonic_ns(), stats) {
                    self.poisoned(&mut inner, RingPoisoned(p));
                }
            }
            _ => stats.dropped_unattached += 1,
        }
        buf.len()
    }

    pub(crate) fn audio_in_open(&self, format: AudioFormat) -> Result<(), String> {
        {
            let mut inner = self.inner.try_borrow_mut().map_err(|_| "busy")?;
            let name = inner.device_name();
            let Device::Audio { input, voice, .. } = &mut inner.device else {
                return Err("not an audio device".into());
            };
            // One capture ring per device: another voice in the same format shares it (and
            // the session carrying it goes on); one in another format is refused (QEMU
            // then gives that voice silence).
            if let Some(v) = input {
                if v.format != format {
                    return Err(format!(
                        "{name} records in one format at a time ({} Hz, {} channels already \
                         open); this voice asks for {} Hz, {} channels",
                        v.format.frequency, v.format.channels, format.frequency, format.channels
                    ));
                }
                v.opens += 1;
                return Ok(());
            }
            *input = Some(InputVoice::new(&name, format)?);
            // The daemon learns of the input ring with a registration: a registered output
            // starts a new session (new rings) that carries it.
            if let Some(v) = voice {
                *voice = Some(Voice::new(&name, v.format)?);
                inner.new_session();
            }
        }
        self.try_connect();
        Ok(())
    }

    pub(crate) fn audio_in_close(&self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if let Device::Audio { input, .. } = &mut inner.device {
                if let Some(v) = input {
                    v.opens = v.opens.saturating_sub(1);
                    if v.opens == 0 {
                        *input = None;
                    }
                }
            }
        }
    }

    pub(crate) fn audio_in_enable(&self, on: bool) {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return;
        };
        let inner = &mut *inner;
        let Device::Audio { input: Some(v), .. } = &mut inner.device else {
            return;
        };
        v.enabled = on;
        if !on {
            return;
        }
        let stale = v.discard_stale();
        // Said once per voice, when the guest first records: where its input comes from.
        if !v.announced {
            v.announced = true;
            self.host.log(
                Level::Info,
                &format!(
                    "{}: the guest opened audio input; it records what `ringcast mic` sends \
                     through the daemon, silence when nothing comes (counted)",
                    inner.label
                ),
            );
        }
        if let Err(p) = stale {
            self.poisoned(inner, RingPoisoned(p));
        }
    }

    /// Copies the client audio the input ring holds into `buf` (whole frames); the bytes
    /// copied. QEMU pads the rest with silence. 0 without an input voice, while no daemon
    /// is attached, or on a ring the daemon broke (new rings are then made on the retry
    /// timer).
    pub(crate) fn audio_in_read(&self, buf: &mut [u8]) -> usize {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return 0;
        };
        let attached = Self::attached(&inner) && !inner.renew_pending;
        let inner = &mut *inner;
        let Device::Audio {
            input: Some(v),
            stats,
            ..
        } = &mut inner.device
        else {
            return 0;
        };
        if !attached {
            let frames = buf.len() / v.format.frame_bytes().unwrap_or(1).max(1) as usize;
            stats.silent_input_frames += frames as u64;
            return 0;
        }
        match v.read(buf, stats) {
            Ok(n) => n,
            Err(p) => {
                self.poisoned(inner, RingPoisoned(p));
                0
            }
        }
    }
}
