//! A peer that scribbles over the ring header or hands over a bad region: the other side
//! must poison the ring or refuse it, never panic or read out of bounds.
#![cfg(not(loom))]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use shm_ring::{
    ByteConsumer, ByteProducer, Poison, RecordConsumer, RecordProducer, RingError, RingKind,
    RingMemory,
};

/// A second, raw mapping of the ring, playing the hostile peer.
fn scribble(mem: &RingMemory, offset: usize, value: u64) {
    let fd: OwnedFd = mem.fd().try_clone_to_owned().unwrap();
    let file = std::fs::File::from(fd);
    let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
    // SAFETY: offset + 8 is inside the header of a live mapping; this is a test of
    // exactly such foreign writes.
    unsafe {
        map.as_mut_ptr()
            .add(offset)
            .cast::<u64>()
            .write_volatile(value)
    };
}

const WRITE_POS: usize = 64;
const READ_POS: usize = 128;

#[test]
fn write_position_moving_backwards_poisons_the_consumer() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    tx.write(&[1; 100]).unwrap();
    let mut buf = [0u8; 50];
    rx.read(&mut buf).unwrap();
    scribble(&mem, WRITE_POS, 10);
    assert_eq!(rx.read(&mut buf).unwrap_err(), Poison::PositionWentBack);
    // Once poisoned, always poisoned, even if the peer repairs the word.
    scribble(&mem, WRITE_POS, 100);
    assert!(rx.read(&mut buf).is_err());
    assert!(rx.prepare_sleep().is_err());
}

#[test]
fn write_position_past_capacity_never_yields_more_than_the_ring_holds() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    scribble(&mem, WRITE_POS, 1 << 40);
    let mut buf = vec![0u8; 1 << 20];
    // The consumer asks the producer's read position to explain the jump; it was not
    // moved, so this is an attack.
    assert_eq!(rx.read(&mut buf).unwrap_err(), Poison::PositionPastCapacity);
}

#[test]
fn read_position_scribbled_poisons_the_producer() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    tx.write(&[1; 4096]).unwrap();
    scribble(&mem, READ_POS, 1 << 50);
    assert_eq!(tx.write(&[1]).unwrap_err(), Poison::PositionPastCapacity);
    assert!(tx.space_or_arm(1, || {}).is_err());
    assert!(tx.write_overwriting(&[1]).is_err());
}

#[test]
fn record_header_with_an_impossible_length_poisons_the_consumer() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Records, 4096, 1024).unwrap());
    let mut tx = RecordProducer::new(mem.clone()).unwrap();
    let mut rx = RecordConsumer::new(mem.clone()).unwrap();
    tx.push(1, 1, 0, &[7; 64]).unwrap();
    // The first u32 of the record header (at data offset 256) is its length.
    scribble(&mem, 256, 0xffff_ffff);
    let mut payload = Vec::new();
    assert_eq!(rx.pop(&mut payload).unwrap_err(), Poison::BadRecordLength);
}

#[test]
fn producer_moving_read_position_of_a_record_ring_poisons_the_consumer() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Records, 4096, 1024).unwrap());
    let mut tx = RecordProducer::new(mem.clone()).unwrap();
    let mut rx = RecordConsumer::new(mem.clone()).unwrap();
    for _ in 0..4 {
        tx.push(1, 1, 0, &[7; 64]).unwrap();
    }
    scribble(&mem, WRITE_POS, 5000);
    scribble(&mem, READ_POS, 4000);
    let mut payload = Vec::new();
    assert!(rx.pop(&mut payload).is_err());
}

fn reopen(mem: &RingMemory, kind: RingKind) -> Result<RingMemory, RingError> {
    RingMemory::open(mem.fd().try_clone_to_owned().unwrap(), kind)
}

#[test]
fn a_valid_region_opens_with_the_same_geometry() {
    let mem = RingMemory::create("h", RingKind::Records, 8192, 1000).unwrap();
    let other = reopen(&mem, RingKind::Records).unwrap();
    assert_eq!(other.geometry(), mem.geometry());
}

