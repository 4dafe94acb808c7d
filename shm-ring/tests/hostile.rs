//! A peer that scribbles over the ring header or hands over a bad region: the other side
//! must poison the ring or refuse it, never panic or read out of bounds.
// Needs memfds, mmap and processes, which Miri cannot run.
#![cfg(not(any(loom, miri)))]

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
const DISCARD_FLOOR: usize = 192;
const PRODUCER_WAITS: usize = 200;
const CONSUMER_SLEEPS: usize = 208;

#[test]
fn write_position_moving_backwards_poisons_the_consumer() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    tx.write(&[1; 100]).unwrap();
    let mut buf = [0u8; 50];
    rx.read(&mut buf).unwrap();
    // The consumer looks at the producer's position again once its cached copy says empty.
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
fn a_discard_floor_above_the_write_position_poisons_the_consumer_with_its_reason() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    tx.write(&[1; 100]).unwrap();
    let mut buf = vec![0u8; 8192];
    assert_eq!(rx.read(&mut buf).unwrap().bytes, 100);
    // A floor 1 TiB past anything published, with a write position far enough ahead for
    // the consumer to consult the floor: the bytes in between were never written, and must
    // not be reported as lost.
    scribble(&mem, DISCARD_FLOOR, 1 << 40);
    scribble(&mem, WRITE_POS, 100 + 3 * 4096);
    let err = rx.read(&mut buf).unwrap_err();
    assert_eq!(err, Poison::FloorPastWrite);
    assert!(
        err.to_string().contains("past its own write position"),
        "{err}"
    );
    assert_eq!(rx.position(), 100, "the consumer did not jump");
    // A consumer attaching to such a ring refuses it.
    let err = ByteConsumer::new(mem.clone()).unwrap_err();
    assert!(
        matches!(err, RingError::Poisoned(Poison::FloorPastWrite)),
        "{err}"
    );
}

#[test]
fn a_flight_recorder_write_larger_than_the_ring_keeps_its_floor_at_a_published_position() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    tx.write(&[1; 100]).unwrap();
    let big: Vec<u8> = (0..3 * 4096 + 50).map(|i| (i % 251) as u8).collect();
    let w = tx.write_overwriting(&big).unwrap();
    assert_eq!((w.bytes, w.dropped), (big.len(), 100 + 2 * 4096 + 50));
    // The consumer that was there and one attaching now both start at the floor and read
    // exactly the last capacity of the write (the one that was there counts what it lost;
    // the new one sees it in the position).
    let skipped = 100 + 2 * 4096 + 50;
    let mut fresh = ByteConsumer::new(mem.clone()).expect("an honest ring attaches");
    for (c, lost) in [(&mut rx, skipped), (&mut fresh, 0)] {
        let mut buf = vec![0u8; 8192];
        let r = c.read(&mut buf).unwrap();
        assert_eq!((r.lost, r.position, r.bytes), (lost, skipped, 4096));
        assert_eq!(&buf[..4096], &big[big.len() - 4096..]);
    }
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
fn a_region_of_another_layout_version_is_refused_saying_which_side_to_upgrade() {
    for (version, upgrade) in [
        (1u64, "the peer is older; upgrade it"),
        (3, "this program is older; upgrade it"),
    ] {
        let mem = RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap();
        // The version (u32 at offset 8) and the kind (u32 at 12, 1 = bytes).
        scribble(&mem, 8, version | 1 << 32);
        let err = reopen(&mem, RingKind::Bytes).unwrap_err();
        assert!(
            matches!(err, RingError::LayoutVersion { found, ours: 2 } if u64::from(found) == version),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "ring layout version {version}, this side uses version 2"
            )) && msg.contains(upgrade),
            "{msg}"
        );
    }
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
fn bytes_peeked_before_an_overwrite_stay_valid_and_a_later_copy_counts_the_discarded() {
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem).unwrap();
    tx.write(&[1; 4000]).unwrap();
    let mut buf = vec![0u8; 4096];
    let p = rx.peek(&mut buf).unwrap();
    assert_eq!((p.bytes, p.position, p.lost), (4000, 0, 0));
    assert!(buf[..4000].iter().all(|&b| b == 1));
    // The flight recorder gives up positions below 904 and overwrites their slots.
    assert_eq!(tx.write_overwriting(&[2; 1000]).unwrap().dropped, 904);
    // The copy was checked against the discard floor when it was made: it holds the
    // stream's bytes, and consuming it is fine.
    assert_eq!(
        rx.consume(p.bytes).unwrap(),
        shm_ring::Consumed {
            wake_producer: false
        }
    );
    let p = rx.peek(&mut buf).unwrap();
    assert_eq!((p.bytes, p.position, p.lost), (1000, 4000, 0));
    assert!(buf[..1000].iter().all(|&b| b == 2));
    rx.consume(p.bytes).unwrap();

    // A copy made after an overwrite starts at the floor and reports the bytes before it.
    tx.write(&[3; 3000]).unwrap();
    tx.write_overwriting(&[4; 2000]).unwrap();
    let p = rx.peek(&mut buf).unwrap();
    assert_eq!((p.lost, p.position, p.bytes), (904, 5904, 4096));
    assert!(buf[..2096].iter().all(|&b| b == 3));
    assert!(buf[2096..4096].iter().all(|&b| b == 4));
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

