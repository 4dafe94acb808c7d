//! What scenario F measures from a run's output, with no I/O: the lag of the output behind
//! the source (cross-correlation), the quality (SNR and log-spectral distance once aligned),
//! a sound card's play-out of the output as it arrived (underruns, delay from the source's
//! stamp), and the numbers of `ringcast play`'s closing line.

/// Samples per block of the play-out model and of the delay figures: 10 ms at 48 kHz.
pub const BLOCK: usize = 480;
/// The rate of every signal here.
pub const RATE: u64 = 48_000;

/// The left channel of interleaved stereo s16le, scaled to -1..1.
pub fn left_of_s16le_stereo(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|f| f32::from(i16::from_le_bytes([f[0], f[1]])) / 32768.0)
        .collect()
}

/// The lag of `output` behind `source`: the `lag` for which `output[i + lag]` best matches
/// `source[i]` (negative: the output began after the source did), searched within
/// `-max_lag..=max_lag`: first on both signals averaged over 8 samples, then sample by
/// sample near the best. `None` when the two do not overlap or either is silent.
pub fn align(source: &[f32], output: &[f32], max_lag: usize) -> Option<isize> {
    let decimate = |x: &[f32]| -> Vec<f32> {
        x.chunks_exact(8)
            .map(|c| c.iter().sum::<f32>() / 8.0)
            .collect()
    };
    let (ds, dout) = (decimate(source), decimate(output));
    let max = max_lag as isize;
    let coarse_max = max / 8 + 1;
    let coarse = best_lag(&ds, &dout, -coarse_max..=coarse_max)?;
    best_lag(
        source,
        output,
        (coarse * 8 - 16).max(-max)..=(coarse * 8 + 16).min(max),
    )
}

/// The lag among `lags` with the highest normalised correlation.
fn best_lag(
    source: &[f32],
    output: &[f32],
    lags: std::ops::RangeInclusive<isize>,
) -> Option<isize> {
    lags.map(|lag| (lag, correlation(source, output, lag)))
        .filter(|(_, c)| c.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(lag, _)| lag)
}

/// Normalised correlation of `source[i]` with `output[i + lag]` where both exist;
/// -infinity where either is silent.
fn correlation(source: &[f32], output: &[f32], lag: isize) -> f64 {
    let (s, o) = overlap(source, output, lag);
    let (mut dot, mut es, mut eo) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b) in s.iter().zip(o) {
        let (a, b) = (f64::from(*a), f64::from(*b));
        dot += a * b;
        es += a * a;
        eo += b * b;
    }
    if es <= 0.0 || eo <= 0.0 {
        f64::NEG_INFINITY
    } else {
        dot / (es * eo).sqrt()
    }
}

/// The overlapping parts of `source` and `output` at `lag` (see [`align`]).
fn overlap<'a>(source: &'a [f32], output: &'a [f32], lag: isize) -> (&'a [f32], &'a [f32]) {
    let s0 = (-lag).max(0) as usize;
    let o0 = lag.max(0) as usize;
    let n = source
        .len()
        .saturating_sub(s0)
        .min(output.len().saturating_sub(o0));
    (&source[s0..s0 + n], &output[o0..o0 + n])
}

/// Signal-to-noise ratio of `output` against `source` at `lag`, dB: the source's energy over
/// the energy of the difference, where they overlap.
pub fn snr_db(source: &[f32], output: &[f32], lag: isize) -> f64 {
    let (s, o) = overlap(source, output, lag);
    let signal: f64 = s.iter().map(|v| f64::from(*v).powi(2)).sum();
    let noise: f64 = s
        .iter()
        .zip(o)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-12)).log10()
}

/// Samples per frame of the log-spectral distance (5.3 ms at 48 kHz).
const LSD_FRAME: usize = 256;

/// Power spectrum (bins 0..=n/2) of one Hann-windowed frame.
fn power_spectrum(frame: &[f32]) -> Vec<f64> {
    let n = frame.len();
    let w: Vec<f64> = frame
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
            f64::from(*v) * hann
        })
        .collect();
    (0..=n / 2)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, x) in w.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (k * i) as f64 / n as f64;
                re += x * a.cos();
                im += x * a.sin();
            }
            re * re + im * im
        })
        .collect()
}