#[test]
fn bad_regions_are_refused_with_a_reason() {
    let mem = RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap();
    assert!(matches!(
        reopen(&mem, RingKind::Records),
        Err(RingError::BadRegion(_))
    ));
    scribble(&mem, 0, 0x1234);
    assert!(matches!(
        reopen(&mem, RingKind::Bytes),
        Err(RingError::BadRegion("bad magic"))
    ));

    let mem = RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap();
    scribble(&mem, 16, 1 << 20); // capacity field: does not match the file size
    assert!(matches!(
        reopen(&mem, RingKind::Bytes),
        Err(RingError::BadRegion(_))
    ));

    // An unsealed memfd: the sender could shrink it under us.
    let fd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 4096 + 256).unwrap();
    assert!(matches!(
        RingMemory::open(fd, RingKind::Bytes),
        Err(RingError::BadRegion(_))
    ));
    // Not a memfd at all.
    let (a, _b) = rustix::pipe::pipe().unwrap();
    assert!(RingMemory::open(a, RingKind::Bytes).is_err());
}

#[test]
fn sealed_region_cannot_be_shrunk_by_its_creator() {
    let mem = RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap();
    assert!(rustix::fs::ftruncate(mem.fd().as_fd(), 100).is_err());
}

#[test]
fn bad_capacities_are_refused() {
    for cap in [0, 100, 2048, 4097, 1 << 31] {
        assert!(matches!(
            RingMemory::create("h", RingKind::Bytes, cap, 0),
            Err(RingError::BadCapacity(_))
        ));
    }
}

#[test]
fn peeked_bytes_overwritten_by_a_flight_recording_producer_are_reported_not_returned() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem).unwrap();
    tx.write(&[1; 4000]).unwrap();
    let mut buf = vec![0u8; 4096];
    let p = rx.peek(&mut buf).unwrap();
    assert_eq!((p.bytes, p.position), (4000, 0));
    tx.write_overwriting(&[2; 1000]).unwrap();
    assert_eq!(
        rx.consume(p.bytes).unwrap(),
        shm_ring::Consumed::Overwritten { lost: 904 }
    );
    let p = rx.peek(&mut buf).unwrap();
    assert_eq!((p.bytes, p.position), (4096, 904));
    assert_eq!(
        rx.consume(p.bytes).unwrap(),
        shm_ring::Consumed::Done {
            wake_producer: false
        }
    );
}

#[test]
fn consume_after_a_poison_fails_and_leaves_the_read_position_alone() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    tx.write(&[1; 100]).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(rx.peek(&mut buf).unwrap().bytes, 100);
    // The producer jumps its position past the capacity: the next look poisons the ring.
    scribble(&mem, WRITE_POS, 3 * 4096);
    assert_eq!(rx.available().unwrap_err(), Poison::PositionPastCapacity);
    // Consuming the bytes peeked before must not hand slots back on a poisoned ring.
    assert_eq!(rx.consume(100).unwrap_err(), Poison::PositionPastCapacity);
    assert_eq!(rx.consume(0).unwrap_err(), Poison::PositionPastCapacity);
    assert_eq!(rx.position(), 0);
}

#[test]
fn a_poisoned_record_producer_refuses_every_push() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Records, 4096, 1024).unwrap());
    let mut tx = RecordProducer::new(mem.clone()).unwrap();
    // 42 records of 96 bytes leave 64 free: the next push must look at read_pos.
    for _ in 0..42 {
        assert!(tx.push(1, 1, 0, &[7; 64]).unwrap().stored);
    }
    // The consumer's position runs ahead of everything written: the next look poisons.
    scribble(&mem, READ_POS, 1 << 50);
    assert_eq!(
        tx.push(1, 1, 0, &[7; 64]).unwrap_err(),
        Poison::PositionPastCapacity
    );
    // An oversized record, which is dropped without looking at the ring, must fail too and
    // must not touch the shared drop counters.
    let counters = mem_counters(&mem);
    assert_eq!(
        tx.push(1, 1, 0, &[7; 2000]).unwrap_err(),
        Poison::PositionPastCapacity
    );
    assert_eq!(mem_counters(&mem), counters);
}

