//! `ringcast mic` without a file or a tone: the client's own sound input, read from ALSA
//! (`default`, or `--device NAME`) at the guest's rate and channel count, on a thread of
//! its own. The device is the clock: each read waits for the next 10 ms it recorded.

/// A sound input being read.
#[cfg(feature = "sound-card")]
pub use alsa_input::Capture;

/// Without the `sound-card` feature there is no sound input to read.
#[cfg(not(feature = "sound-card"))]
pub use unavailable::Capture;

#[cfg(not(feature = "sound-card"))]
mod unavailable {
    /// Never made: this build has no sound input.
    pub struct Capture(());

    impl Capture {
        pub fn open(_device: &str, _rate: u32, _channels: u16) -> anyhow::Result<Capture> {
            anyhow::bail!(
                "this ringcast was built without sound-card support (cargo feature \
                 `sound-card`), so `ringcast mic` needs --wav FILE, --raw FILE or --tone HZ"
            )
        }

        pub fn next(&mut self, _frames: usize, out: &mut Vec<f32>) {
            out.clear();
        }
    }
}

#[cfg(feature = "sound-card")]
mod alsa_input {
    use std::sync::mpsc;

    use alsa::pcm::{Access, Format, HwParams, PCM};
    use alsa::{Direction, ValueOr};
    use anyhow::Context;

    /// Blocks of audio the reading thread may hold before the sender takes them (about a
    /// second): beyond that the oldest sound is not worth sending late, so the thread
    /// drops the block it read and counts it.
    const QUEUE: usize = 100;

    /// The ALSA input, read by its own thread into a bounded queue.
    pub struct Capture {
        blocks: mpsc::Receiver<anyhow::Result<Vec<f32>>>,
        /// Samples taken from the queue and not yet handed out.
        held: Vec<f32>,
        channels: usize,
        ended: bool,
    }

    impl Capture {
        /// Opens ALSA's `device` for capture at `rate` Hz in `channels` channels (s16),
        /// saying plainly when there is no such input or it cannot record so.
        pub fn open(device: &str, rate: u32, channels: u16) -> anyhow::Result<Capture> {
            let no_input = || {
                format!(
                    "no sound input: ALSA cannot open {device:?} for recording; pass --device \
                     NAME (arecord -L lists them), or --wav FILE, --raw FILE or --tone HZ"
                )
            };
            let pcm = PCM::new(device, Direction::Capture, false).with_context(no_input)?;
            {
                let hw = HwParams::any(&pcm).with_context(no_input)?;
                hw.set_access(Access::RWInterleaved)?;
                hw.set_format(Format::s16())
                    .with_context(|| format!("{device} cannot record s16 samples"))?;
                hw.set_channels(u32::from(channels)).with_context(|| {
                    format!("{device} cannot record {channels} channels (the guest's)")
                })?;
                hw.set_rate(rate, ValueOr::Nearest).with_context(|| {
                    format!("{device} cannot record at {rate} Hz (the guest's rate)")
                })?;
                hw.set_period_size_near((rate / 100).max(1) as i64, ValueOr::Nearest)?;
                pcm.hw_params(&hw)
                    .with_context(|| format!("{device}: cannot set up the recording"))?;
                let got = pcm.hw_params_current()?.get_rate()?;
                if got != rate {
                    anyhow::bail!(
                        "{device} records at {got} Hz, not at the guest's {rate} Hz: choose \
                         another --device (e.g. plughw:...) or ALSA's `plug` converter"
                    );
                }
            }
            pcm.start().ok();
            let (tx, blocks) = mpsc::sync_channel(QUEUE);
            let ch = usize::from(channels);
            let name = device.to_string();
            std::thread::Builder::new()
                .name("mic capture".into())
                .spawn(move || read(pcm, ch, rate, &name, tx))
                .context("cannot start the recording thread")?;
            Ok(Capture {
                blocks,
                held: Vec::new(),
                channels: ch,
                ended: false,
            })
        }

        /// The next `frames` frames, waiting for the device to record them; none once the
        /// device failed (said on stderr).
        pub fn next(&mut self, frames: usize, out: &mut Vec<f32>) {
            out.clear();
            let want = frames * self.channels;
            while self.held.len() < want && !self.ended {
                let block = tokio::task::block_in_place(|| self.blocks.recv());
                match block {
                    Ok(Ok(b)) => self.held.extend_from_slice(&b),
                    Ok(Err(e)) => {
                        eprintln!("ringcast mic: the sound input failed: {e:#}");
                        self.ended = true;
                    }
                    Err(_) => self.ended = true,
                }
            }
            let n = want.min(self.held.len());
            out.extend(self.held.drain(..n));
        }
    }

    /// The reading thread: 10 ms reads until the sender goes away or the device fails.
    fn read(
        pcm: PCM,
        channels: usize,
        rate: u32,
        name: &str,
        tx: mpsc::SyncSender<anyhow::Result<Vec<f32>>>,
    ) {
        let io = match pcm.io_i16() {
            Ok(io) => io,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
        };
        let mut buf = vec![0i16; (rate as usize / 100).max(1) * channels];
        let mut dropped = 0u64;
        loop {
            let frames = match io.readi(&mut buf) {
                Ok(n) => n,
                Err(e) => match pcm.try_recover(e, true) {
                    // An overrun: the device goes on after it.
                    Ok(()) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::Error::from(e).context(name.to_string())));
                        return;
                    }
                },
            };
            let block = buf[..frames * channels]
                .iter()
                .map(|s| f32::from(*s) / 32768.0)
                .collect();
            match tx.try_send(Ok(block)) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(_)) => {
                    dropped += frames as u64;
                    if dropped == frames as u64 {
                        eprintln!(
                            "ringcast mic: the sender fell behind the sound input: recorded \
                             sound is being dropped"
                        );
                    }
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
    }
}
