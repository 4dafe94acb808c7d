//! ringcast's wire protocol with no I/O and no clock, as quinn-proto is to quinn: what the
//! server and the client must agree on, as values, bytes and plain functions of their
//! inputs (time is an argument). It depends on no QUIC, TLS or async runtime; the
//! `transport-quic` crate drives it over quinn streams.
//!
//! - [`audio`]: the audio sample formats ([`SampleFormat`], numbered as QEMU numbers
//!   them) and the one PCM decoder.
//! - [`codec`]: frames as values and bytes (the frame table, version handshake rules,
//!   limits of sizes). Fuzzed (`fuzz/`, `wire_decode`), property-tested.
//! - [`errors`]: the one table of application error codes ([`ErrorCode`]).
//! - [`names`]: the grammar of VM and device names, and their escaping for people.
//! - [`proto`]: negotiation, the per-client request budget and the console in-flight
//!   credit.
//! - [`rules`]: the connection and stream rules as state machines (events and time in,
//!   actions out), driven by the server and the client.
//! - [`table`]: the one rendering of the stats and device tables, shared by `ringcastd
//!   stats` and `ringcast stats`/`list` so their columns cannot drift apart.
//!
//! ```
//! use protocol::codec::{Frame, StartAt, Mode};
//! let attach = Frame::Attach {
//!     vm: "vm1".into(), device: "serial0".into(), mode: Mode::Spy,
//!     start: StartAt::TailBytes(4096), datagrams: false, codecs: vec![],
//! };
//! let bytes = attach.to_bytes().unwrap();
//! let (decoded, used) = Frame::decode(&bytes).unwrap().unwrap();
//! assert_eq!((decoded, used), (attach, bytes.len()));
//! ```
#![forbid(unsafe_code)]

pub mod audio;
pub mod codec;
pub mod errors;
pub mod names;
pub mod proto;
pub mod rules;
pub mod table;

pub use audio::SampleFormat;
pub use errors::ErrorCode;
