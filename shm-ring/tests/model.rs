//! The rings against a `VecDeque` model: every interleaving of operations proptest finds
//! must give the same bytes, counts and wakeup decisions as the model.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::sync::Arc;

use proptest::prelude::*;
use shm_ring::{
    ByteConsumer, ByteProducer, RecordConsumer, RecordProducer, RingKind, RingMemory,
    RECORD_HEADER_SIZE,
};

const CAP: usize = 4096;

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    WriteOverwriting(usize),
    Read(usize),
    ConsumerSleeps,
    ProducerWaits(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3000).prop_map(Op::Write),
        2 => (0usize..9000).prop_map(Op::WriteOverwriting),
        4 => (0usize..5000).prop_map(Op::Read),
        1 => Just(Op::ConsumerSleeps),
        1 => (1usize..5000).prop_map(Op::ProducerWaits),
    ]
}

/// The model: a bounded deque of (position, byte) plus the two wakeup flags.
struct Model {
    q: VecDeque<u8>,
    read_pos: u64,
    write_pos: u64,
    consumer_sleeps: bool,
    producer_waits: bool,
    pending_lost: u64,
}

/// Runs `ops` against the ring and the model; fails on the first difference.
fn check_byte_ring(ops: Vec<Op>, seed: u8) -> Result<(), TestCaseError> {
    let mem = Arc::new(RingMemory::create("model", RingKind::Bytes, CAP as u64, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem).unwrap();
    let mut m = Model {
        q: VecDeque::new(),
        read_pos: 0,
        write_pos: 0,
        consumer_sleeps: false,
        producer_waits: false,
        pending_lost: 0,
    };
    let mut next = seed;
    let mut gen = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                next = next.wrapping_mul(31).wrapping_add(7);
                next
            })
            .collect()
    };
    for op in ops {
        match op {
            Op::Write(n) => {
                let data = gen(n);
                let w = tx.write(&data).unwrap();
                let fit = n.min(CAP - m.q.len());
                prop_assert_eq!(w.bytes, fit);
                m.q.extend(&data[..fit]);
                m.write_pos += fit as u64;
                let wake = fit > 0 && m.consumer_sleeps;
                prop_assert_eq!(w.wake_consumer, wake);
                if fit > 0 {
                    m.consumer_sleeps = false;
                }
            }
            Op::WriteOverwriting(n) => {
                let data = gen(n);
                let w = tx.write_overwriting(&data).unwrap();
                prop_assert_eq!(w.bytes, n);
                m.q.extend(&data);
                m.write_pos += n as u64;
                let mut dropped = 0;
                while m.q.len() > CAP {
                    m.q.pop_front();
                    dropped += 1;
                }
                // Bytes that never entered the ring count as dropped too.
                prop_assert_eq!(w.dropped, dropped);
                m.read_pos += dropped;
                m.pending_lost += dropped;
                if dropped > 0 {
                    m.producer_waits = false;
                }
                prop_assert_eq!(w.wake_consumer, n > 0 && m.consumer_sleeps);
                if n > 0 {
                    m.consumer_sleeps = false;
                }
            }
            Op::Read(n) => {
                let mut buf = vec![0u8; n];
                let r = rx.read(&mut buf).unwrap();
                let take = n.min(m.q.len());
                prop_assert_eq!(r.bytes, take);
                prop_assert_eq!(r.lost, m.pending_lost);
                prop_assert_eq!(r.position, m.read_pos);
                let expect: Vec<u8> = m.q.drain(..take).collect();
                prop_assert_eq!(&buf[..take], &expect[..]);
                // A jump is reported once, by the read that noticed it, even an empty one.
                m.pending_lost = 0;
                if take > 0 {
                    m.read_pos += take as u64;
                    prop_assert_eq!(r.wake_producer, m.producer_waits);
                    m.producer_waits = false;
                }
            }
            Op::ConsumerSleeps => {
                let ok = rx.prepare_sleep().unwrap();
                prop_assert_eq!(ok, m.q.is_empty());
                if ok {
                    m.consumer_sleeps = true;
                }
            }
            Op::ProducerWaits(n) => {
                let mut drained = false;
                let fits = tx.space_or_arm(n, || drained = true).unwrap();
                let want = n.min(CAP);
                prop_assert_eq!(fits, CAP - m.q.len() >= want);
                // The doorbell is drained only when the flag is freshly raised.
                prop_assert_eq!(drained, !fits && !m.producer_waits);
                if !fits {
                    m.producer_waits = true;
                }
            }
        }
    }
    prop_assert_eq!(tx.position(), m.write_pos);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn byte_ring_matches_a_vecdeque(ops in prop::collection::vec(op(), 1..60), seed in any::<u8>()) {
        check_byte_ring(ops, seed)?;
    }

    #[test]
    fn record_ring_matches_a_vecdeque(sizes in prop::collection::vec((0usize..1100, any::<bool>()), 1..80)) {
        let mem = Arc::new(RingMemory::create("records", RingKind::Records, CAP as u64, 1024).unwrap());
        let mut tx = RecordProducer::new(mem.clone()).unwrap();
        let mut rx = RecordConsumer::new(mem).unwrap();
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut used = 0usize;
        let mut dropped = 0u64;
        let mut payload = Vec::new();
        let mut pushes = 0u64;
        for (len, pop) in sizes {
            if pop {
                let got = rx.pop(&mut payload).unwrap();
                match model.pop_front() {
                    None => prop_assert!(got.is_none()),
                    Some((seq, data)) => {
                        let got = got.unwrap();
                        prop_assert_eq!(got.meta.seq, seq);
                        prop_assert_eq!(got.meta.timestamp_ns, seq * 10);
                        prop_assert_eq!(&payload, &data);
                        used -= (RECORD_HEADER_SIZE + data.len()).next_multiple_of(8);
                    }
                }
            } else {
                let i = pushes;
                pushes += 1;
                let data = vec![i as u8; len];
                let p = tx.push(i * 10, (len / 4) as u32, 0, &data).unwrap();
                let need = (RECORD_HEADER_SIZE + len).next_multiple_of(8);
                let fits = len <= 1024 && used + need <= CAP;
                prop_assert_eq!(p.stored, fits);
                prop_assert_eq!(p.seq, i);
                if fits { used += need; model.push_back((i, data)); } else { dropped += 1; }
            }
        }
        prop_assert_eq!(tx.dropped(), dropped);
        prop_assert_eq!(rx.producer_dropped(), dropped);
    }
}

/// Found by CI: a flight-recorder jump is reported by the first read after it, even an
/// empty one, and never again.
#[test]
fn a_jump_is_reported_once_even_by_an_empty_read() {
    let ops = vec![
        Op::Write(1938),
        Op::WriteOverwriting(2159),
        Op::Read(0),
        Op::Read(0),
        Op::Read(10),
    ];
    check_byte_ring(ops, 0).unwrap();
}
