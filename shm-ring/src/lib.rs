//! Lock-free single-producer/single-consumer rings in shared memory.
//!
//! A ring lives in a sealed memfd (`RingMemory`) that one process creates and hands to
//! another over a unix socket ([`handover`]). Each side then takes one role:
//!
//! * [`ByteProducer`] / [`ByteConsumer`]: a byte stream (console output, console input),
//!   with backpressure ([`ByteProducer::space_or_arm`]) or flight-recorder overwriting
//!   ([`ByteProducer::write_overwriting`]) at the producer's choice.
//! * [`RecordProducer`] / [`RecordConsumer`]: framed, stamped records (audio periods) that
//!   are dropped whole and counted when the ring is full.
//!
//! Wakeups go through [`Doorbell`]s (eventfds) that are rung only when the other side said
//! it sleeps. Each side treats the other's memory as hostile: a bad position or record
//! header poisons the ring ([`Poison`]) instead of causing undefined behaviour or a panic.
//!
//! ```
//! use shm_ring::{byte_ring_pair, RingKind, RingMemory};
//!
//! let mem = RingMemory::create("example", RingKind::Bytes, 4096, 0).unwrap();
//! let (mut tx, mut rx) = byte_ring_pair(mem).unwrap();
//! assert_eq!(tx.write(b"hello").unwrap().bytes, 5);
//! let mut buf = [0u8; 16];
//! let got = rx.read(&mut buf).unwrap();
//! assert_eq!(&buf[..got.bytes], b"hello");
//! assert_eq!(got.position, 0);
//! ```
//!
//! What it deliberately does not do: block, allocate on the write path, or trust the peer.

pub mod byte_ring;
#[cfg(not(loom))]
pub mod doorbell;
mod error;
pub mod fence;
#[cfg(not(loom))]
pub mod handover;
pub mod layout;
mod memory;
pub mod record_ring;
mod shared;
mod sync;

pub use byte_ring::{byte_ring_pair, ByteConsumer, ByteProducer, Consumed, Read, Written};
#[cfg(not(loom))]
pub use doorbell::Doorbell;
pub use error::{Poison, RingError};
pub use fence::FenceMode;
pub use layout::RingKind;
pub use memory::{RingGeometry, RingMemory};
pub use record_ring::{
    Popped, Pushed, RecordConsumer, RecordMeta, RecordProducer, RECORD_HEADER_SIZE,
};
