//! Scenario F: sound over a narrow lossy WAN. A tone (its pitch moving every 200 ms, so
//! that its output aligns with it at one lag only) and a speech sample (espeak-ng's
//! voice, made at run time) are played by a stand-in sound card in real time across
//! testbed's lossy link (1 Mbit/s each way, 20 ms each way, 2% and then 5% loss each way)
//! by three senders, one after the other on the same link:
//!
//! * `pcm`: ringcastd in namespace A, its device fed by a fake QEMU audio device
//!   ([`testbed::devices::FakeAudio`]); `ringcast play --codec pcm --datagrams --raw` in
//!   namespace B.
//! * `opus`: the same with `--codec opus` (ringcastd's defaults: 64 kbit/s, 10 ms frames,
//!   in-band FEC, DTX).
//! * `gstreamer`: the baseline, GStreamer's Opus over RTP/UDP: `fdsrc ! rawaudioparse !
//!   opusenc bitrate=64000 frame-size=10 inband-fec=true ! rtpopuspay ! udpsink` in A, fed the
//!   same periods on the same schedule; `udpsrc ! rtpjitterbuffer latency=40 do-lost=true !
//!   rtpopusdepay ! opusdec plc=true use-inband-fec=true ! fdsink` in B.
//!
//! Every receiver writes raw s16le to its stdout, which this process reads and stamps
//! (CLOCK_MONOTONIC, like the periods' stamps). From that ([`analysis`]): the output is
//! aligned with the source by cross-correlation; quality is the SNR and the log-spectral
//! distance of the aligned output; a model sound card plays the output as it arrived
//! (starting 20 ms after the first block, 10 ms a block; a block not there in time is an
//! underrun and the card waits for it); the delay of each block is its play-out time minus
//! its source period's stamp. ringcast's own counters (concealed, recovered by FEC) come
//! from `play`'s closing line; GStreamer's jitter buffer does not print its counters.
//! The bitrate is the IP bytes the link carried from A to B over the run.

mod analysis;
mod runs;

use testbed::lossy::{LinkSpec, LossyLink};

use crate::report::{Measurement, Outcome};
use crate::scenario::{Options, Scenario};

pub use analysis::*;

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    key: "f",
    title: "F. Sound over a narrow lossy WAN: PCM, Opus, GStreamer's Opus over RTP",
    about: "A tone (400-1423 Hz, its pitch moving every 200 ms) and an espeak-ng speech sample (48 kHz stereo s16), played in real \
            time by a stand-in sound card across testbed's lossy link (1 Mbit/s, 20 ms each \
            way, 2% then 5% loss each way; needs root) to: ringcast pcm, ringcast opus \
            (ringcastd in namespace A, ringcast play --raw in B), and GStreamer's opusenc \
            (64 kbit/s, 10 ms, in-band FEC) over RTP/UDP with rtpjitterbuffer latency=40 \
            and opusdec's PLC/FEC (benches/baselines/install.sh installs it and espeak-ng). \
            Per run: underruns of a model sound card playing the output as it arrived, \
            concealed and FEC-recovered frames (ringcast), delay from the source period's \
            stamp to play-out p50/p99, bitrate on the link, SNR and log-spectral distance \
            after alignment by cross-correlation. Knobs: --set secs=N (default 8, --quick 4).",
    run,
};

/// The link's conditions: one-way delay and rate; the loss percentages.
const DELAY_MS: f64 = 20.0;
const RATE_MBIT: f64 = 1.0;
const LOSSES: [f64; 2] = [2.0, 5.0];

