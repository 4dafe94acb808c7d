//! The character device operations QEMU calls: guest output (on a vCPU thread or the main
//! loop), its readiness, and input to the guest.

use std::ffi::c_int;

use super::{Device, Inner, Instance};

impl Instance {
    /// Whether console output must not be overwritten now: attached, or within the restart
    /// grace. The clock is read only when not attached (the hot path makes no call).
    fn lossless(&self, inner: &Inner) -> bool {
        Self::attached(inner) || inner.reconnect.lossless(false, self.host.now_ns())
    }

    pub(crate) fn chr_write(&self, buf: &[u8]) -> c_int {
        let Ok(mut inner) = self.inner.try_borrow_mut() else {
            return 0;
        };
        if inner.renew_pending {
            // New rings are being made on the main loop: the guest waits for them.
            return 0;
        }
        let lossless = self.lossless(&inner);
        let Device::Console(c) = &mut inner.device else {
            return 0;
        };
        let buf = &buf[..buf.len().min(c_int::MAX as usize)];
        match c.write(buf, lossless) {
            Ok(n) => n as c_int,
            Err(p) => {
                self.poisoned(&mut inner, p);
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
        if inner.renew_pending {
            // The retry timer rings the space doorbell once the new rings exist.
            return false;
        }
        let lossless = self.lossless(&inner);
        let Device::Console(c) = &mut inner.device else {
            return true;
        };
        match c.write_ready(lossless) {
            Ok(ready) => ready,
            Err(p) => {
                self.poisoned(&mut inner, p);
                false
            }
        }
    }

    pub(crate) fn chr_write_wait_fd(&self) -> c_int {
        match self.inner.try_borrow() {
            Ok(inner) => match &inner.device {
                Device::Console(c) => c.write_wait_fd(),
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
        if inner.renew_pending {
            return;
        }
        while self.input_pending.replace(false) {
            let Device::Console(c) = &mut inner.device else {
                return;
            };
            if let Err(p) = c.pump_input() {
                self.poisoned(&mut inner, p);
                return;
            }
        }
    }
}
