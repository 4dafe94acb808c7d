//! A `ByteConsumer` or `RecordConsumer` facing a producer that may scribble over any header
//! word (positions, flags, counters, identity) or data byte between the consumer's calls,
//! interleaved with a well-behaved producer's writes.
//!
//! Checked: no panic; no call returns more than was asked or more than the ring holds; the
//! consumer's own position accounting adds up (`position` is the previous one plus `lost`,
//! and the next one adds `bytes`); while the peer has not touched the positions or the data, every byte and
//! record is exactly what the honest producer wrote; once an operation reports a poison,
//! every later operation fails with that same poison.

use std::collections::VecDeque;

use shm_ring::{ByteConsumer, ByteProducer, Consumed, RecordConsumer, RecordProducer, RingKind};

use crate::input::Input;
use crate::peer::{DISCARD_FLOOR, READ_POS, WRITE_POS};
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
    // The peer has not touched the positions or the data: the honest producer is the truth.
    let mut clean = true;
    // Bytes of the last peek that may still be consumed.
    let mut peeked = 0usize;
    let mut buf = vec![0u8; 2 * CAP as usize];
    let mut chunk = vec![0u8; 2 * CAP as usize];

    while let Some(op) = inp.op() {
        match op % 11 {
            0 | 1 => {
                let n = inp.len(2 * CAP as usize);
                let pos = tx.position();
                fill_pattern(&mut chunk[..n], pos);
                let r = if op % 11 == 0 {
                    tx.write(&chunk[..n])
                } else {
                    tx.write_overwriting(&chunk[..n])
                };
                if clean {
                    r.expect("the honest producer failed on an untouched ring");
                }
            }
            2 | 3 => {
                let idx = peer.scribble_header(&mut inp, CAP);
                if idx == WRITE_POS || idx == READ_POS || idx == DISCARD_FLOOR {
                    clean = false;
                }
            }
            4 => {
                peer.scribble_data(&mut inp);
                clean = false;
            }
            5 => {
                let n = inp.len(2 * CAP as usize);
                let before = rx.position();
                if let Some(r) = sticky.check("read", rx.read(&mut buf[..n])) {
                    assert!(r.bytes <= n && r.bytes as u64 <= CAP, "{r:?} for {n}");
                    assert_eq!(r.position, before + r.lost, "{r:?} from {before}");
                    assert_eq!(rx.position(), r.position + r.bytes as u64);
                    if clean {
                        check_bytes(&buf[..r.bytes], r.position);
                        assert!(rx.position() <= tx.position());
                    }
                }
                peeked = 0;
            }
            6 => {
                let n = inp.len(2 * CAP as usize);
                let before = rx.position();
                peeked = 0;
                if let Some(r) = sticky.check("peek", rx.peek(&mut buf[..n])) {
                    assert!(r.bytes <= n && r.bytes as u64 <= CAP, "{r:?} for {n}");
                    assert_eq!(r.position, before + r.lost, "{r:?} from {before}");
                    assert_eq!(rx.position(), r.position);
                    assert!(!r.wake_producer);
                    if clean {
                        check_bytes(&buf[..r.bytes], r.position);
                    }
                    peeked = r.bytes;
                }
            }
            7 => {
                let n = inp.len(peeked + 1);
                let before = rx.position();
                match sticky.check("consume", rx.consume(n)) {
                    // Peeked bytes stay valid: an overwrite is counted at the next read.
                    Some(Consumed { .. }) => {
                        assert_eq!(rx.position(), before + n as u64);
                        peeked -= n;
                    }
                    None => peeked = 0,
                }
            }
            8 => {
                if let Some(sleeping) = sticky.check("prepare_sleep", rx.prepare_sleep()) {
                    if sleeping && clean {
                        assert!(tx.position() <= rx.position());
                    }
                }
            }
            9 => {
                if let Some(n) = sticky.check("available", rx.available()) {
                    assert!(n as u64 <= CAP);
                }
            }
            _ => {
                // A restarted consumer takes the role over from the positions it finds.
                if let Ok(fresh) = ByteConsumer::new(mem.clone()) {
                    rx = fresh;
                    sticky = Sticky::default();
                    peeked = 0;
                }
            }
        }
        assert_eq!(rx.poisoned(), sticky.0);
    }
}

fn check_bytes(got: &[u8], position: u64) {
    for (i, &b) in got.iter().enumerate() {
        assert_eq!(
            b,
            pattern(position + i as u64),
            "byte at {}",
            position + i as u64
        );
    }
}

fn record_payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern(seq * 7919 + i as u64)).collect()
}

fn records(mut inp: Input<'_>) {
    let (mem, peer) = ring_target::ring(RingKind::Records);
    let mut tx = RecordProducer::new(mem.clone()).unwrap();
    let mut rx = RecordConsumer::new(mem.clone()).unwrap();
    let mut sticky = Sticky::default();
    let mut clean = true;
    // Records the honest producer stored and the consumer has not taken yet.
    let mut stored: VecDeque<(u64, usize)> = VecDeque::new();
    let mut payload = Vec::new();

    while let Some(op) = inp.op() {
        match op % 7 {
            0 | 1 => {
                let len = inp.len(MAX_RECORD as usize + 64);
                let ts = inp.u64();
                let frames = inp.u32();
                // The payload depends on the sequence number the push will get.
                let r = tx.push(ts, frames, 0, &[]);
                // An empty record goes in first, so the consumer sees it too.
                if let Ok(p) = r {
                    if p.stored {
                        stored.push_back((p.seq, 0));
                    }
                    let body = record_payload(p.seq + 1, len);
                    if let Ok(p) = tx.push(ts, frames, 7, &body) {
                        if p.stored {
                            stored.push_back((p.seq, len));
                        }
                    }
                } else if clean {
                    panic!("the honest producer failed on an untouched ring: {r:?}");
                }
            }
            2 => {
                let idx = peer.scribble_header(&mut inp, CAP);
                if idx == WRITE_POS || idx == READ_POS || idx == DISCARD_FLOOR {
                    clean = false;
                }
            }
            3 => {
                peer.scribble_data(&mut inp);
                clean = false;
            }
            4 => {
                if let Some(got) = sticky.check("pop", rx.pop(&mut payload)) {
                    if let Some(p) = got {
                        assert!(p.meta.len <= MAX_RECORD);
                        assert_eq!(payload.len(), p.meta.len as usize);
                        if clean {
                            let (seq, len) = stored.pop_front().expect("a record nobody pushed");
                            assert_eq!((p.meta.seq, p.meta.len as usize), (seq, len));
                            if len > 0 {
                                assert_eq!(payload, record_payload(seq, len));
                            }
                        }
                    } else if clean {
                        assert!(stored.is_empty(), "records were lost: {stored:?}");
                    }
                }
            }
            5 => {
                if let Some(sleeping) = sticky.check("prepare_sleep", rx.prepare_sleep()) {
                    if sleeping && clean {
                        assert!(stored.is_empty(), "asleep with records waiting: {stored:?}");
                    }
                }
            }
            _ => {
                if let Ok(fresh) = RecordConsumer::new(mem.clone()) {
                    rx = fresh;
                    sticky = Sticky::default();
                }
            }
        }
        assert_eq!(rx.poisoned(), sticky.0);
    }
}
