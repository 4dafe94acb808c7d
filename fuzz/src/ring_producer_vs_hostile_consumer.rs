//! A `ByteProducer` or `RecordProducer` facing a consumer that may scribble over any header
//! word or data byte between the producer's calls, interleaved with an honest consumer's
//! reads.
//!
//! Checked: no panic; a backpressured write never takes more than it was given or than the
//! ring holds, and a flight-recorder write takes everything; the producer's position moves by
//! exactly what it reports; `space_or_arm` saying "yes" means that much space is really
//! free; while the peer has not touched the positions, the honest consumer reads exactly the
//! bytes and records written; once an operation reports a poison, every later operation fails
//! with that same poison.

use shm_ring::{ByteConsumer, ByteProducer, RecordConsumer, RecordProducer, RingKind};

use crate::input::Input;
use crate::peer::{READ_POS, WRITE_POS};
use crate::ring_target::{self, Sticky, CAP, MAX_RECORD};
use crate::{fill_pattern, pattern};

/// Runs one operation stream.
pub fn run(data: &[u8]) {
    ring_target::run(data, bytes, records)
}

fn bytes(mut inp: Input<'_>) {
    let (mem, peer) = ring_target::ring(RingKind::Bytes);
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    let mut sticky = Sticky::default();
    let mut clean = true;
    let mut buf = vec![0u8; 2 * CAP as usize];
    let mut chunk = vec![0u8; 2 * CAP as usize];

    while let Some(op) = inp.op() {
        match op % 9 {
            0 | 1 => {
                let n = inp.len(2 * CAP as usize);
                let before = tx.position();
                fill_pattern(&mut chunk[..n], before);
                if let Some(w) = sticky.check("write", tx.write(&chunk[..n])) {
                    assert!(w.bytes <= n && w.bytes as u64 <= CAP, "{w:?} for {n}");
                    assert_eq!(w.dropped, 0);
                    assert_eq!(tx.position(), before + w.bytes as u64);
                } else {
                    assert_eq!(tx.position(), before, "a failed write moved the position");
                }
            }
            2 => {
                let n = inp.len(3 * CAP as usize);
                let n = n.min(chunk.len());
                let before = tx.position();
                fill_pattern(&mut chunk[..n], before);
                let r = tx.write_overwriting(&chunk[..n]);
                if let Some(w) = sticky.check("write_overwriting", r) {
                    assert_eq!(w.bytes, n);
                    assert_eq!(tx.position(), before + n as u64);
                }
            }
            3 => {
                let want = inp.len(2 * CAP as usize);
                let mut armed = 0;
                let r = tx.space_or_arm(want, || armed += 1);
                if let Some(fits) = sticky.check("space_or_arm", r) {
                    assert!(armed <= 1);
                    if fits {
                        assert_eq!(armed, 0);
                        let free = sticky.check("free", tx.free());
                        if let Some(free) = free {
                            assert!(
                                free as u64 >= (want as u64).clamp(1, CAP),
                                "{free} < {want}"
                            );
                        }
                    }
                }
            }
            4 => {
                if let Some(free) = sticky.check("free", tx.free()) {
                    assert!(free as u64 <= CAP);
                }
            }
            5 | 6 => {
                let idx = peer.scribble_header(&mut inp, CAP);
                if idx == WRITE_POS || idx == READ_POS {
                    clean = false;
                }
            }
            7 => {
                // The honest consumer (only meaningful while the positions are untouched).
                let n = inp.len(2 * CAP as usize);
                if let Ok(r) = rx.read(&mut buf[..n]) {
                    if clean {
                        for (i, &b) in buf[..r.bytes].iter().enumerate() {
                            assert_eq!(b, pattern(r.position + i as u64));
                        }
                    }
                }
            }
            _ => {
                if let Ok(fresh) = ByteProducer::new(mem.clone()) {
                    tx = fresh;
                    sticky = Sticky::default();
                }
            }
        }
        assert_eq!(tx.poisoned(), sticky.0);
    }
}

fn records(mut inp: Input<'_>) {
    let (mem, peer) = ring_target::ring(RingKind::Records);
    let mut tx = RecordProducer::new(mem.clone()).unwrap();
    let mut rx = RecordConsumer::new(mem.clone()).unwrap();
    let mut sticky = Sticky::default();
    let mut clean = true;
    let mut pushes = 0u64;
    let mut dropped = 0u64;
    let mut next_stored = 0u64;
    let mut restarted = false;
    let mut payload = Vec::new();

    while let Some(op) = inp.op() {
        match op % 6 {
            0 | 1 => {
                let len = inp.len(MAX_RECORD as usize + 64);
                let mut body = vec![0u8; len];
                fill_pattern(&mut body, pushes << 20);
                let r = tx.push(inp.u64(), inp.u32(), 0, &body);
                pushes += 1;
                if let Some(p) = sticky.check("push", r) {
                    assert_eq!(p.seq, pushes - 1);
                    if !p.stored {
                        dropped += 1;
                    }
                    if len > MAX_RECORD as usize {
                        assert!(!p.stored, "a record larger than the maximum was stored");
                    }
                    assert_eq!(tx.dropped(), dropped);
                }
            }
            2 | 3 => {
                let idx = peer.scribble_header(&mut inp, CAP);
                if idx == WRITE_POS || idx == READ_POS {
                    clean = false;
                }
            }
            4 => {
                if let Ok(Some(p)) = rx.pop(&mut payload) {
                    if clean {
                        // A restarted producer numbers from 0 again: order holds per producer.
                        if !restarted {
                            assert!(p.meta.seq >= next_stored);
                        }
                        next_stored = p.meta.seq + 1;
                        let mut want = vec![0u8; payload.len()];
                        fill_pattern(&mut want, p.meta.seq << 20);
                        assert_eq!(payload, want);
                    }
                }
            }
            _ => {
                if let Ok(fresh) = RecordProducer::new(mem.clone()) {
                    tx = fresh;
                    sticky = Sticky::default();
                    pushes = 0;
                    dropped = 0;
                    next_stored = 0;
                    restarted = true;
                }
            }
        }
        assert_eq!(tx.poisoned(), sticky.0);
    }
}
