//! Model checking of the ring protocol with loom (`RUSTFLAGS="--cfg loom"`): every
//! interleaving of a producer and a consumer that sleep on doorbells, at tiny capacity.
//! A lost wakeup shows up as a deadlock, a protocol error as a wrong byte or count, and
//! (rings from `create_heap`, whose data area is loom `UnsafeCell`s) a publish or release
//! too weak to order the copies as a causality violation. Flight-recorder rings
//! (`create_heap_racy`) have atomic slots: their overwrites race with copies by design.
//! Loom cannot model membarrier; the rings' light and heavy fences are both SeqCst fences
//! under loom, which is the pair membarrier stands for (see `shm_ring::fence`).
#![cfg(loom)]

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shm_ring::{ByteConsumer, ByteProducer, RingKind, RingMemory};

/// An eventfd stand-in: ring sets it, wait blocks until set and clears it.
#[derive(Default)]
struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn drain(&self) {
        *self.rung.lock().unwrap() = false;
    }
    fn wait(&self) {
        let mut g = self.rung.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
        *g = false;
    }
}

/// Producer pushes `total` bytes with backpressure, consumer reads them; both sleep on their
/// doorbell whenever they cannot progress. Bounded to three preemptions like the models
/// below: with the sleep words and the discard floor the unbounded search does not finish
/// in hours, and the lost-wakeup races it looks for take two.
fn run(total: u8, cap: u64, chunk: usize) {
    model(move || {
        let mem = std::sync::Arc::new(RingMemory::create_heap(RingKind::Bytes, cap, 0).unwrap());
        let mut tx = ByteProducer::new(mem.clone()).unwrap();
        let mut rx = ByteConsumer::new(mem).unwrap();
        let data_bell = Arc::new(Bell::default());
        let space_bell = Arc::new(Bell::default());

        let (db, sb) = (data_bell.clone(), space_bell.clone());
        let producer = thread::spawn(move || {
            let data: Vec<u8> = (0..total).collect();
            let mut off = 0;
            while off < data.len() {
                let end = (off + chunk).min(data.len());
                let w = tx.write(&data[off..end]).unwrap();
                if w.wake_consumer {
                    db.ring();
                }
                off += w.bytes;
                if w.bytes == 0 && !tx.space_or_arm(1, || sb.drain()).unwrap() {
                    sb.wait();
                }
            }
        });

        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < total as usize {
            let r = rx.read(&mut buf[..chunk]).unwrap();
            assert_eq!(r.lost, 0);
            if r.wake_producer {
                space_bell.ring();
            }
            got.extend_from_slice(&buf[..r.bytes]);
            if r.bytes == 0 && rx.prepare_sleep().unwrap() {
                data_bell.wait();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..total).collect::<Vec<u8>>());
    });
}

#[test]
fn bytes_arrive_in_order_and_no_wakeup_is_lost() {
    run(5, 8, 3);
}

#[test]
fn a_full_ring_wakes_the_waiting_producer() {
    // Capacity 8, 12 bytes in chunks of 4: the producer must wait for space at least once.
    run(12, 8, 4);
}

#[test]
fn flight_recorder_overwrite_races_a_consumer_without_tearing() {
    loom::model(|| {
        let mem = std::sync::Arc::new(RingMemory::create_heap_racy(RingKind::Bytes, 8).unwrap());
        let mut tx = ByteProducer::new(mem.clone()).unwrap();
        let mut rx = ByteConsumer::new(mem).unwrap();
        let producer = thread::spawn(move || {
            tx.write_overwriting(&[0, 1, 2, 3, 4, 5]).unwrap();
            tx.write_overwriting(&[6, 7, 8, 9, 10, 11]).unwrap();
        });
        let mut expect_pos = 0u64;
        let mut buf = [0u8; 8];
        for _ in 0..2 {
            let r = rx.read(&mut buf).unwrap();
            // Whatever was lost is counted, and what is returned is exactly the bytes at
            // the reported positions (the stream's byte value equals its position).
            expect_pos += r.lost;
            assert_eq!(r.position, expect_pos);
            for (i, b) in buf[..r.bytes].iter().enumerate() {
                assert_eq!(u64::from(*b), r.position + i as u64);
            }
            expect_pos += r.bytes as u64;
        }
        producer.join().unwrap();
    });
}

/// Explores every interleaving with at most three preemptions: enough for the two- and
/// three-step races below, and a bounded run time.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

