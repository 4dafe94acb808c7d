//! Scenario web-latency (docs/benchmarks.md §Web): the guest's stamp to play-out, in a
//! browser, beside a console flood on a lossy link: the page over WebTransport, the same
//! page over one WebSocket, and the CLI, in one run.
//!
//! ringcastd (the release binary, `--web`) runs in namespace A of testbed's LossyLink, with
//! scenario C's stand-in devices (an audio device fed a stamped 10 ms period every 10 ms,
//! a console flooded at full speed); headless Chromium and the CLI run in namespace B, so
//! everything they receive crosses the link (loss and delay both ways, UDP and TCP alike).
//! Variants, interleaved within each repetition:
//!
//! * `browser/webtransport`: the page (opened from a `web-link`), its console view (a spy
//!   on the flooded console) and its audio, each on its own QUIC stream of one WebTransport
//!   session;
//! * `browser/websocket`: the same page with `?ws=`: every stream on one WebSocket (one TCP
//!   connection) to a bench-only relay beside ringcastd in namespace A ([`relay`]), which
//!   opens them as QUIC streams to ringcastd on A's side of the link;
//! * `cli`: `ringcast play`'s pipeline on a clock ([`cli`]), the console read alongside.
//!
//! The delay of a period: the time its first sample is played minus its stamp, both on
//! the host's CLOCK_MONOTONIC. The page measures it (web/src/delay.js) once the bench has
//! told it the offset between its clock (performance.now()) and CLOCK_MONOTONIC, read over
//! DevTools; the CLI at the tick that plays the period. All with a fixed 60 ms jitter target.

mod cli;
mod relay;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::Trust;
use serde_json::Value;
use testbed::kit::browser::{Browser, Tab};
use testbed::lossy::{LinkSpec, LossyLink};
use transport_quic::authz::Rule;

use crate::c_audio::{devices, mono_ns, percentile, CONSOLE_DEV, VM, WAIT};
use crate::procs::Ringcastd;
use crate::report::{Measurement, Outcome};
use crate::scenario::{Options, Scenario};

/// The registry entry.
pub const SCENARIO: Scenario = Scenario {
    key: "web-latency",
    title: "Web. Guest stamp to play-out in a browser under a console flood, lossy link",
    about: "ringcastd --web (release binary) in namespace A of testbed's LossyLink (2% loss \
            and 20 ms each way, UDP and TCP alike; needs root), scenario C's stand-in audio \
            (10 ms periods, stamped) and console flood; in namespace B headless Chromium and \
            the CLI. Variants, interleaved: browser/webtransport (the page, console view and \
            audio each a stream of one WebTransport session), browser/websocket (the same \
            page over one WebSocket through a bench-only relay beside ringcastd), cli \
            (ringcast play's jitter buffer on a clock). Delay = play-out of a period's first \
            sample − its stamp (CLOCK_MONOTONIC; the page's clock mapped over DevTools), \
            fixed 60 ms jitter target. Full: 2 repetitions of 10 s; --quick: 1 of 5 s. \
            Knobs: --set secs=N, --set loss=PCT, --set delay_ms=MS (one way).",
    run,
};

/// The browser identity's name (a `cn:` identity needs no certificate: a link vouches).
const WEB_ID: &str = "cn:bench-web";
const JITTER_MS: u64 = 60;
/// Discarded at the start of each run (connection, jitter target, flood ramp-up).
const WARMUP: Duration = Duration::from_millis(1500);
const SNDNAME: &str = "bench/snd0";

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    /// Stamp to play-out, ms, of the periods played after the warm-up.
    pub delays_ms: Vec<f64>,
    pub periods: u64,
    pub underruns: u64,
    pub late: u64,
    /// Periods never played (skipped by the page; concealed by the CLI).
    pub lost: u64,
    pub console_bytes: u64,
    /// The page's main-thread tasks over 50 ms (the Long Tasks API): how many, their total
    /// and the longest, ms.
    pub long_tasks: u64,
    pub long_total_ms: f64,
    pub long_max_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    WebTransport,
    WebSocket,
    Cli,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::WebTransport, Variant::WebSocket, Variant::Cli];
    fn name(self) -> &'static str {
        match self {
            Variant::WebTransport => "browser/webtransport",
            Variant::WebSocket => "browser/websocket",
            Variant::Cli => "cli",
        }
    }
}

