//! The transports compared in §A, behind one writer/reader pair of traits so that every
//! measurement runs the same loop over each of them (monomorphised, no dynamic dispatch).

// Thin wrappers over ring ends and queues for the timed loops; nothing here is printed.
#![allow(missing_debug_implementations)]

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use rustix::io::Errno;
use shm_ring::{
    byte_ring_pair, ByteConsumer, ByteProducer, RecordConsumer, RecordProducer, RingKind,
    RingMemory,
};

/// Payload sizes of §A: one byte, a line, 10 ms of 48 kHz stereo s16, a page.
pub const PAYLOADS: [usize; 4] = [1, 64, 1920, 4096];
/// Ring capacity for every ring-shaped variant.
pub const RING_BYTES: usize = 1 << 20;

/// The producing end.
pub trait Writer: Send {
    /// Takes as much of `payload` as fits; returns the bytes taken (0: full).
    fn write(&mut self, payload: &[u8]) -> usize;
}

/// The consuming end.
pub trait Reader: Send {
    /// Copies out what is ready (up to `buf.len()`); returns the bytes copied (0: empty).
    fn read(&mut self, buf: &mut [u8]) -> usize;
}

/// A transport: how to make a connected writer and reader.
pub trait Pair {
    /// Name in reports.
    const NAME: &'static str;
    /// The producing end.
    type Tx: Writer;
    /// The consuming end.
    type Rx: Reader;
    /// A fresh, empty transport.
    fn pair() -> (Self::Tx, Self::Rx);
}

/// shm-ring byte ring in a memfd, 1 MiB.
pub struct ShmBytes;

/// The byte ring's producer, counting the doorbell rings it would owe (never, here).
pub struct ShmTx {
    pub tx: ByteProducer,
    pub rings: u64,
}

impl Writer for ShmTx {
    #[inline]
    fn write(&mut self, payload: &[u8]) -> usize {
        let w = self.tx.write(payload).expect("ring poisoned");
        if w.wake_consumer {
            self.rings += 1;
        }
        w.bytes
    }
}

impl Reader for ByteConsumer {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> usize {
        ByteConsumer::read(self, buf).expect("ring poisoned").bytes
    }
}

impl Pair for ShmBytes {
    const NAME: &'static str = "shm-ring";
    type Tx = ShmTx;
    type Rx = ByteConsumer;
    fn pair() -> (ShmTx, ByteConsumer) {
        let mem = RingMemory::create("bench-bytes", RingKind::Bytes, RING_BYTES as u64, 0)
            .expect("create ring");
        let (tx, rx) = byte_ring_pair(mem).expect("ring pair");
        (ShmTx { tx, rings: 0 }, rx)
    }
}

/// shm-ring record ring in a memfd, 1 MiB, records up to 4 KiB.
pub struct ShmRecords;

/// The record ring's producer (drops the record when full, which the benches never cause).
pub struct RecTx(RecordProducer);
/// The record ring's consumer with its payload buffer.
pub struct RecRx(RecordConsumer, Vec<u8>);

impl Writer for RecTx {
    #[inline]
    fn write(&mut self, payload: &[u8]) -> usize {
        let p = self.0.push(1, 0, 0, payload).expect("ring poisoned");
        if p.stored {
            payload.len()
        } else {
            0
        }
    }
}

impl Reader for RecRx {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> usize {
        // The payload lands in the consumer's own buffer (one copy, like the other variants).
        let _ = buf;
        match self.0.pop(&mut self.1).expect("ring poisoned") {
            Some(_) => self.1.len(),
            None => 0,
        }
    }
}

impl Pair for ShmRecords {
    const NAME: &'static str = "shm-ring-records";
    type Tx = RecTx;
    type Rx = RecRx;
    fn pair() -> (RecTx, RecRx) {
        let mem = Arc::new(
            RingMemory::create("bench-records", RingKind::Records, RING_BYTES as u64, 4096)
                .expect("create ring"),
        );
        let tx = RecordProducer::new(mem.clone()).expect("producer");
        let rx = RecordConsumer::new(mem).expect("consumer");
        (RecTx(tx), RecRx(rx, Vec::with_capacity(4096)))
    }
}