#[test]
fn records_arrive_whole_and_in_order_with_a_sleeping_consumer() {
    use loom::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use shm_ring::{RecordConsumer, RecordProducer};
    model(|| {
        // 128 bytes: three 40-byte records (32-byte header, 8-byte payload) fit.
        let mem = std::sync::Arc::new(RingMemory::create_heap(RingKind::Records, 128, 16).unwrap());
        let mut tx = RecordProducer::new(mem.clone()).unwrap();
        let mut rx = RecordConsumer::new(mem).unwrap();
        let bell = Arc::new(Bell::default());
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (bell.clone(), done.clone());
        let producer = thread::spawn(move || {
            for i in 0..2u8 {
                let p = tx.push(u64::from(i), 1, 0, &[i; 8]).unwrap();
                assert!(p.stored);
                if p.wake_consumer {
                    b.ring();
                }
            }
            d.store(true, SeqCst);
            b.ring();
        });
        let mut got = Vec::new();
        let mut payload = Vec::new();
        while got.len() < 2 {
            match rx.pop(&mut payload).unwrap() {
                Some(p) => {
                    // A record is whole: its payload is the byte of its sequence number.
                    assert_eq!(payload, vec![p.meta.seq as u8; 8]);
                    got.push(p.meta.seq);
                }
                None => {
                    if done.load(SeqCst) {
                        continue;
                    }
                    if rx.prepare_sleep().unwrap() {
                        bell.wait();
                    }
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [0, 1]);
    });
}

#[test]
fn peeked_bytes_consumed_under_backpressure_arrive_once_in_order() {
    model(|| {
        let mem = std::sync::Arc::new(RingMemory::create_heap(RingKind::Bytes, 8, 0).unwrap());
        let mut tx = ByteProducer::new(mem.clone()).unwrap();
        let mut rx = ByteConsumer::new(mem).unwrap();
        let producer = thread::spawn(move || {
            let data: Vec<u8> = (0..10).collect();
            let mut off = 0;
            while off < data.len() {
                off += tx.write(&data[off..]).unwrap().bytes;
                thread::yield_now();
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < 10 {
            let r = rx.peek(&mut buf).unwrap();
            assert_eq!(r.position, got.len() as u64);
            // Take at most 3 of what was peeked, as a consumer that stores in pieces does.
            let n = r.bytes.min(3);
            got.extend_from_slice(&buf[..n]);
            rx.consume(n).unwrap();
            if n == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    });
}

#[test]
fn a_flight_recorder_wakes_its_sleeping_consumer_and_every_byte_is_read_or_counted() {
    model(|| {
        let mem = std::sync::Arc::new(RingMemory::create_heap_racy(RingKind::Bytes, 8).unwrap());
        let mut tx = ByteProducer::new(mem.clone()).unwrap();
        let mut rx = ByteConsumer::new(mem).unwrap();
        let bell = Arc::new(Bell::default());
        let b = bell.clone();
        // Backpressure first, then the "daemon is gone" switch to overwriting: the stream's
        // byte value is its position, so every byte read is checked against where it is.
        let producer = thread::spawn(move || {
            for (chunk, overwrite) in [
                (&[0u8, 1, 2][..], false),
                (&[3, 4, 5, 6, 7, 8, 9, 10, 11][..], true),
            ] {
                let w = if overwrite {
                    tx.write_overwriting(chunk).unwrap()
                } else {
                    tx.write(chunk).unwrap()
                };
                assert_eq!(w.bytes, chunk.len());
                if w.wake_consumer {
                    b.ring();
                }
            }
        });
        let mut seen = 0u64;
        let mut buf = [0u8; 8];
        while seen < 12 {
            let r = rx.read(&mut buf).unwrap();
            seen += r.lost;
            assert_eq!(r.position, seen);
            for (i, v) in buf[..r.bytes].iter().enumerate() {
                assert_eq!(u64::from(*v), r.position + i as u64);
            }
            seen += r.bytes as u64;
            if r.bytes == 0 && r.lost == 0 && rx.prepare_sleep().unwrap() {
                // A lost wakeup would block here for ever (loom reports the deadlock).
                bell.wait();
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn attaching_during_flight_recording_sees_a_consistent_ring() {
    model(|| {
        let mem = std::sync::Arc::new(RingMemory::create_heap_racy(RingKind::Bytes, 8).unwrap());
        let mut tx = ByteProducer::new(mem.clone()).unwrap();
        tx.write(&[0, 1, 2, 3, 4, 5]).unwrap();
        let producer = thread::spawn(move || {
            // Larger than the ring: read_pos runs ahead of the published write_pos a moment.
            tx.write_overwriting(&[6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
                .unwrap();
        });
        let mut rx = ByteConsumer::new(mem).expect("a healthy ring attaches");
        let mut buf = [0u8; 8];
        let r = rx.read(&mut buf).unwrap();
        for (i, v) in buf[..r.bytes].iter().enumerate() {
            assert_eq!(u64::from(*v), r.position + i as u64);
        }
        producer.join().unwrap();
    });
}
