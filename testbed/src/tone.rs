//! Measuring a received tone: how long it sounds and at what frequency.

/// What a block of interleaved signed 16-bit PCM contains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneReport {
    /// Frames from the first to the last sample above the threshold.
    pub active_frames: usize,
    /// Frequency of the first channel over the active span, from zero crossings; the
    /// intervals that span a hole (a lost or concealed period: silence or a jump) are left
    /// out, so a hole shortens the measurement instead of lowering the frequency.
    pub frequency_hz: f64,
    /// Intervals between zero crossings more than twice the median: holes in the tone.
    pub holes: usize,
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
            holes: 0,
            peak: 0,
        };
    };
    let span = &left[first..=last];
    let crossings: Vec<usize> = span
        .windows(2)
        .enumerate()
        .filter(|(_, w)| (w[0] < 0) != (w[1] < 0))
        .map(|(i, _)| i)
        .collect();
    let intervals: Vec<usize> = crossings.windows(2).map(|c| c[1] - c[0]).collect();
    let mut sorted = intervals.clone();
    sorted.sort_unstable();
    let (frequency_hz, holes) = match sorted.get(sorted.len() / 2) {
        Some(&median) if intervals.len() > 1 => {
            let kept: Vec<usize> = intervals
                .iter()
                .copied()
                .filter(|&d| d <= 2 * median)
                .collect();
            let total: usize = kept.iter().sum();
            let f = kept.len() as f64 / 2.0 / (total as f64 / f64::from(rate));
            (f, intervals.len() - kept.len())
        }
        _ => (0.0, 0),
    };
    ToneReport {
        active_frames: span.len(),
        frequency_hz,
        holes,
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
        assert_eq!(r.holes, 0, "{r:?}");
    }

    #[test]
    fn a_silent_period_inside_the_tone_is_a_hole_not_a_lower_frequency() {
        let rate = 44100;
        let mut pcm = Vec::new();
        for i in 0..rate {
            // 660 Hz for a second with 441 frames (10 ms) of silence at 0.5 s.
            let v = if (22050..22491).contains(&i) {
                0
            } else {
                let s = (f64::from(i) * 2.0 * std::f64::consts::PI * 660.0 / f64::from(rate)).sin();
                (s * 16000.0) as i16
            };
            pcm.extend_from_slice(&v.to_le_bytes());
            pcm.extend_from_slice(&v.to_le_bytes());
        }
        let r = analyze_s16le(&pcm, 2, rate);
        assert!((r.frequency_hz - 660.0).abs() < 1.0, "{r:?}");
        assert_eq!(r.holes, 1, "{r:?}");
    }

    #[test]
    fn silence_has_no_tone() {
        assert_eq!(analyze_s16le(&[0; 4000], 2, 44100).active_frames, 0);
    }
}