/// Log-spectral distance of `output` from `source` at `lag`, dB: per frame of 256 samples
/// the root mean square over frequency of the difference of their log power spectra, averaged
/// over the frames where the source is not silent (below -60 dBFS). 0 for equal signals;
/// a few dB for a good codec; tens of dB for silence in place of sound.
pub fn log_spectral_distance(source: &[f32], output: &[f32], lag: isize) -> f64 {
    let (s, o) = overlap(source, output, lag);
    // A floor keeps log(0) finite: -100 dB of a full-scale frame's power.
    let floor = 1e-10 * (LSD_FRAME as f64).powi(2);
    let (mut sum, mut frames) = (0.0, 0usize);
    for (fs, fo) in s.chunks_exact(LSD_FRAME).zip(o.chunks_exact(LSD_FRAME)) {
        let rms = (fs.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / LSD_FRAME as f64).sqrt();
        if rms < 1e-3 {
            continue;
        }
        let (ps, po) = (power_spectrum(fs), power_spectrum(fo));
        let mean_sq = ps
            .iter()
            .zip(&po)
            .map(|(a, b)| (10.0 * ((a + floor) / (b + floor)).log10()).powi(2))
            .sum::<f64>()
            / ps.len() as f64;
        sum += mean_sq.sqrt();
        frames += 1;
    }
    if frames == 0 {
        0.0
    } else {
        sum / frames as f64
    }
}

/// Quality that survives the output's timeline moving (a jitter buffer that changes its
/// delay inserts or drops audio, after which one lag no longer fits): the source is cut
/// into segments of `seg` samples, each aligned on its own within `search` samples of `lag`,
/// and the segments' SNRs (in dB, the segmental SNR) and log-spectral distances averaged
/// over those where the source is not silent. `(segmental SNR, LSD)`, dB.
pub fn segmental_quality(
    source: &[f32],
    output: &[f32],
    lag: isize,
    seg: usize,
    search: usize,
) -> (f64, f64) {
    let (mut snr, mut lsd, mut n) = (0.0, 0.0, 0usize);
    for (k, s) in source.chunks_exact(seg).enumerate() {
        let energy = s.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / seg as f64;
        if energy < 1e-6 {
            continue;
        }
        let base = (k * seg) as isize + lag - search as isize;
        let (base, slack) = if base < 0 {
            (0usize, (2 * search as isize + base).max(0) as usize)
        } else {
            (base as usize, 2 * search)
        };
        if base + seg > output.len() {
            break;
        }
        let window = &output[base..(base + seg + slack).min(output.len())];
        let room = (window.len() - seg) as isize;
        // A silent output has no best lag: the run's lag then.
        let l = best_lag(s, window, 0..=room).unwrap_or((room / 2).max(0));
        let o = &window[l as usize..l as usize + seg];
        snr += snr_db(s, o, 0).min(100.0);
        lsd += log_spectral_distance(s, o, 0);
        n += 1;
    }
    if n == 0 {
        (0.0, 0.0)
    } else {
        (snr / n as f64, lsd / n as f64)
    }
}

/// A sound card playing the output as it arrived: it starts `start_delay_ns` after the
/// first block arrived and plays a block every 10 ms; a block not here at its time is an
/// underrun, after which the card waits for it (its schedule slips by the wait).
#[derive(Debug, Clone, PartialEq)]
pub struct Playout {
    /// Blocks late for their time.
    pub underruns: u64,
    /// When each whole block played, ns (the arrival clock).
    pub played_at: Vec<u64>,
}

/// `arrivals`: (output bytes received so far, when), in order, as the reader saw them;
/// `frame_bytes`: bytes per sample frame.
pub fn play_out(arrivals: &[(u64, u64)], frame_bytes: u64, start_delay_ns: u64) -> Playout {
    let block_bytes = BLOCK as u64 * frame_bytes;
    let total = arrivals.last().map_or(0, |a| a.0) / block_bytes;
    let block_ns = BLOCK as u64 * 1_000_000_000 / RATE;
    let mut played_at = Vec::with_capacity(total as usize);
    let mut underruns = 0;
    let mut i = 0;
    let mut due = 0u64;
    for k in 0..total {
        // The first read that completed block k.
        while arrivals[i].0 < (k + 1) * block_bytes {
            i += 1;
        }
        let here = arrivals[i].1;
        if k == 0 {
            due = here + start_delay_ns;
        } else if here > due {
            underruns += 1;
            due = here;
        }
        played_at.push(due);
        due += block_ns;
    }
    Playout {
        underruns,
        played_at,
    }
}

