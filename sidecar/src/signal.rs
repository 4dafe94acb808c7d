//! A notification that both blocking threads and async tasks can wait for.
//!
//! A waiter reads the generation, checks its condition, and waits until the generation
//! differs from what it read: a notification between the check and the wait is never lost.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Debug, Default)]
struct State {
    generation: u64,
    wakers: Vec<Waker>,
}

/// A generation counter with wakeups.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Wakes every waiter.
    pub fn notify(&self) {
        let wakers = {
            let mut s = self.lock();
            s.generation += 1;
            std::mem::take(&mut s.wakers)
        };
        self.cv.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Blocks until the generation differs from `seen` or `deadline` passes. Returns true
    /// when it changed.
    pub fn wait_blocking(&self, seen: u64, deadline: Instant) -> bool {
        let mut s = self.lock();
        while s.generation == seen {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = match self.cv.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    /// Async form of [`Signal::wait_blocking`] without a deadline.
    pub fn poll_changed(&self, seen: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.generation != seen {
            return Poll::Ready(());
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits (async) until the generation differs from `seen`.
    pub async fn changed(&self, seen: u64) {
        std::future::poll_fn(|cx| self.poll_changed(seen, cx)).await
    }
}
