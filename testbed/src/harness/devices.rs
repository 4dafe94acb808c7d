//! A character device with its fake frontend, and an audio device, as QEMU would drive them.

use super::*;

/// The emulated guest side of a character device: how much input it can take, and what it
/// received.
#[derive(Debug, Default)]
pub struct FakeFrontend {
    /// Bytes the "guest" can take now (what `can_write` answers).
    pub room: Cell<usize>,
    /// Input handed to the "guest".
    pub received: RefCell<Vec<u8>>,
    /// Set if the plugin ever wrote more than `room`.
    pub overflowed: Cell<bool>,
}

pub(super) unsafe extern "C" fn fe_can_write(opaque: *mut c_void) -> usize {
    // SAFETY: opaque is the FakeFrontend boxed in the Chardev, alive while it is open.
    unsafe { &*(opaque as *const FakeFrontend) }.room.get()
}

pub(super) unsafe extern "C" fn fe_write(opaque: *mut c_void, buf: *const u8, len: usize) {
    // SAFETY: as above; the plugin passes `len` readable bytes.
    let fe = unsafe { &*(opaque as *const FakeFrontend) };
    // SAFETY: as above.
    let data = unsafe { std::slice::from_raw_parts(buf, len) };
    if len > fe.room.get() {
        fe.overflowed.set(true);
    }
    fe.room.set(fe.room.get().saturating_sub(len));
    fe.received.borrow_mut().extend_from_slice(data);
}

/// How a [`Chardev::write_all`] went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Times the ring was full and the writer waited on the plugin's wait fd.
    pub waits: u64,
    /// Times `write_ready` said yes but the write then took nothing (must stay 0: QEMU's
    /// 16550 drops a byte after four such retries).
    pub spurious_ready: u64,
}

/// An open character device.
#[derive(Debug)]
pub struct Chardev {
    pub(super) ops: &'static QbpChardevOps,
    pub(super) chr: *mut QbpChardev,
    /// The emulated frontend.
    pub frontend: Box<FakeFrontend>,
    pub(super) _fe_table: Box<QbpChardevFrontend>,
}

impl Chardev {
    /// One `chr_write` call, as a frontend makes it.
    pub fn write(&self, data: &[u8]) -> i32 {
        // SAFETY: chr is open; data is valid for its length.
        unsafe { (self.ops.write.unwrap())(self.chr, data.as_ptr(), data.len()) }
    }

    /// The readiness check QEMU's watch makes in prepare/check.
    pub fn write_ready(&self) -> bool {
        // SAFETY: chr is open.
        unsafe { (self.ops.write_ready.unwrap())(self.chr) }
    }

    /// The fd QEMU's watch polls while not ready.
    pub fn wait_fd(&self) -> i32 {
        // SAFETY: chr is open.
        unsafe { (self.ops.write_wait_fd.unwrap())(self.chr) }
    }

    /// The frontend took input and can take more.
    pub fn accept_input(&self) {
        // SAFETY: chr is open.
        unsafe { (self.ops.accept_input.unwrap())(self.chr) }
    }

    /// Writes everything the way QEMU's serial/virtio frontends do: write, and on a short
    /// write wait on a watch (prepare/check = `write_ready`, poll on `wait_fd`) before
    /// retrying, while the main loop keeps running. Fails after `timeout`.
    pub fn write_all(
        &self,
        lp: &MainLoop,
        mut data: &[u8],
        timeout: Duration,
    ) -> Result<WriteStats, String> {
        let deadline = Instant::now() + timeout;
        let mut stats = WriteStats::default();
        while !data.is_empty() {
            let n = self.write(data);
            if n < 0 {
                return Err(format!("chr_write failed: {n}"));
            }
            data = &data[n as usize..];
            if n > 0 {
                continue;
            }
            stats.waits += 1;
            loop {
                if self.write_ready() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("still full after {timeout:?}"));
                }
                lp.run_once(Duration::from_millis(100), &[self.wait_fd()]);
            }
            let n = self.write(data);
            if n <= 0 {
                stats.spurious_ready += 1;
                continue;
            }
            data = &data[n as usize..];
        }
        Ok(stats)
    }
}

