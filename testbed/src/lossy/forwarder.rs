//! One direction of the link: a thread that reads packets from one TUN device and writes
//! them to the other after loss, cut, rate limit and delay.

use super::*;

/// splitmix64: small, fast, and deterministic for a seed.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1e9).
    pub(super) fn next_ppb(&mut self) -> u32 {
        (((self.next_u64() >> 32) * 1_000_000_000) >> 32) as u32
    }

    /// Uniform in [-1, 1).
    pub(super) fn next_signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

pub(super) struct Queued {
    due: Instant,
    len: usize,
    buf: Box<[u8; SLOT]>,
}

pub(super) struct Forwarder {
    dir: Dir,
    shared: Arc<Shared>,
    src: Arc<File>,
    dst: Arc<File>,
    delay: Duration,
    jitter_ns: f64,
    /// Nanoseconds per byte at the rate limit; 0 when unlimited.
    ns_per_byte: f64,
    /// Most backlog the rate limit holds.
    max_backlog: Duration,
    loss_rng: Rng,
    jitter_rng: Rng,
    queue: VecDeque<Queued>,
    /// Boxed so a buffer moves between the queue and this list without copying its bytes.
    #[allow(clippy::vec_box)]
    free: Vec<Box<[u8; SLOT]>>,
    last_due: Instant,
    link_free: Instant,
}

impl Forwarder {
    pub(super) fn new(
        dir: Dir,
        spec: &LinkSpec,
        shared: Arc<Shared>,
        src: Arc<File>,
        dst: Arc<File>,
    ) -> Forwarder {
        let salt = match dir {
            Dir::AToB => 0x0a0b,
            Dir::BToA => 0x0b0a,
        };
        let ns_per_byte = if spec.rate_mbit > 0.0 {
            8000.0 / spec.rate_mbit
        } else {
            0.0
        };
        let max_backlog = if spec.rate_mbit > 0.0 {
            let bytes_100ms = spec.rate_mbit * 1e6 / 8.0 / 10.0;
            Duration::from_nanos((bytes_100ms.max(65536.0) * ns_per_byte) as u64)
        } else {
            Duration::ZERO
        };
        let now = Instant::now();
        Forwarder {
            dir,
            shared,
            src,
            dst,
            delay: Duration::from_secs_f64(spec.delay_ms.max(0.0) / 1000.0),
            jitter_ns: spec.jitter_ms.max(0.0) * 1e6,
            ns_per_byte,
            max_backlog,
            loss_rng: Rng(spec.seed ^ (salt << 48)),
            jitter_rng: Rng(spec.seed.rotate_left(17) ^ (salt << 32) ^ 0x5eed),
            queue: VecDeque::with_capacity(1024),
            free: Vec::new(),
            last_due: now,
            link_free: now,
        }
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.shared.counters[self.dir as usize]
    }

    pub(super) fn run(mut self) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.release_due();
            let got = self.read_batch();
            if got == 0 {
                let timeout = match self.queue.front() {
                    Some(q) => q
                        .due
                        .saturating_duration_since(Instant::now())
                        .min(IDLE_POLL),
                    None => IDLE_POLL,
                };
                if !timeout.is_zero() {
                    poll_readable(self.src.as_raw_fd(), timeout);
                }
            }
        }
    }

    /// Writes every packet whose time has come.
    pub(super) fn release_due(&mut self) {
        let now = Instant::now();
        let cut = self.shared.cut.load(Ordering::Relaxed);
        while self.queue.front().is_some_and(|q| q.due <= now) {
            let q = self.queue.pop_front().expect("front exists");
            let c = &self.shared.counters[self.dir as usize];
            if cut {
                c.dropped_cut.fetch_add(1, Ordering::Relaxed);
            } else {
                // SAFETY: `q.buf` holds at least `q.len` initialised bytes; `dst` is an open TUN.
                let n = unsafe { libc::write(self.dst.as_raw_fd(), q.buf.as_ptr().cast(), q.len) };
                if n == q.len as isize {
                    c.forwarded.fetch_add(1, Ordering::Relaxed);
                    c.forwarded_bytes.fetch_add(q.len as u64, Ordering::Relaxed);
                } else {
                    c.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.free.push(q.buf);
        }
    }

    /// Reads up to a batch of packets and queues or drops each; returns how many were read.
    pub(super) fn read_batch(&mut self) -> usize {
        let mut got = 0;
        while got < READ_BATCH {
            let mut buf = self.free.pop().unwrap_or_else(|| Box::new([0u8; SLOT]));
            // SAFETY: `buf` is SLOT writable bytes; `src` is an open non-blocking TUN.
            let n = unsafe { libc::read(self.src.as_raw_fd(), buf.as_mut_ptr().cast(), SLOT) };
            if n <= 0 {
                self.free.push(buf);
                break;
            }
            got += 1;
            let len = n as usize;
            let now = Instant::now();
            self.counters().received.fetch_add(1, Ordering::Relaxed);
            if self.shared.cut.load(Ordering::Relaxed) {
                self.counters().dropped_cut.fetch_add(1, Ordering::Relaxed);
                self.free.push(buf);
                continue;
            }
            let loss = self.shared.loss_ppb[self.dir as usize].load(Ordering::Relaxed);
            if loss > 0 && self.loss_rng.next_ppb() < loss {
                self.counters().dropped_loss.fetch_add(1, Ordering::Relaxed);
                self.free.push(buf);
                continue;
            }
            // Rate limit: the packet leaves the "wire" once the packets before it have.
            let mut depart = now;
            if self.ns_per_byte > 0.0 {
                let start = self.link_free.max(now);
                if start - now > self.max_backlog || self.queue.len() >= MAX_QUEUED {
                    self.counters()
                        .dropped_queue
                        .fetch_add(1, Ordering::Relaxed);
                    self.free.push(buf);
                    continue;
                }
                depart = start + Duration::from_nanos((len as f64 * self.ns_per_byte) as u64);
                self.link_free = depart;
            } else if self.queue.len() >= MAX_QUEUED {
                self.counters()
                    .dropped_queue
                    .fetch_add(1, Ordering::Relaxed);
                self.free.push(buf);
                continue;
            }
            let mut due = depart + self.delay;
            if self.jitter_ns > 0.0 {
                let offset = self.jitter_rng.next_signed_unit() * self.jitter_ns;
                due = if offset >= 0.0 {
                    due + Duration::from_nanos(offset as u64)
                } else {
                    due.checked_sub(Duration::from_nanos((-offset) as u64))
                        .unwrap_or(depart)
                        .max(depart)
                };
            }
            // No reordering: never ahead of the packet before.
            due = due.max(self.last_due);
            self.last_due = due;
            self.queue.push_back(Queued { due, len, buf });
        }
        got
    }
}

/// Waits until `fd` is readable or `timeout` passes (microsecond resolution).
pub(super) fn poll_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfd` and `ts` are valid for the call; a null sigmask leaves the mask unchanged.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}
