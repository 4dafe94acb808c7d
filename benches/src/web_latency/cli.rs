//! The CLI's figure of the web-latency scenario: `ringcast play`'s pipeline with a clock,
//! as it plays to a sound card (the bench machine has none): `client::Session` attaches the
//! audio on its stream and the flooded console (read and discarded), and
//! `client::playout::Player` (the jitter buffer, fixed at the page's target) is ticked
//! every period; each tick that plays a period records CLOCK_MONOTONIC − its stamp, as
//! `ringcast play` records its "from QEMU to play-out" delay.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::playout::Player;
use client::{ConsoleItem, Identity, Mode, Session, StartAt, Trust};

use super::Figures;
use crate::c_audio::{mono_ns, AUDIO_DEV, CONSOLE_DEV, VM, WAIT};

/// Plays for `dur` after `warmup`, the client in its own runtime (so that it can run on a
/// thread in another namespace).
pub(super) fn run(
    addr: String,
    identity: Identity,
    trust: Trust,
    jitter_ms: u64,
    warmup: Duration,
    dur: Duration,
) -> Result<Figures, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(play(addr, identity, trust, jitter_ms, warmup, dur))
}

async fn play(
    addr: String,
    identity: Identity,
    trust: Trust,
    jitter_ms: u64,
    warmup: Duration,
    dur: Duration,
) -> Result<Figures, String> {
    let s = tokio::time::timeout(WAIT, Session::connect(&addr, Some(identity), trust))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let read = Arc::new(AtomicU64::new(0));
    let mut console = s
        .attach_console(VM, CONSOLE_DEV, Mode::Read, StartAt::Now)
        .await
        .map_err(|e| format!("attach console: {e}"))?;
    let r = read.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(item)) = console.next().await {
            if let ConsoleItem::Chunk { bytes, .. } = item {
                r.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let mut audio = s
        .attach_audio(VM, AUDIO_DEV, false)
        .await
        .map_err(|e| format!("attach audio: {e}"))?;
    let format = audio
        .format()
        .ok_or("the audio device has not announced its format")?;
    let mut player = Player::new(audio.encoding(), format, jitter_ms * 1_000_000, true)?;
    let t0 = tokio::time::Instant::now();
    let now_ns = || t0.elapsed().as_nanos() as u64;
    let (measure_from, end) = (t0 + warmup, t0 + warmup + dur);
    let mut out = Figures::default();
    let mut read_at_start = None;
    let mut next_tick: Option<tokio::time::Instant> = None;
    loop {
        let tick_at = next_tick.unwrap_or(end);
        tokio::select! {
            p = tokio::time::timeout(WAIT, audio.next()) => match p {
                Ok(Ok(Some(p))) => {
                    if tokio::time::Instant::now() >= measure_from {
                        out.periods += 1;
                    }
                    player.push(now_ns(), p);
                    if next_tick.is_none() {
                        next_tick = player.tick_ns().map(|_| tokio::time::Instant::now());
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(format!("audio: {e}")),
                Err(_) => return Err("no audio period for 20 s".into()),
            },
            _ = tokio::time::sleep_until(tick_at), if next_tick.is_some() => {
                let step = Duration::from_nanos(player.tick_ns().unwrap_or(10_000_000));
                next_tick = Some(tick_at + step);
                let played = player.tick(now_ns());
                if tokio::time::Instant::now() >= measure_from {
                    read_at_start.get_or_insert_with(|| read.load(Ordering::Relaxed));
                    if let Some(stamp) = played.and_then(|t| t.stamp_ns) {
                        out.delays_ms.push(mono_ns().saturating_sub(stamp) as f64 / 1e6);
                    }
                }
            },
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    let j = player.stats().jitter;
    out.underruns = j.underruns;
    out.late = j.late;
    out.lost = j.concealed;
    out.console_bytes = read.load(Ordering::Relaxed) - read_at_start.unwrap_or(0);
    reader.abort();
    drop(audio);
    s.close().await;
    Ok(out)
}
