//! The player on a virtual clock with PCM: a sender makes a 10 ms period of a tone every
//! 10 ms, the path delays each by 5 ms or loses it, the player ticks every 10 ms. A lost
//! period is concealed with the tone, without a click, and a long loss fades to silence.

use bytes::Bytes;

use super::*;

const MS: u64 = 1_000_000;
const FRAMES: usize = 480;
const RATE: u32 = 48_000;

fn format() -> AudioFormat {
    AudioFormat {
        rate: RATE,
        channels: 2,
        sample_format: SampleFormat::S16.to_wire(),
        big_endian: false,
    }
}

/// Period `n` of a stereo s16 tone of 440 Hz at half scale.
fn period(n: u64) -> Vec<u8> {
    (0..FRAMES)
        .flat_map(|i| {
            let t = (n as usize * FRAMES + i) as f64 / f64::from(RATE);
            let v = (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
            [v.to_le_bytes(), v.to_le_bytes()].concat()
        })
        .collect()
}

fn samples(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn rms(pcm: &[u8]) -> f64 {
    let s = samples(pcm);
    (s.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

/// Periods 0..n through the path (`lost` never arrive) to a player with a 20 ms delay
/// (adaptive, or `fixed`); what each tick played, in order.
fn play(n: u64, fixed: bool, lost: impl Fn(u64) -> bool) -> (Vec<Tick>, Player) {
    let mut player = Player::new(AudioEncoding::Pcm, format(), 20 * MS, fixed).unwrap();
    let mut ticks = Vec::new();
    let mut t = 1000 * MS + 3 * MS;
    let mut next = 0;
    while ticks.len() < n as usize {
        // Period k is sent at 1 s + k × 10 ms and arrives 5 ms later.
        while next < n && 1000 * MS + next * 10 * MS + 5 * MS <= t {
            if !lost(next) {
                player.push(
                    1000 * MS + next * 10 * MS + 5 * MS,
                    AudioData {
                        seq: next,
                        timestamp_ns: next * 10 * MS,
                        frames: FRAMES as u32,
                        skipped_before: 0,
                        pcm: Bytes::from(period(next)),
                    },
                );
            }
            next += 1;
        }
        if let Some(tick) = player.tick(t) {
            ticks.push(tick);
        }
        t += 10 * MS;
    }
    (ticks, player)
}

#[test]
fn a_lost_pcm_period_is_concealed_with_the_last_one_without_a_click() {
    let (ticks, player) = play(100, false, |n| n == 50);
    let stats = player.stats().jitter;
    assert_eq!((stats.concealed, stats.underruns), (1, 0), "{stats:?}");
    // Every other tick plays its own period.
    for (n, tick) in ticks.iter().enumerate() {
        if n != 50 {
            assert_eq!(tick.stamp_ns, Some(n as u64 * 10 * MS), "tick {n}");
            assert_eq!(tick.pcm, period(n as u64), "tick {n}");
        }
    }
    // The concealed one is the tone at nearly its level, not silence...
    let concealed = &ticks[50];
    assert_eq!(concealed.stamp_ns, None);
    assert_eq!(concealed.pcm.len(), period(0).len());
    let level = rms(&period(49));
    assert!(
        rms(&concealed.pcm) > 0.8 * level,
        "concealed at {:.0} of the tone's {level:.0}",
        rms(&concealed.pcm)
    );
    // ...that starts on the sample the period before ended with: no step at the junction.
    let before = samples(&ticks[49].pcm);
    let after = samples(&concealed.pcm);
    assert_eq!(&after[..2], &before[before.len() - 2..]);
}

#[test]
fn a_long_pcm_loss_fades_to_silence_and_the_next_period_plays_as_it_came() {
    // At a fixed delay, so that the ticks of the lost periods conceal them rather than
    // stretch the delay (which conceals the same way, at more ticks).
    let (ticks, player) = play(100, true, |n| (40..48).contains(&n));
    let stats = player.stats().jitter;
    assert_eq!(stats.concealed, 8, "{stats:?}");
    // The level goes down period by period to silence after the fade (50 ms).
    let levels: Vec<f64> = ticks[40..48].iter().map(|t| rms(&t.pcm)).collect();
    assert!(levels[0] > 0.8 * rms(&period(39)), "{levels:?}");
    assert!(levels.windows(2).all(|w| w[1] <= w[0]), "{levels:?}");
    assert!(levels[5..].iter().all(|l| *l == 0.0), "{levels:?}");
    // Repeats alternate direction: each junction joins equal samples.
    for k in 40..45 {
        let a = samples(&ticks[k - 1].pcm);
        let b = samples(&ticks[k].pcm);
        let (last, first) = (a[a.len() - 1], b[0]);
        assert!(
            (i32::from(last) - i32::from(first)).abs() <= 200,
            "a step of {last} to {first} at tick {k}"
        );
    }
    assert_eq!(ticks[48].pcm, period(48));
    assert_eq!(ticks[48].stamp_ns, Some(480 * MS));
}

#[test]
fn a_pcm_period_left_out_by_the_server_plays_as_silence() {
    let mut player = Player::new(AudioEncoding::Pcm, format(), 0, true).unwrap();
    let unit = |seq: u64, skipped_before: u64| AudioData {
        seq,
        timestamp_ns: seq * 10 * MS,
        frames: FRAMES as u32,
        skipped_before,
        pcm: Bytes::from(period(seq)),
    };
    player.push(0, unit(0, 0));
    player.push(0, unit(2, 1));
    let played: Vec<Tick> = (0..3).filter_map(|k| player.tick(k * 10 * MS)).collect();
    assert_eq!(played.len(), 3);
    assert_eq!(played[0].pcm, period(0));
    assert!(played[1].pcm.iter().all(|b| *b == 0), "not silence");
    assert_eq!(played[2].pcm, period(2));
    assert_eq!(player.stats().jitter.concealed, 0);
}
