//! Test support for ringcast.
//!
//! * [`harness`]: a stand-in for QEMU that loads `libringcast_backend.so` and drives it
//!   through the plugin C ABI, with a small main loop.
//! * [`consumer`]: a minimal stand-in for ringcastd that accepts devices and reads rings.
//! * [`devices`]: console and audio devices registered with ringcastd directly, rings
//!   and all, without the plugin.
//! * [`kit`]: the test kit: binaries of the running build, a ringcastd process, waiting.
//! * [`load`]: the load scenario (many consoles, many followers, a stalled client).
//! * [`qmp`]: a minimal QMP client for the real-QEMU tests.
//! * [`stream`]: the guest's deterministic byte stream, to check what arrived.
//! * `guest/` (shell, not Rust): the tiny test guest booted under real QEMU.

pub mod consumer;
pub mod devices;
pub mod harness;
pub mod kit;
pub mod load;
pub mod lossy;
pub mod qemu;
pub mod qmp;
pub mod stream;
pub mod tone;
