//! ringcastd: takes the shared-memory rings QEMU's ringcast backend registers, keeps every
//! console byte in a per-device journal (RAM window plus disk spool) and hands journals and
//! live audio to subscribers.
//!
//! # Data flow
//!
//! ```text
//! QEMU (backend .so) ── registration socket (SOCK_SEQPACKET, description + memfds + eventfds)
//!        │                                  │
//!        │ rings + doorbells                ▼
//!        └──────────────► ingest thread: one io_uring, multishot polls on every data
//!                          doorbell and socket; peek ring → spool write (io_uring) →
//!                          release ring slots → journal RAM window → wake subscribers
//!                                           │
//!            ConsoleSubscription (own cursor: RAM, else disk, else Gap)
//!            AudioSubscription   (own bounded queue, oldest dropped and counted)
//!            Handle::write_input (input ring, backpressure via the space doorbell)
//! ```
//!
//! Bytes are in the spool file (page cache) before their ring slots are released, so a
//! killed ringcastd loses nothing the ring still holds: after a restart the device
//! re-registers with the same session, and bytes the spool already has are skipped by
//! comparing journal offsets (`base + ring position` against the journal's end).
//!
//! # Files
//!
//! `<state>/<vm>/<device>/`: `<offset>.log` segments named by the journal offset of their
//! first byte, `current.log` (symlink to the segment being written: `tail -F` it), and
//! `device.meta` (names, ring session, where the session starts in the journal). A VM that
//! restarts (new session) appends after a marker line
//! `--- ringcast: <vm>/<device> restarted at <UTC time> ---`, which counts as journal bytes.
//!
//! # Loss accounting
//!
//! Nothing is dropped silently. Console bytes the backend discarded as a flight recorder
//! while no ringcastd was attached become a gap in the journal (a hole between segments;
//! subscribers get [`Gap`] with [`GapReason::Lost`]) and are counted in
//! [`DeviceStats::dropped_flight_recorder`]. A subscriber behind the retention gets a
//! [`GapReason::Retention`] gap (counted in `subscriber_gap_bytes`). Audio periods the
//! backend dropped show as sequence jumps (`dropped_audio_overflow`); periods dropped from
//! a slow subscriber's queue are reported to it (`AudioPeriod::skipped_before`) and counted
//! in `subscriber_dropped_periods`.
//!
//! The QUIC server ([`net::NetServer`]) serves the same [`Handle`] to ringcast clients.
//!
//! What it deliberately does not do:
//! spool audio, or poll: an idle ringcastd sleeps in `io_uring_enter`.
//!
//! ```no_run
//! use sidecar::{Config, Daemon, DeviceKey, Item, StartAt};
//! use std::time::Duration;
//!
//! let daemon = Daemon::start(Config::default()).unwrap();
//! let handle = daemon.handle();
//! let mut sub = handle
//!     .subscribe(&DeviceKey::new("vm1", "serial0"), StartAt::TailBytes(4096))
//!     .unwrap();
//! while let Ok(Some(item)) = sub.next_blocking(Duration::from_secs(1)) {
//!     if let Item::Chunk(c) = item {
//!         print!("{}", String::from_utf8_lossy(&c.bytes));
//!     }
//! }
//! ```

mod daemon;
mod device;
mod error;
pub mod grants;
mod ingest;
mod journal;
mod names;
pub mod net;
mod private;
mod signal;
mod subscribe;
pub mod transcode;
mod uring;
pub mod web;

pub use daemon::{
    control_socket_for, default_state_dir, query_stats, raise_fd_limit, Config, Daemon, DeviceInfo,
    Handle,
};
pub use device::{render_table, AudioPeriod, DeviceKind, DeviceState, DeviceStats};
pub use error::Error;
pub use journal::{GapReason, JournalConfig};
pub use names::DeviceKey;
pub use subscribe::{AudioSubscription, Chunk, ConsoleSubscription, Gap, Item, StartAt};
