//! Playback to the default sound output: with the `sound-card` cargo feature through cpal
//! with a jitter buffer, without it a plain refusal.

#[cfg(feature = "sound-card")]
pub use cpal_output::{device_sink, underruns};
#[cfg(not(feature = "sound-card"))]
pub use unavailable::{device_sink, underruns};

/// What `ringcast play` says when this build cannot play to a sound card.
#[cfg(not(feature = "sound-card"))]
pub const NO_SOUND_CARD: &str = "this ringcast was built without sound-card support (cargo \
    feature `sound-card`), so `ringcast play` needs --wav FILE or --raw (e.g. `--raw | aplay -f \
    S16_LE -r 44100 -c 2`); to play to the sound card, rebuild with the default features \
    (Debian: apt-get install libasound2-dev pkg-config; cargo build -p client)";

/// Without the `sound-card` feature: no playback to a device, said plainly.
#[cfg(not(feature = "sound-card"))]
mod unavailable {
    use std::time::Duration;

    /// No output callback, no underruns.
    pub fn underruns() -> u64 {
        0
    }

    pub fn device_sink(
        _f: client::AudioFormat,
        _sample: protocol::audio::SampleFormat,
        _jitter: Duration,
    ) -> anyhow::Result<crate::play::PcmSink> {
        anyhow::bail!("{}", super::NO_SOUND_CARD)
    }
}

/// Playback through the default output device (cpal), with a jitter buffer.
#[cfg(feature = "sound-card")]
mod cpal_output {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::Context;
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use protocol::audio::{decode_pcm, Sample, SampleFormat};

    static UNDERRUNS: AtomicU64 = AtomicU64::new(0);

    /// Underruns counted by the output callback.
    pub fn underruns() -> u64 {
        UNDERRUNS.load(Relaxed)
    }

    /// A sink that queues PCM (converted to f32) for the default output device; playback
    /// starts once the jitter target is buffered, and restarts buffering after an underrun.
    pub fn device_sink(
        f: client::AudioFormat,
        sample: SampleFormat,
        jitter: Duration,
    ) -> anyhow::Result<crate::play::PcmSink> {
        let host = cpal::default_host();
        let dev = host
            .default_output_device()
            .context("no default audio output device (use --wav FILE or --raw)")?;
        let config = cpal::StreamConfig {
            channels: f.channels,
            sample_rate: cpal::SampleRate(f.rate),
            buffer_size: cpal::BufferSize::Default,
        };
        let target = (jitter.as_secs_f64() * f64::from(f.rate) * f64::from(f.channels)) as usize;
        let queue = Arc::new(Mutex::new((VecDeque::<f32>::new(), false)));
        let q = queue.clone();
        let stream = dev
            .build_output_stream(
                &config,
                move |out: &mut [f32], _| {
                    let mut g = q.lock().unwrap_or_else(|e| e.into_inner());
                    let (buf, playing) = &mut *g;
                    if !*playing && buf.len() >= target {
                        *playing = true;
                    }
                    for s in out.iter_mut() {
                        *s = if *playing {
                            buf.pop_front().unwrap_or(0.0)
                        } else {
                            0.0
                        };
                    }
                    if *playing && buf.is_empty() {
                        *playing = false;
                        UNDERRUNS.fetch_add(1, Relaxed);
                    }
                },
                |e| tracing::warn!(error = %e, "audio output error"),
                None,
            )
            .context("cannot open the audio output (use --wav FILE or --raw)")?;
        stream.play().context("cannot start the audio output")?;
        let max = target.max(1) * 8;
        Ok(Box::new(move |pcm: &[u8]| {
            let _keep = &stream;
            // Decoded before taking the lock the output callback waits on.
            let samples: Vec<f32> = decode_pcm(sample, f.big_endian, pcm)
                .map(Sample::to_f32)
                .collect();
            let mut g = queue.lock().unwrap_or_else(|e| e.into_inner());
            g.0.extend(samples);
            // Far behind (the device is slower than the guest): drop the oldest.
            while g.0.len() > max {
                g.0.pop_front();
            }
            Ok(())
        }))
    }
}
