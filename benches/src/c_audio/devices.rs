//! The fake devices of scenario C: registered with the in-process ringcastd through its
//! real socket, the way the backend does, and written from threads of this process.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testbed::devices::{FakeAudio, FakeConsole};

use super::{mono_ns, AUDIO_DEV, CONSOLE_DEV, RATE, VM};

/// The longest period the producer writes (10 ms at 48 kHz).
pub(crate) const MAX_FRAMES: u32 = 480;

/// The audio producer: a thread pushing one stamped period of `frames` frames (read before
/// each period, so the period length can change between runs) every `frames / 48 kHz` until
/// stopped. Returns (periods pushed, periods the ring refused).
pub(crate) fn start_audio(
    socket: &Path,
    frames: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<(u64, u64)>, String> {
    // testbed's audio device is 48 kHz stereo s16, as RATE says.
    const _: () = assert!(RATE == 48_000);
    let mut dev = FakeAudio::try_new(socket, VM, AUDIO_DEV)?;
    Ok(std::thread::spawn(move || {
        let pcm: Vec<u8> = (0..MAX_FRAMES * 4).map(|i| i as u8).collect();
        let (mut pushed, mut refused) = (0u64, 0u64);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = frames.load(Ordering::Relaxed).clamp(1, MAX_FRAMES);
            next += Duration::from_nanos(u64::from(n) * 1_000_000_000 / u64::from(RATE));
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_millis(100) {
                // Far behind (the machine stalled): start the schedule again from now.
                next = now;
            }
            match dev.try_push_pcm(mono_ns(), n, &pcm[..n as usize * 4]) {
                Ok(stored) => {
                    pushed += 1;
                    refused += u64::from(!stored);
                }
                Err(_) => break,
            }
        }
        (pushed, refused)
    }))
}

/// The console flood: writes as fast as the ring takes bytes while `on` is set.
pub(crate) fn start_flood(
    socket: &Path,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<u64>, String> {
    let mut dev = FakeConsole::try_new(socket, VM, CONSOLE_DEV, 1, 1 << 20)?;
    dev.try_connect()?;
    Ok(std::thread::spawn(move || {
        // The whole device moves into the thread: a closure capturing only the fields it
        // uses would drop the registration socket here, and ringcastd would see QEMU go.
        let mut dev = dev;
        let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| b' ' + (i % 95) as u8).collect();
        let mut written = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if !on.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let Ok(w) = dev.tx.write(&chunk) else { break };
            written += w.bytes as u64;
            if w.wake_consumer {
                dev.out_data.ring();
            }
            let out_space = &dev.out_space;
            if w.bytes == 0
                && !dev
                    .tx
                    .space_or_arm(1, || {
                        out_space.drain();
                    })
                    .unwrap_or(true)
            {
                dev.out_space.wait(50);
            }
        }
        written
    }))
}
