//! A peer that changes a position word before every compare-and-swap of ours, without
//! making progress: every call must give up after a bounded number of attempts and poison
//! the ring, instead of spinning. An interference that stops after one attempt (what an
//! honest peer's progress looks like) must be tolerated.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::layout::FLAG;
use crate::memory::interference;
use crate::sync::{AtomicU64, Ordering::SeqCst};
use crate::{ByteConsumer, ByteProducer, Poison, RingKind, RingMemory};

/// Runs `f` on its own thread with `peer` interfering before each of its attempts, and
/// fails the test if it does not return within a minute (a spinning loop never does).
fn bounded<T: Send + 'static>(
    peer: impl FnMut(&AtomicU64) + 'static,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let peer: Box<dyn FnMut(&AtomicU64)> = Box::new(peer);
    // The boxed peer is not Send; build it on the worker thread from a Send recipe.
    let peer = std::sync::Mutex::new(Some(SendBox(peer)));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let p = peer.lock().unwrap().take().unwrap().0;
        interference::set(Some(p));
        let _ = tx.send(f());
        interference::set(None);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the call kept retrying against the interfering peer")
}

struct SendBox(Box<dyn FnMut(&AtomicU64)>);
// SAFETY: the box is moved to the worker thread once and only used there.
unsafe impl Send for SendBox {}

fn ring() -> (ByteProducer, ByteConsumer) {
    let mem = Arc::new(RingMemory::create("i", RingKind::Bytes, 4096, 0).unwrap());
    (
        ByteProducer::new(mem.clone()).unwrap(),
        ByteConsumer::new(mem).unwrap(),
    )
}

/// Flips the "producer waits" flag: the word changes, the position does not.
fn flip_flag(w: &AtomicU64) {
    w.fetch_xor(FLAG, SeqCst);
}

#[test]
fn a_release_against_a_peer_flipping_the_flag_poisons_instead_of_spinning() {
    let (mut tx, mut rx) = ring();
    tx.write(&[1; 100]).unwrap();
    let (r, after) = bounded(flip_flag, move || {
        let mut buf = [0u8; 50];
        (rx.read(&mut buf), rx.read(&mut buf))
    });
    assert_eq!(r.unwrap_err(), Poison::PeerInterference);
    assert_eq!(after.unwrap_err(), Poison::PeerInterference);
}

#[test]
fn a_consume_against_a_peer_flipping_the_flag_poisons_instead_of_spinning() {
    let (mut tx, mut rx) = ring();
    tx.write(&[1; 100]).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(rx.peek(&mut buf).unwrap().bytes, 100);
    let r = bounded(flip_flag, move || rx.consume(100));
    assert_eq!(r.unwrap_err(), Poison::PeerInterference);
}

#[test]
fn waiting_for_space_against_a_creeping_read_position_poisons() {
    let (mut tx, _rx) = ring();
    tx.write(&[1; 4096]).unwrap();
    // The "consumer" moves read_pos by one byte before each attempt: never enough for the
    // whole ring the producer asks for, never a stop.
    let r = bounded(
        |w| {
            w.fetch_add(1, SeqCst);
        },
        move || tx.space_or_arm(4096, || {}),
    );
    assert_eq!(r.unwrap_err(), Poison::PeerInterference);
}

#[test]
fn overwriting_against_a_creeping_read_position_poisons() {
    let (mut tx, _rx) = ring();
    tx.write(&[1; 4096]).unwrap();
    let r = bounded(
        |w| {
            w.fetch_add(1, SeqCst);
        },
        move || tx.write_overwriting(&[2; 2048]),
    );
    assert_eq!(r.unwrap_err(), Poison::PeerInterference);
}

#[test]
fn one_failed_attempt_is_what_an_honest_peer_causes_and_is_tolerated() {
    let (mut tx, mut rx) = ring();
    tx.write(&[1; 100]).unwrap();
    let mut once = true;
    let (r, w) = bounded(
        move |w| {
            if std::mem::take(&mut once) {
                flip_flag(w);
            }
        },
        move || {
            let mut buf = [0u8; 100];
            let r = rx.read(&mut buf);
            (r, tx.write(&[3; 10]))
        },
    );
    let r = r.unwrap();
    assert_eq!(r.bytes, 100);
    // The flag the "peer" raised is reported, as an honest waiting producer's would be.
    assert!(r.wake_producer);
    assert_eq!(w.unwrap().bytes, 10);
}