/// The producer's drop counters (header words 25 and 26), read through a second mapping.
fn mem_counters(mem: &RingMemory) -> (u64, u64) {
    let fd: OwnedFd = mem.fd().try_clone_to_owned().unwrap();
    let file = std::fs::File::from(fd);
    let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
    // SAFETY: both words are inside the header of a live mapping.
    unsafe {
        let p = map.as_ptr().cast::<u64>();
        (p.add(25).read_volatile(), p.add(26).read_volatile())
    }
}

/// A sealed memfd of `len` bytes (sparse: nothing is allocated).
fn sealed_memfd(len: u64) -> OwnedFd {
    use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create("big", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    ftruncate(&fd, len).unwrap();
    fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL).unwrap();
    fd
}

#[test]
fn a_huge_sealed_region_is_refused_by_its_size_before_it_is_mapped() {
    // 64 GiB: mapping it with MAP_POPULATE would try to fault in all of it.
    let err = RingMemory::open(sealed_memfd(64 << 30), RingKind::Bytes).unwrap_err();
    assert!(
        matches!(err, RingError::RegionSize(n) if n == 64 << 30),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("68719476736 bytes") && msg.contains("1 GiB"),
        "{msg}"
    );
    // Sizes no ring has: too small for a data area, not a power of two, past 1 GiB.
    for len in [0, 256, 256 + 2048, 256 + 4096 + 1, 256 + (2 << 30)] {
        assert!(
            matches!(
                RingMemory::open(sealed_memfd(len), RingKind::Bytes),
                Err(RingError::RegionSize(n)) if n == len
            ),
            "{len}"
        );
    }
}

#[test]
fn consuming_more_than_the_last_peek_stops_the_ring() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    tx.write(&[1; 100]).unwrap();
    // Nothing peeked yet.
    assert_eq!(rx.consume(1).unwrap_err(), Poison::ConsumedUnpeeked);
    assert_eq!(rx.position(), 0);

    let mut rx = ByteConsumer::new(mem).unwrap();
    let mut buf = [0u8; 60];
    assert_eq!(rx.peek(&mut buf).unwrap().bytes, 60);
    // Part of a peek, then the rest of it: fine.
    assert!(matches!(
        rx.consume(20).unwrap(),
        shm_ring::Consumed::Done { .. }
    ));
    assert!(matches!(
        rx.consume(40).unwrap(),
        shm_ring::Consumed::Done { .. }
    ));
    // One byte more than was peeked: refused, and the position stays.
    assert_eq!(rx.consume(1).unwrap_err(), Poison::ConsumedUnpeeked);
    assert_eq!(rx.position(), 60);
}

#[test]
fn attaching_while_a_flight_recorder_laps_the_ring_never_sees_a_poisoned_ring() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let writes = Arc::new(AtomicU64::new(0));
    const WRITES: u64 = 50_000;
    let writer = {
        let writes = writes.clone();
        std::thread::spawn(move || {
            // Writes larger than the ring move read_pos past the old write_pos.
            let big = vec![9u8; 6000];
            for n in 0..WRITES {
                tx.write_overwriting(&big[..1000 + (n as usize * 977) % 5000])
                    .unwrap();
                writes.store(n + 1, Relaxed);
            }
        })
    };
    let mut attaches = 0u64;
    while writes.load(Relaxed) < WRITES || attaches < 1000 {
        ByteConsumer::new(mem.clone()).expect("a healthy ring must attach");
        attaches += 1;
    }
    writer.join().unwrap();
}
