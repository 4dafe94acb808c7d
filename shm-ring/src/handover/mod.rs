//! Handing rings to the consumer process: one `SOCK_SEQPACKET` message with a device
//! description and the ring memfds and doorbell eventfds (SCM_RIGHTS), answered by one
//! acknowledgement message.
//!
//! Message layout (little endian), version 1:
//!
//! ```text
//! "SHMDEV01"  u16 version  u8 kind  u8 nfds  u32 pid  u64 session
//! u32 frequency  u16 channels  u16 sample_format  u8 big_endian  u8[3] zero   (audio; zero for consoles)
//! u16 len + bytes: vm_name, vm_uuid, device_id  (UTF-8, at most 255 bytes each)
//! u32 frequency  u16 channels  u16 sample_format  u8 big_endian  u8[3] zero   (audio with an input voice only)
//! ```
//!
//! File descriptors, in order: console = output ring, its data doorbell, its space
//! doorbell, input ring, its data doorbell, its space doorbell; audio = output ring, its
//! data doorbell, and, when the guest's sound card has an input voice (`nfds` 3), the
//! input byte ring (the guest's capture side: the consumer of the description writes PCM
//! in the input format into it, whole frames; the producer of the description reads it
//! when QEMU asks for input, and needs no doorbell). "Data" doorbells are rung by the
//! ring's producer, "space" doorbells by its consumer. A consumer older than the input
//! ring refuses an audio description with 3 descriptors ("wrong descriptor count").
//!
//! The acknowledgement: `"SHMACK01"  u8 status (0 = accepted)  u16 len + message`.

mod ack;
mod description;
mod socket;

pub use ack::Ack;
pub use description::{AudioFormat, DeviceDescription, DeviceKind};
pub use socket::{recv_with_fds, send_with_fds, Received};

use crate::error::RingError;

const DEVICE_MAGIC: &[u8; 8] = b"SHMDEV01";
const ACK_MAGIC: &[u8; 8] = b"SHMACK01";
const VERSION: u16 = 1;
/// Longest name accepted in a description.
pub const MAX_NAME: usize = 255;
/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 1024;
const MAX_FDS: usize = 6;

/// Where a consumer daemon named `app` listens by default:
/// `$XDG_RUNTIME_DIR/<app>/<app>d.sock`, or `/run/<app>/<app>d.sock` without a runtime dir.
pub fn default_socket_path(app: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => std::path::PathBuf::from("/run"),
    };
    dir.join(app).join(format!("{app}d.sock"))
}

/// Reads a message front to back; every read past its end is "truncated".
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RingError> {
        if self.0.len() < n {
            return Err(RingError::BadMessage("truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, RingError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RingError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RingError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RingError> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(x))
    }
}
