//! Measuring a received tone: how long it sounds and at what frequency.

/// What a block of interleaved signed 16-bit PCM contains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneReport {
    /// Frames from the first to the last sample above the threshold.
    pub active_frames: usize,
    /// Frequency of the first channel over the active span, from zero crossings.
    pub frequency_hz: f64,
    /// Largest absolute sample of the first channel.
    pub peak: i16,
}

/// Analyses interleaved little-endian s16 PCM with `channels` channels at `rate` Hz.
pub fn analyze_s16le(pcm: &[u8], channels: usize, rate: u32) -> ToneReport {
    let left: Vec<i16> = pcm
        .chunks_exact(2 * channels)
        .map(|f| i16::from_le_bytes([f[0], f[1]]))
        .collect();
    let threshold = 1000;
    let first = left.iter().position(|s| s.unsigned_abs() > threshold);
    let last = left.iter().rposition(|s| s.unsigned_abs() > threshold);
    let (Some(first), Some(last)) = (first, last) else {
        return ToneReport {
            active_frames: 0,
            frequency_hz: 0.0,
            peak: 0,
        };
    };
    let span = &left[first..=last];
    let mut crossings = 0usize;
    let (mut first_cross, mut last_cross) = (None, 0);
    for (i, w) in span.windows(2).enumerate() {
        if (w[0] < 0) != (w[1] < 0) {
            crossings += 1;
            first_cross.get_or_insert(i);
            last_cross = i;
        }
    }
    let frequency_hz = match first_cross {
        Some(f) if crossings > 2 && last_cross > f => {
            (crossings - 1) as f64 / 2.0 / ((last_cross - f) as f64 / f64::from(rate))
        }
        _ => 0.0,
    };
    ToneReport {
        active_frames: span.len(),
        frequency_hz,
        peak: span.iter().map(|s| s.saturating_abs()).max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_sine_is_measured_back() {
        let rate = 44100;
        let mut pcm = vec![0u8; 4 * 1000]; // leading silence
        for i in 0..rate / 2 {
            let s = (f64::from(i) * 2.0 * std::f64::consts::PI * 1000.0 / f64::from(rate)).sin();
            let v = (s * 16000.0) as i16;
            pcm.extend_from_slice(&v.to_le_bytes());
            pcm.extend_from_slice(&v.to_le_bytes());
        }
        pcm.extend(vec![0u8; 4 * 1000]);
        let r = analyze_s16le(&pcm, 2, rate);
        assert!((r.frequency_hz - 1000.0).abs() < 2.0, "{r:?}");
        assert!(
            (r.active_frames as i64 - i64::from(rate / 2)).abs() < 50,
            "{r:?}"
        );
        assert!(r.peak > 15000);
    }

    #[test]
    fn silence_has_no_tone() {
        assert_eq!(analyze_s16le(&[0; 4000], 2, 44100).active_frames, 0);
    }
}