impl Drop for Chardev {
    fn drop(&mut self) {
        // SAFETY: chr is open and closed exactly once.
        unsafe { (self.ops.close.unwrap())(self.chr) }
    }
}

/// An open audio device.
#[derive(Debug)]
pub struct Audio {
    pub(super) ops: &'static QbpAudioOps,
    pub(super) a: *mut QbpAudio,
}

/// QEMU's default audio format for a plugin audiodev (mixing engine, fixed settings).
pub const S16_STEREO_44100: QbpAudioFormat = QbpAudioFormat {
    frequency: 44100,
    channels: 2,
    sample_format: QBP_FMT_S16,
    big_endian: 0,
    reserved: [0; 7],
};

impl Audio {
    /// Opens the output voice.
    pub fn out_open(&self, format: &QbpAudioFormat) -> i32 {
        // SAFETY: `a` is open; format is valid during the call.
        unsafe { (self.ops.out_open.unwrap())(self.a, format) }
    }

    /// Enables or disables the output voice.
    pub fn out_enable(&self, on: bool) {
        // SAFETY: `a` is open.
        unsafe { (self.ops.out_enable.unwrap())(self.a, on) }
    }

    /// Whether the table offers input voices with every operation QEMU requires of them
    /// (`audio/pluginaudio.c`: in_open set means in_close, in_enable and in_read set too).
    pub fn has_input(&self) -> bool {
        let o = self.ops;
        o.in_open.is_some() && o.in_close.is_some() && o.in_enable.is_some() && o.in_read.is_some()
    }

    /// Opens the input voice (0 or -errno).
    pub fn in_open(&self, format: &QbpAudioFormat) -> i32 {
        // SAFETY: `a` is open; format is valid during the call.
        unsafe { (self.ops.in_open.unwrap())(self.a, format) }
    }

    /// Enables or disables the input voice.
    pub fn in_enable(&self, on: bool) {
        // SAFETY: `a` is open.
        unsafe { (self.ops.in_enable.unwrap())(self.a, on) }
    }

    /// Asks for up to `buf.len()` bytes of captured audio, as QEMU's audio timer does.
    pub fn in_read(&self, buf: &mut [u8]) -> usize {
        // SAFETY: `a` is open; buf is writable for its length.
        unsafe { (self.ops.in_read.unwrap())(self.a, buf.as_mut_ptr().cast(), buf.len()) }
    }

    /// Closes the input voice.
    pub fn in_close(&self) {
        // SAFETY: `a` is open.
        unsafe { (self.ops.in_close.unwrap())(self.a) }
    }

    /// Hands one period over, as QEMU's audio timer does.
    pub fn out_write(&self, data: &[u8]) -> usize {
        // SAFETY: `a` is open; data valid for its length.
        unsafe { (self.ops.out_write.unwrap())(self.a, data.as_ptr().cast(), data.len()) }
    }

    /// Plays `periods` periods of `period` length in real time, one every `every`, keeping
    /// the main loop running in between (QEMU's 10 ms audio timer).
    pub fn play_paced(
        &self,
        lp: &MainLoop,
        periods: usize,
        every: Duration,
        mut period: impl FnMut(usize) -> Vec<u8>,
    ) {
        let start = Instant::now();
        for i in 0..periods {
            let due = start + every * i as u32;
            while Instant::now() < due {
                lp.run_once(due - Instant::now(), &[]);
            }
            let data = period(i);
            assert_eq!(
                self.out_write(&data),
                data.len(),
                "audio must take everything"
            );
        }
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        // SAFETY: `a` is open and closed exactly once.
        unsafe { (self.ops.close.unwrap())(self.a) }
    }
}