/// The producer's drop counters (header words 10 and 11), read through a second mapping.
fn mem_counters(mem: &RingMemory) -> (u64, u64) {
    let fd: OwnedFd = mem.fd().try_clone_to_owned().unwrap();
    let file = std::fs::File::from(fd);
    let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
    // SAFETY: both words are inside the header of a live mapping.
    unsafe {
        let p = map.as_ptr().cast::<u64>();
        (p.add(10).read_volatile(), p.add(11).read_volatile())
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
    assert!(!rx.consume(20).unwrap().wake_producer);
    assert!(!rx.consume(40).unwrap().wake_producer);
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

/// The longest a single call took, and how many calls there were before the ring was
/// poisoned (or the budget ran out).
struct Calls {
    longest: std::time::Duration,
    calls: u64,
    poisoned: Option<Poison>,
}

fn timed<T>(calls: &mut Calls, f: impl FnOnce() -> Result<T, Poison>) -> Option<T> {
    let t = std::time::Instant::now();
    let r = f();
    calls.longest = calls.longest.max(t.elapsed());
    calls.calls += 1;
    match r {
        Ok(v) => Some(v),
        Err(p) => {
            calls.poisoned = Some(p);
            None
        }
    }
}

#[test]
fn a_hostile_thread_flipping_flags_and_nudging_positions_never_makes_a_call_hang() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    const FLAG: u64 = 1 << 63;
    const BUDGET: u64 = 200_000;
    let mem = Arc::new(RingMemory::create("h", RingKind::Bytes, 4096, 0).unwrap());
    let mut tx = ByteProducer::new(mem.clone()).unwrap();
    let mut rx = ByteConsumer::new(mem.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = {
        let stop = stop.clone();
        let file = std::fs::File::from(mem.fd().try_clone_to_owned().unwrap());
        std::thread::spawn(move || {
            let map = memmap2::MmapOptions::new().map_raw(&file).unwrap();
            // SAFETY: the words are 8-byte aligned and inside the live mapping; every
            // access to them in this process is atomic.
            let word =
                |off: usize| unsafe { AtomicU64::from_ptr(map.as_mut_ptr().add(off).cast()) };
            let (w, r, f) = (word(WRITE_POS), word(READ_POS), word(DISCARD_FLOOR));
            let (pw, cs) = (word(PRODUCER_WAITS), word(CONSUMER_SLEEPS));
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                w.fetch_xor(FLAG, Relaxed);
                r.fetch_xor(FLAG, Relaxed);
                pw.fetch_xor(FLAG, Relaxed);
                cs.fetch_add(1, Relaxed);
                i += 1;
                if i % 4096 == 0 {
                    // Now and then a nudge of a position (forwards, as progress would).
                    r.fetch_add(1, Relaxed);
                    f.fetch_add(1, Relaxed);
                }
            }
        })
    };
    let producer = std::thread::spawn(move || {
        let mut c = Calls {
            longest: Default::default(),
            calls: 0,
            poisoned: None,
        };
        let data = [7u8; 300];
        while c.calls < BUDGET && c.poisoned.is_none() {
            match c.calls % 3 {
                0 => timed(&mut c, || tx.write(&data).map(drop)),
                1 => timed(&mut c, || tx.space_or_arm(200, || {}).map(drop)),
                _ => timed(&mut c, || tx.write_overwriting(&data[..100]).map(drop)),
            };
        }
        c
    });
    let consumer = std::thread::spawn(move || {
        let mut c = Calls {
            longest: Default::default(),
            calls: 0,
            poisoned: None,
        };
        let mut buf = [0u8; 512];
        while c.calls < BUDGET && c.poisoned.is_none() {
            match c.calls % 3 {
                0 => {
                    timed(&mut c, || rx.read(&mut buf).map(drop));
                }
                1 => {
                    if let Some(r) = timed(&mut c, || rx.peek(&mut buf)) {
                        timed(&mut c, || rx.consume(r.bytes).map(drop));
                    }
                }
                _ => {
                    timed(&mut c, || rx.prepare_sleep().map(drop));
                }
            }
        }
        c
    });
    let (p, c) = (producer.join().unwrap(), consumer.join().unwrap());
    stop.store(true, Relaxed);
    hostile.join().unwrap();
    // Every call returned; a hang would never get here, a livelock would show as a call
    // lasting seconds (the bound is generous: the machine may be loaded).
    for (side, calls) in [("producer", &p), ("consumer", &c)] {
        assert!(
            calls.longest < std::time::Duration::from_secs(10),
            "{side}: a call took {:?}",
            calls.longest
        );
        assert!(calls.calls > 0, "{side} made no call");
    }
    eprintln!(
        "producer: {} calls, longest {:?}, {:?}; consumer: {} calls, longest {:?}, {:?}",
        p.calls, p.longest, p.poisoned, c.calls, c.longest, c.poisoned
    );
}
