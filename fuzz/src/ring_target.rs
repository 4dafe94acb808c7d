//! What the two ring targets share: the ring they drive (bytes or records, picked by the
//! first input byte), the hostile peer's mapping of it, and the check that a ring side's
//! poison is final (once an operation reports one, every later operation fails with that
//! same poison).

use std::sync::Arc;

use shm_ring::{Poison, RingKind, RingMemory};

use crate::input::Input;
use crate::peer::Peer;

/// Capacity of the rings under test.
pub const CAP: u64 = 4096;
/// Largest record of a record ring under test.
pub const MAX_RECORD: u32 = 1024;

/// Runs one operation stream: `bytes` or `records`, as the first byte says.
pub fn run(data: &[u8], bytes: fn(Input<'_>), records: fn(Input<'_>)) {
    let mut inp = Input::new(data);
    if inp.u8() & 1 == 0 {
        bytes(inp)
    } else {
        records(inp)
    }
}

/// A new ring of `kind` and the hostile peer's second mapping of it.
pub fn ring(kind: RingKind) -> (Arc<RingMemory>, Peer) {
    let max_record = match kind {
        RingKind::Bytes => 0,
        RingKind::Records => MAX_RECORD,
    };
    let mem = Arc::new(RingMemory::create("fuzz", kind, CAP, max_record).unwrap());
    let peer = Peer::map(&mem);
    (mem, peer)
}

/// Tracks the poison a ring side reported: once set, every later result must be that error.
#[derive(Debug, Default)]
pub struct Sticky(pub Option<Poison>);

impl Sticky {
    /// Checks a result against the poison state; returns the value when it is Ok.
    pub fn check<T: std::fmt::Debug>(&mut self, what: &str, r: Result<T, Poison>) -> Option<T> {
        match (self.0, r) {
            (Some(p), Ok(v)) => panic!("{what} succeeded ({v:?}) on a ring poisoned with {p:?}"),
            (Some(p), Err(q)) => {
                assert_eq!(p, q, "{what}: the poison changed");
                None
            }
            (None, Ok(v)) => Some(v),
            (None, Err(p)) => {
                self.0 = Some(p);
                None
            }
        }
    }
}
