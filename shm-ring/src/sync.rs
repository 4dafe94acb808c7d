//! Atomics used by the rings: std's in production, loom's when the crate is model-checked
//! (`RUSTFLAGS="--cfg loom"`), so the same algorithm code is what loom explores.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};
