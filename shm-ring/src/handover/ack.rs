//! The consumer's acknowledgement of a description.

use super::{Reader, ACK_MAGIC};
use crate::error::RingError;

/// The consumer's answer to a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// True when the device was accepted.
    pub accepted: bool,
    /// Why it was refused (or a note when accepted).
    pub message: String,
}

impl Ack {
    /// Serialises the acknowledgement.
    pub fn encode(&self) -> Vec<u8> {
        // At most 512 bytes, cut at a character boundary so the message stays UTF-8.
        let mut n = self.message.len().min(512);
        while !self.message.is_char_boundary(n) {
            n -= 1;
        }
        let msg = &self.message.as_bytes()[..n];
        let mut b = Vec::with_capacity(11 + msg.len());
        b.extend_from_slice(ACK_MAGIC);
        b.push(u8::from(!self.accepted));
        b.extend_from_slice(&(msg.len() as u16).to_le_bytes());
        b.extend_from_slice(msg);
        b
    }

    /// Parses an acknowledgement.
    pub fn decode(b: &[u8]) -> Result<Self, RingError> {
        let mut r = Reader(b);
        if r.take(8)? != ACK_MAGIC {
            return Err(RingError::BadMessage("not an acknowledgement"));
        }
        let accepted = r.u8()? == 0;
        let len = usize::from(r.u16()?);
        let message = String::from_utf8_lossy(r.take(len)?).into_owned();
        Ok(Ack { accepted, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_round_trips() {
        let a = Ack {
            accepted: false,
            message: "no".into(),
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn a_long_ack_message_is_cut_at_a_character_boundary() {
        // 511 ASCII bytes then a 3-byte character straddling the 512-byte limit.
        let message = format!("{}€ and more", "x".repeat(511));
        let a = Ack {
            accepted: false,
            message,
        };
        let back = Ack::decode(&a.encode()).unwrap();
        assert_eq!(back.message, "x".repeat(511));
        assert!(!back.message.contains('\u{fffd}'));
    }
}