fn run(o: &Options) -> Result<Outcome, String> {
    o.check_settings(&["secs"])?;
    let secs = o
        .setting_usize("secs")?
        .unwrap_or(if o.quick { 4 } else { 8 });
    for tool in ["espeak-ng", "gst-launch-1.0"] {
        if !runs::on_path(tool) {
            return Err(format!(
                "{tool} is not installed: run benches/baselines/install.sh"
            ));
        }
    }
    let dir = o.work_dir.join("f");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let frames = secs * RATE as usize;
    let sources = [
        ("tone", tone_s16le_stereo(frames)),
        ("speech", runs::speech_s16le_stereo(&dir, frames)?),
    ];
    let mut out = Outcome {
        measurements: Vec::new(),
        comparisons: Vec::new(),
        notes: Vec::new(),
    };
    for loss in LOSSES {
        let spec = LinkSpec {
            loss_pct: loss,
            delay_ms: DELAY_MS,
            rate_mbit: RATE_MBIT,
            seed: 17,
            ..LinkSpec::default()
        };
        let link = LossyLink::create(spec)
            .map_err(|e| format!("cannot create the lossy link (needs root and iproute2): {e}"))?;
        let served = runs::Served::start(&link, &dir.join(format!("loss{loss}")))?;
        for (name, pcm) in &sources {
            for variant in ["pcm", "opus", "gstreamer"] {
                let label = format!("{name}/{loss}%/{variant}");
                eprintln!("f: {label}");
                let r = match variant {
                    "gstreamer" => runs::gstreamer(&link, pcm, secs),
                    codec => runs::ringcast(&link, &served, codec, pcm, secs, &label),
                };
                match r {
                    Ok(run) => measure(&label, pcm, &run, &mut out.measurements),
                    Err(e) => {
                        eprintln!("f: {label}: {e}");
                        out.notes.push(format!("{label}: {e}"));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one run produced.
#[derive(Debug, Default)]
pub struct RunOutput {
    /// The receiver's stdout, raw s16le stereo at 48 kHz.
    pub pcm: Vec<u8>,
    /// (bytes read so far, when), per read.
    pub arrivals: Vec<(u64, u64)>,
    /// The stamp of each source period (480 frames) as it was handed over.
    pub stamps: Vec<u64>,
    /// IP bytes the link carried from A to B, and over how long, ns.
    pub link_bytes: u64,
    pub link_ns: u64,
    /// ringcast play's counters.
    pub summary: Option<PlaySummary>,
}

/// The figures of one run.
fn measure(label: &str, source: &[u8], run: &RunOutput, m: &mut Vec<Measurement>) {
    let src = left_of_s16le_stereo(source);
    let got = left_of_s16le_stereo(&run.pcm);
    let mut push = |metric: &str, value: f64, unit: &str| {
        m.push(Measurement::new(label, metric, value, unit));
    };
    push("output", got.len() as f64 / RATE as f64, "s");
    push(
        "bitrate",
        run.link_bytes as f64 * 8.0 / (run.link_ns.max(1) as f64 / 1e9) / 1000.0,
        "kbit/s",
    );
    if let Some(s) = run.summary {
        push("concealed", s.concealed as f64, "frames");
        push("recovered_fec", s.recovered as f64, "frames");
        push("late", s.late as f64, "frames");
    }
    let Some(lag) = align(&src, &got, 2 * RATE as usize) else {
        push("aligned", 0.0, "bool");
        return;
    };
    push("lag", lag as f64 * 1000.0 / RATE as f64, "ms");
    push("snr", snr_db(&src, &got, lag), "dB");
    push("lsd", log_spectral_distance(&src, &got, lag), "dB");
    // 100 ms segments, each aligned within 60 ms of the whole run's lag.
    let (seg_snr, seg_lsd) = segmental_quality(&src, &got, lag, 4800, 2880);
    push("seg_snr", seg_snr, "dB");
    push("seg_lsd", seg_lsd, "dB");
    let card = play_out(&run.arrivals, 4, 20_000_000);
    push("underruns", card.underruns as f64, "blocks");
    let d = delays_ns(&card.played_at, lag, &run.stamps);
    push("delay_p50", quantile(&d, 0.5) as f64 / 1e6, "ms");
    push("delay_p99", quantile(&d, 0.99) as f64 / 1e6, "ms");
}

/// `frames` frames of a stereo s16le tone at half scale whose pitch moves every 200 ms to
/// a pseudo-random one between 400 and 1423 Hz, with a continuous phase: a pure tone repeats
/// every period, and its output could be aligned with the source at any multiple of it.
pub fn tone_s16le_stereo(frames: usize) -> Vec<u8> {
    let step = RATE as usize / 5;
    let mut phase = 0.0f64;
    (0..frames)
        .flat_map(|i| {
            let n = (i / step) as u64;
            let hz = 400.0 + (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as f64;
            phase += 2.0 * std::f64::consts::PI * hz / RATE as f64;
            let v = (16_000.0 * phase.sin()) as i16;
            [v.to_le_bytes(), v.to_le_bytes()].concat()
        })
        .collect()
}