/// The page's clock minus CLOCK_MONOTONIC is read over DevTools: the reading with the
/// shortest round trip wins. (offset stamp-clock − page-clock in ms, ± ms)
fn calibrate(b: &mut Browser, tab: &Tab) -> Result<(f64, f64), String> {
    let mut best = (f64::MAX, 0.0);
    for _ in 0..15 {
        let t1 = mono_ns();
        let v = b.eval(tab, "performance.now()")?;
        let t2 = mono_ns();
        let page = v.as_f64().ok_or("performance.now() is not a number")?;
        let span = (t2 - t1) as f64 / 1e6;
        if span < best.0 {
            best = (span, (t1 + t2) as f64 / 2e6 - page);
        }
    }
    Ok((best.1, best.0 / 2.0))
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_f64().unwrap_or(0.0) as u64
}

/// One run of the page: opened from a fresh link (with `?ws=` through the relay), a spy on
/// the flooded console, then the audio.
fn page_run(
    b: &mut Browser,
    d: &Ringcastd,
    host: &str,
    ws: Option<SocketAddr>,
    dur: Duration,
) -> Result<(Figures, f64), String> {
    let link = transport_quic::local::web_link(
        &d.control_socket(),
        WEB_ID,
        Duration::from_secs(300),
        Duration::from_secs(3600),
    )?;
    let mut url = link.url(host);
    if let Some(ws) = ws {
        url = url.replacen("/#", &format!("/?ws=wss://{ws}/#"), 1);
    }
    // ringcastd's page allows connections to its own origin only (connect-src 'self'):
    // for the relay, a different port, the bench lifts that over DevTools (for both
    // variants alike) before the page loads.
    let tab = b.open("about:blank")?;
    let r = (|| {
        b.call(
            Some(&tab),
            "Page.setBypassCSP",
            serde_json::json!({ "enabled": true }),
        )?;
        b.call(
            Some(&tab),
            "Page.navigate",
            serde_json::json!({ "url": url }),
        )?;
        b.wait_for(
            &tab,
            "the page connected",
            "window.ringcast && ringcast.connected()",
            WAIT,
        )?;
        b.wait_listed(&tab, SNDNAME, WAIT)?;
        let (offset, pm) = calibrate(b, &tab)?;
        b.eval(&tab, &format!("ringcast.setStampClock({offset})"))?;
        b.eval(
            &tab,
            &format!("ringcast.openConsole('{VM}/{CONSOLE_DEV}', 'spy')"),
        )?;
        b.wait_for(
            &tab,
            "console attached",
            "ringcast.console().attached",
            WAIT,
        )?;
        b.eval(
            &tab,
            &format!("document.getElementById('jitter').value = {JITTER_MS}"),
        )?;
        b.eval(&tab, &format!("ringcast.play('{SNDNAME}')"))?;
        std::thread::sleep(WARMUP);
        b.eval(&tab, "ringcast.resetLongTasks()")?;
        let a0 = b.eval(&tab, "ringcast.audio() || {}")?;
        let n0 = b
            .eval(&tab, "ringcast.audioDelayCount()")?
            .as_u64()
            .unwrap_or(0);
        let c0 = b
            .eval(&tab, "ringcast.console().received")?
            .as_u64()
            .unwrap_or(0);
        std::thread::sleep(dur);
        let a = b.eval(&tab, "ringcast.audio()")?;
        let long = b.eval(&tab, "ringcast.longTasks()")?;
        let delays = b.eval(&tab, &format!("ringcast.audioDelays({n0})"))?;
        let c = b
            .eval(&tab, "ringcast.console().received")?
            .as_u64()
            .unwrap_or(0);
        if ws.is_some() != (b.eval(&tab, "ringcast.transport()")? == "websocket") {
            return Err("the page did not use the transport asked for".into());
        }
        let f = Figures {
            delays_ms: delays
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
            periods: num(&a, "periods") - num(&a0, "periods"),
            underruns: num(&a, "underruns") - num(&a0, "underruns"),
            late: num(&a, "late") - num(&a0, "late"),
            lost: num(&a, "skipped") - num(&a0, "skipped"),
            console_bytes: c - c0,
            long_tasks: num(&long, "count"),
            long_total_ms: long["totalMs"].as_f64().unwrap_or(0.0),
            long_max_ms: long["maxMs"].as_f64().unwrap_or(0.0),
        };
        Ok((f, pm))
    })();
    let _ = b.close(tab);
    r
}

