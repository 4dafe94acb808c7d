//! Arbitrary bytes as a device description and as an acknowledgement (what a hostile
//! producer or daemon can send over the registration socket).
//!
//! Checked: no panic; whatever decodes re-encodes, and the encoding decodes to the same
//! value; an acknowledgement's message survives the round trip up to the 512 bytes an
//! encoding carries.

use shm_ring::handover::{Ack, DeviceDescription};

/// Runs one input through both decoders.
pub fn run(data: &[u8]) {
    if let Ok(d) = DeviceDescription::decode(data) {
        let enc = d.encode().expect("a decoded description must encode");
        let again = DeviceDescription::decode(&enc).expect("an encoding must decode");
        assert_eq!(again, d);
        assert_eq!(again.encode().unwrap(), enc, "the encoding is not stable");
    }
    if let Ok(a) = Ack::decode(data) {
        let enc = a.encode();
        let again = Ack::decode(&enc).expect("an encoding must decode");
        assert_eq!(again.accepted, a.accepted);
        if a.message.len() <= 512 {
            assert_eq!(again, a);
        } else {
            assert!(a.message.starts_with(&again.message), "{again:?} vs {a:?}");
            assert!(again.message.len() <= 512);
        }
        assert_eq!(Ack::decode(&again.encode()).unwrap(), again);
    }
}
