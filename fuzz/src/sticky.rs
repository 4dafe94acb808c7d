//! A ring side's poison is final: once an operation reports one, every later operation
//! must fail with that same poison.

use shm_ring::Poison;

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