/// Delay from the source's stamp to play-out of every output block that holds source audio:
/// block k's last sample is source sample `(k + 1) * BLOCK - 1 - lag`, stamped with the time
/// its source block was handed over (`source_stamps[n]` for source block n).
pub fn delays_ns(played_at: &[u64], lag: isize, source_stamps: &[u64]) -> Vec<u64> {
    played_at
        .iter()
        .enumerate()
        .filter_map(|(k, t)| {
            let last = ((k + 1) * BLOCK) as isize - 1 - lag;
            let n = usize::try_from(last).ok()? / BLOCK;
            source_stamps.get(n).map(|s| t.saturating_sub(*s))
        })
        .collect()
}

/// The q-quantile of `v` (nearest rank), 0 for an empty one.
pub fn quantile(v: &[u64], q: f64) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

/// The counters of `ringcast play`'s closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaySummary {
    /// Units played as received.
    pub played: u64,
    /// Rebuilt from FEC.
    pub recovered: u64,
    /// Concealed.
    pub concealed: u64,
    /// Arrived after their tick.
    pub late: u64,
    /// The buffer's underruns.
    pub underruns: u64,
}

/// Reads the counters from `ringcast play`'s stderr (the line with "units played").
pub fn parse_play_summary(stderr: &str) -> Option<PlaySummary> {
    let line = stderr.lines().find(|l| l.contains("units played"))?;
    let count = |what: &str| -> Option<u64> {
        let at = line.find(what)? + what.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let played = line[..line.find("units played")?]
        .split_whitespace()
        .last()?
        .parse()
        .ok()?;
    Some(PlaySummary {
        played,
        recovered: count("recovered by FEC")?,
        concealed: count("concealed")?,
        late: count("late")?,
        underruns: count("underruns")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / 48_000.0).sin()) as f32)
            .collect()
    }

    /// Noise-like, so that a lag is unambiguous.
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 20_001) as f32 / 20_000.0 - 0.5
            })
            .collect()
    }

    #[test]
    fn align_finds_a_delay_and_an_advance_to_the_sample() {
        let s = noise(20_000, 7);
        for lag in [0isize, 1, 37, 1234, -5, -999] {
            let o: Vec<f32> = if lag >= 0 {
                vec![0.0; lag as usize]
                    .into_iter()
                    .chain(s.clone())
                    .collect()
            } else {
                s[(-lag) as usize..].to_vec()
            };
            assert_eq!(align(&s, &o, 2000), Some(lag), "lag {lag}");
        }
        assert_eq!(align(&s, &vec![0.0; 5000], 2000), None);
    }

    #[test]
    fn snr_is_high_for_the_same_signal_and_falls_with_noise() {
        let s = tone(1000.0, 48_000);
        let lagged: Vec<f32> = vec![0.0; 100].into_iter().chain(s.clone()).collect();
        assert!(snr_db(&s, &lagged, 100) > 100.0);
        // Noise at a tenth of the amplitude: the sine's power is 0.5²/2, the uniform
        // noise's 0.05²/3, 21.8 dB less.
        let n = noise(48_000, 3);
        let noisy: Vec<f32> = s.iter().zip(&n).map(|(a, b)| a + 0.1 * b).collect();
        let snr = snr_db(&s, &noisy, 0);
        assert!((20.8..22.8).contains(&snr), "{snr}");
        // Misaligned by half a period of the tone: worse than no signal at all.
        assert!(snr_db(&s, &lagged, 124) < 0.0);
    }

    #[test]
    fn log_spectral_distance_is_zero_for_equal_signals_and_large_for_silence() {
        // Noise, so that every frequency has power.
        let s = noise(48_000, 11);
        assert!(log_spectral_distance(&s, &s, 0) < 1e-6);
        let quieter: Vec<f32> = s.iter().map(|v| v * 0.5).collect();
        let d = log_spectral_distance(&s, &quieter, 0);
        // Half the amplitude is 6 dB at every bin.
        assert!((d - 6.02).abs() < 0.1, "{d}");
        let silence = vec![0.0; 48_000];
        assert!(log_spectral_distance(&s, &silence, 0) > 40.0);
        // Silent source frames are not counted.
        assert_eq!(log_spectral_distance(&silence, &s, 0), 0.0);
    }

    #[test]
    fn segmental_quality_survives_a_moved_timeline_that_ruins_the_global_snr() {
        // 2 s of noise whose output loses 10 ms half-way (a shrinking jitter buffer).
        let s = noise(96_000, 5);
        let mut o = s[..48_000].to_vec();
        o.extend_from_slice(&s[48_480..]);
        let lag = align(&s, &o, 4800).unwrap();
        assert!(snr_db(&s, &o, lag) < 5.0, "{}", snr_db(&s, &o, lag));
        let (seg_snr, lsd) = segmental_quality(&s, &o, lag, 4800, 960);
        // One segment of twenty straddles the cut.
        assert!(seg_snr > 90.0, "{seg_snr}");
        assert!(lsd < 2.0, "{lsd}");
        // Silence in place of the sound is still bad.
        let (bad_snr, bad_lsd) = segmental_quality(&s, &vec![0.0; 96_000], 0, 4800, 960);
        assert!(bad_snr <= 0.0 && bad_lsd > 40.0, "{bad_snr} {bad_lsd}");
    }

    #[test]
    fn the_card_counts_a_late_block_once_and_slips_by_its_wait() {
        // Blocks of 4-byte frames; block k arrives at k × 10 ms, except block 5 at 80 ms.
        let bb = BLOCK as u64 * 4;
        let ms = 1_000_000;
        let mut arrivals: Vec<(u64, u64)> = (0..10).map(|k| ((k + 1) * bb, k * 10 * ms)).collect();
        arrivals[5].1 = 80 * ms;
        for a in arrivals.iter_mut().skip(6) {
            a.1 = a.1.max(80 * ms);
        }
        let p = play_out(&arrivals, 4, 20 * ms);
        // Block 5 was due at 70 ms and came at 80 ms: one underrun, then all 10 ms later.
        assert_eq!(p.underruns, 1);
        assert_eq!(p.played_at[4], 60 * ms);
        assert_eq!(p.played_at[5], 80 * ms);
        assert_eq!(p.played_at[9], 120 * ms);
        // Reads that split blocks: a block counts when its last byte came.
        let split = [(bb / 2, 0), (bb, 3 * ms), (2 * bb + 8, 15 * ms)];
        let q = play_out(&split, 4, 0);
        assert_eq!(q.played_at, vec![3 * ms, 15 * ms]);
        assert_eq!(q.underruns, 1);
    }

    #[test]
    fn delays_follow_the_lag_to_the_source_block() {
        let ms = 1_000_000;
        let stamps: Vec<u64> = (0..10).map(|n| n * 10 * ms).collect();
        let played: Vec<u64> = (0..10).map(|k| 100 * ms + k * 10 * ms).collect();
        // The output holds one block of something else before the source.
        let d = delays_ns(&played, BLOCK as isize, &stamps);
        assert_eq!(d.len(), 9);
        assert!(d.iter().all(|v| *v == 110 * ms), "{d:?}");
        // The output began two blocks into the source.
        let d = delays_ns(&played, -2 * BLOCK as isize, &stamps);
        assert_eq!(d.len(), 8);
        assert!(d.iter().all(|v| *v == 80 * ms), "{d:?}");
        assert_eq!(quantile(&[5, 1, 3, 2, 4], 0.5), 3);
        assert_eq!(quantile(&[], 0.99), 0);
    }

    #[test]
    fn the_closing_line_of_play_is_read_and_anything_else_refused() {
        let err = "ringcast: connected\nringcast: opus 64 kbit/s 10.0 ms frames: 759 units \
                   played (8.00 s), recovered by FEC 36, concealed 5, late 2, underruns 1, \
                   silent 0; play-out delay p50 20.0 ms, p99 40.0 ms\n";
        assert_eq!(
            parse_play_summary(err),
            Some(PlaySummary {
                played: 759,
                recovered: 36,
                concealed: 5,
                late: 2,
                underruns: 1
            })
        );
        let pcm = "ringcast: pcm: 800 units played (8.00 s), recovered by FEC 0, concealed \
                   3, late 0, underruns 0, silent 0; play-out delay p50 1.0 ms, p99 2.0 ms";
        assert_eq!(parse_play_summary(pcm).map(|s| s.played), Some(800));
        assert_eq!(parse_play_summary("ringcast: connection lost"), None);
        assert_eq!(
            parse_play_summary("x: 5 units played, recovered by FEC ?"),
            None
        );
    }
}