fn run(opts: &Options) -> Result<Outcome, String> {
    opts.check_settings(&["secs", "loss", "delay_ms"])?;
    let dur = Duration::from_secs(match opts.setting_usize("secs")? {
        Some(s) if s > 0 => s as u64,
        Some(_) => return Err("--set secs must be > 0".into()),
        None if opts.quick => 5,
        None => 10,
    });
    let f = |k: &str, d: f64| -> Result<f64, String> {
        match opts.settings.iter().rev().find(|(x, _)| x == k) {
            Some((_, v)) => v.parse().map_err(|e| format!("--set {k}={v}: {e}")),
            None => Ok(d),
        }
    };
    let (loss, one_way) = (f("loss", 2.0)?, f("delay_ms", 20.0)?);
    let reps = opts.reps.unwrap_or(if opts.quick { 1 } else { 2 });
    let ringcastd = testbed::kit::bins::try_binary("ringcastd")?;
    let dir = opts.work_dir.join("web-latency");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let link = LossyLink::create(LinkSpec {
        loss_pct: loss,
        delay_ms: one_way,
        jitter_ms: 0.0,
        rate_mbit: 0.0,
        seed: 18,
    })
    .map_err(|e| format!("the lossy link (needs root): {e}"))?;
    let a = link.addr_a();
    let authz = dir.join("authorized_clients");
    let identity = crate::procs::authorized_client(&dir.join("client"), &authz, "all")?;
    let mut d = Ringcastd::with_launcher(&dir, &dir.join("state"), link.launcher_in_a(&ringcastd))
        .listen(&format!("{a}:7878"))
        .args(&[
            "--web".into(),
            "--authorized-clients".into(),
            authz.into_os_string(),
        ])
        .rust_log("warn");
    d.try_spawn()?;
    transport_quic::local::authorize(
        &d.control_socket(),
        &Rule::parse(&format!("{WEB_ID} */* all"))?,
    )?;
    let server: SocketAddr = d
        .server()
        .parse()
        .map_err(|e| format!("{}: {e}", d.server()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU32::new(devices::MAX_FRAMES));
    let audio = devices::start_audio(&d.socket(), frames, stop.clone())?;
    let flood = devices::start_flood(&d.socket(), Arc::new(AtomicBool::new(true)), stop.clone())?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (tcp, udp) = link
        .run_in_a(move || -> std::io::Result<_> {
            Ok((
                TcpListener::bind(SocketAddr::from((a, 0)))?,
                transport_quic::endpoint::udp_socket(SocketAddr::from((a, 0)))?,
            ))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the relay's sockets in namespace A: {e}"))?;
    let trust = Trust::KnownHosts(dir.join("known_hosts"));
    let relay = {
        let _g = rt.enter();
        relay::Relay::start(tcp, udp, server, identity.clone(), trust.clone())?
    };
    let mut browser = link
        .run_in_b(|| Browser::launch(&["--ignore-certificate-errors"]))
        .map_err(|e| e.to_string())??;

    let mut runs: Vec<(Variant, Figures)> = Vec::new();
    let mut notes = Vec::new();
    let mut failure = None;
    'all: for rep in 0..reps {
        for v in Variant::ALL {
            eprintln!("web-latency: rep {}/{reps}, {}", rep + 1, v.name());
            let r = match v {
                Variant::WebTransport => page_run(&mut browser, &d, &a.to_string(), None, dur),
                Variant::WebSocket => {
                    page_run(&mut browser, &d, &a.to_string(), Some(relay.addr()), dur)
                }
                Variant::Cli => {
                    let (id, t, addr) = (identity.clone(), trust.clone(), server.to_string());
                    link.run_in_b(move || cli::run(addr, id, t, JITTER_MS, WARMUP, dur))
                        .map_err(|e| e.to_string())
                        .and_then(|r| r)
                        .map(|f| (f, 0.0))
                }
            };
            match r {
                Ok((f, pm)) => {
                    if pm > 0.0 {
                        notes.push(format!(
                            "{} rep {}: page clock mapped to CLOCK_MONOTONIC within ±{pm:.2} ms",
                            v.name(),
                            rep + 1
                        ));
                    }
                    let mut s = f.delays_ms.clone();
                    s.sort_by(f64::total_cmp);
                    eprintln!(
                        "web-latency:   {} played, p50 {:.1} ms, p99 {:.1} ms, underruns {}, \
                         console {:.2} MB, main-thread tasks over 50 ms: {} ({:.0} ms, \
                         longest {:.0} ms)",
                        s.len(),
                        percentile(&s, 0.5),
                        percentile(&s, 0.99),
                        f.underruns,
                        f.console_bytes as f64 / 1e6,
                        f.long_tasks,
                        f.long_total_ms,
                        f.long_max_ms
                    );
                    runs.push((v, f));
                }
                Err(e) => {
                    failure = Some(format!("{}: {e}; ringcastd: {}", v.name(), d.log_tail(10)));
                    break 'all;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (pushed, refused) = audio.join().unwrap_or((0, 0));
    let _ = flood.join();
    let s = link.stats();
    drop(browser);
    drop(relay);
    drop(rt);
    drop(d);
    drop(link);
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let mut out = Outcome::default();
    let mut p99 = |v: Variant| -> Option<f64> {
        let fs: Vec<&Figures> = runs
            .iter()
            .filter(|(x, _)| *x == v)
            .map(|(_, f)| f)
            .collect();
        if fs.is_empty() {
            return None;
        }
        let mut all: Vec<f64> = fs
            .iter()
            .flat_map(|f| f.delays_ms.iter().copied())
            .collect();
        all.sort_by(f64::total_cmp);
        let sum = |g: fn(&Figures) -> u64| fs.iter().map(|f| g(f)).sum::<u64>() as f64;
        let secs = dur.as_secs_f64() * fs.len() as f64;
        let name = format!("{}@lossy{loss}%-{one_way}ms", v.name());
        let mut m = |metric: &str, value: f64, unit: &str| {
            out.measurements
                .push(Measurement::new(&name, metric, value, unit))
        };
        m("p50", percentile(&all, 0.5), "ms");
        m("p99", percentile(&all, 0.99), "ms");
        m("max", all.last().copied().unwrap_or(f64::NAN), "ms");
        m("played", all.len() as f64, "periods");
        m("received", sum(|f| f.periods), "periods");
        m("underruns", sum(|f| f.underruns), "count");
        m("late", sum(|f| f.late), "periods");
        m("lost", sum(|f| f.lost), "periods");
        m(
            "console_read",
            sum(|f| f.console_bytes) / 1e6 / secs,
            "MB/s",
        );
        if v != Variant::Cli {
            m("long_tasks", sum(|f| f.long_tasks) / secs, "per s");
            m(
                "long_task_time",
                fs.iter().map(|f| f.long_total_ms).sum::<f64>() / secs / 10.0,
                "% of main thread",
            );
            m(
                "longest_task",
                fs.iter().map(|f| f.long_max_ms).fold(0.0, f64::max),
                "ms",
            );
        }
        Some(percentile(&all, 0.99))
    };
    let (wt, ws, cl) = (
        p99(Variant::WebTransport),
        p99(Variant::WebSocket),
        p99(Variant::Cli),
    );
    if let (Some(wt), Some(ws), Some(cl)) = (wt, ws, cl) {
        out.measurements.push(Measurement::new(
            "browser/webtransport",
            "p99_vs_websocket",
            wt / ws,
            "x",
        ));
        out.measurements.push(Measurement::new(
            "browser/webtransport",
            "p99_vs_cli",
            wt / cl,
            "x",
        ));
    }
    notes.push(format!(
        "lossy link: {loss}% loss and {one_way} ms each way (UDP and TCP alike); A->B {} packets, \
         {} lost; B->A {} packets, {} lost",
        s.a_to_b.received, s.a_to_b.dropped_loss, s.b_to_a.received, s.b_to_a.dropped_loss
    ));
    notes.push(format!(
        "audio producer: {pushed} periods pushed, {refused} refused by a full ring; {reps} \
         repetition(s) of {} s per variant after {} ms of warm-up; fixed jitter target {JITTER_MS} ms",
        dur.as_secs(),
        WARMUP.as_millis()
    ));
    out.notes = notes;
    Ok(out)
}
