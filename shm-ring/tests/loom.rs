//! Model checking of the ring protocol with loom (`RUSTFLAGS="--cfg loom"`): every
//! interleaving of a producer and a consumer that sleep on doorbells, at tiny capacity.
//! A lost wakeup shows up as a deadlock, a protocol error as a wrong byte or count.
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
/// doorbell whenever they cannot progress.
fn run(total: u8, cap: u64, chunk: usize) {
    loom::model(move || {
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
        let mem = std::sync::Arc::new(RingMemory::create_heap(RingKind::Bytes, 8, 0).unwrap());
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