/// rtrb `RingBuffer<u8>`, 1 MiB, slices copied in and out.
pub struct Rtrb;

impl Writer for rtrb::Producer<u8> {
    #[inline]
    fn write(&mut self, payload: &[u8]) -> usize {
        self.push_partial_slice(payload).0.len()
    }
}

impl Reader for rtrb::Consumer<u8> {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> usize {
        self.pop_partial_slice(buf).0.len()
    }
}

impl Pair for Rtrb {
    const NAME: &'static str = "rtrb";
    type Tx = rtrb::Producer<u8>;
    type Rx = rtrb::Consumer<u8>;
    fn pair() -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(RING_BYTES)
    }
}

/// `crossbeam_queue::ArrayQueue` of 4 KiB chunks, allocated once: the producer takes an
/// empty chunk from a free queue, fills it and queues it; the consumer copies it out and
/// returns it. 256 chunks, so the same 1 MiB as the rings.
pub struct ArrayQueueChunks;

const CHUNK: usize = 4096;

/// Producer: the full and free queues.
pub struct AqTx {
    full: Arc<ArrayQueue<Vec<u8>>>,
    free: Arc<ArrayQueue<Vec<u8>>>,
}
/// Consumer: the same two queues, other roles.
pub struct AqRx {
    full: Arc<ArrayQueue<Vec<u8>>>,
    free: Arc<ArrayQueue<Vec<u8>>>,
}

impl Writer for AqTx {
    #[inline]
    fn write(&mut self, payload: &[u8]) -> usize {
        let Some(mut chunk) = self.free.pop() else {
            return 0;
        };
        let n = payload.len().min(CHUNK);
        chunk.clear();
        chunk.extend_from_slice(&payload[..n]);
        if self.full.push(chunk).is_err() {
            unreachable!("more chunks than queue slots");
        }
        n
    }
}

impl Reader for AqRx {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> usize {
        let Some(chunk) = self.full.pop() else {
            return 0;
        };
        // Chunks are whole messages: the drain buffers are at least one chunk large.
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        let _ = self.free.push(chunk);
        n
    }
}

impl Pair for ArrayQueueChunks {
    const NAME: &'static str = "arrayqueue";
    type Tx = AqTx;
    type Rx = AqRx;
    fn pair() -> (AqTx, AqRx) {
        let slots = RING_BYTES / CHUNK;
        let full = Arc::new(ArrayQueue::new(slots));
        let free = Arc::new(ArrayQueue::new(slots));
        for _ in 0..slots {
            let _ = free.push(Vec::with_capacity(CHUNK));
        }
        (
            AqTx {
                full: full.clone(),
                free: free.clone(),
            },
            AqRx { full, free },
        )
    }
}

/// A unix `SOCK_STREAM` socketpair, non-blocking, default buffer sizes: what QEMU's socket
/// chardev pays per write.
pub struct SocketPair;

/// One end of the socketpair.
pub struct Sock(OwnedFd);

impl Writer for Sock {
    #[inline]
    fn write(&mut self, payload: &[u8]) -> usize {
        loop {
            match rustix::io::write(&self.0, payload) {
                Ok(n) => return n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return 0,
                Err(e) => panic!("socket write: {e}"),
            }
        }
    }
}

impl Reader for Sock {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> usize {
        loop {
            match rustix::io::read(&self.0, &mut *buf) {
                Ok(n) => return n,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return 0,
                Err(e) => panic!("socket read: {e}"),
            }
        }
    }
}

impl Pair for SocketPair {
    const NAME: &'static str = "socketpair";
    type Tx = Sock;
    type Rx = Sock;
    fn pair() -> (Sock, Sock) {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair");
        (Sock(a), Sock(b))
    }
}
