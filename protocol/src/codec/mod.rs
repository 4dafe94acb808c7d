//! The ringcast wire codec: frames as values, bytes in and out, no I/O and no clock.
//!
//! # Framing
//!
//! Every frame is `type: u8`, `length: u32` (big-endian, of the payload), `payload`. The
//! length is checked against [`MAX_FRAME_PAYLOAD`] *before* anything is allocated, so a
//! hostile peer cannot make the decoder reserve more than one maximum-sized frame.
//!
//! Payload fields are fixed-width big-endian integers, `u8` booleans (0 or 1), and
//! length-prefixed byte strings (`u16` length for names, `u32` for data, each with its own
//! limit). A payload may carry bytes after the fields this version knows: they are ignored,
//! so later versions can append fields. An unknown frame *type* is an error
//! ([`DecodeError::UnknownFrameType`]): its meaning cannot be guessed.
//!
//! # Streams
//!
//! - The control stream (the first bidirectional stream the client opens): client
//!   [`Frame::Hello`] → server [`Frame::Welcome`] (or [`Frame::Error`] and close), then
//!   requests [`Frame::ListDevices`] / [`Frame::GetStats`] answered by [`Frame::Devices`] /
//!   [`Frame::Stats`] with the same request id.
//! - Each attachment is its own bidirectional stream the client opens with
//!   [`Frame::Attach`]; the server answers [`Frame::Attached`] or [`Frame::Error`], then
//!   sends [`Frame::Data`] / [`Frame::Gap`] (console) or [`Frame::Audio`] (audio). The
//!   client sends [`Frame::Input`] (write mode only) and [`Frame::Consumed`] (how far it
//!   has read, which bounds what the server keeps in flight) on the same stream, and
//!   [`Frame::Detach`] or finishes the stream to leave.
//! - Audio codecs: the `Attach` may offer codecs beside PCM, the `Attached` names the one
//!   chosen ([`encoding`]); without those fields, PCM.
//! - Audio in datagram mode: each QUIC datagram is `attach stream id: u64` followed by
//!   one encoded [`Frame::Audio`].

//!
//! # Modules
//!
//! [`types`] (the values frames carry), [`frame`] (the frame table), `encode` and `decode`
//! (bytes out and in, every field bounds-checked), [`encoding`] (audio codecs and their
//! negotiation fields), [`buffer`] (frames from a byte stream,
//! audio datagrams).

pub mod buffer;
mod decode;
mod encode;
pub mod encoding;
pub mod frame;
pub mod types;

use bytes::{BufMut, Bytes};

pub use buffer::*;
use decode::*;
pub use encode::*;
use encoding::{put_codecs, put_encoding};
pub use encoding::{AudioCodec, AudioEncoding, OpusParams, OPUS_RATE};
pub use frame::*;
pub use types::*;

/// Largest payload a frame may have (console chunks and audio periods stay far below).
pub const MAX_FRAME_PAYLOAD: u32 = 1 << 20;
/// Frame header: type (1) + payload length (4).
pub const HEADER_LEN: usize = 5;
/// Longest VM or device name.
pub const MAX_NAME: usize = 255;
/// Longest human-readable text (error messages, software names).
pub const MAX_TEXT: usize = 1024;
/// Most devices in one list or stats reply.
pub const MAX_DEVICES: usize = 4096;
/// Largest console input frame.
pub const MAX_INPUT: usize = 64 << 10;
