//! B2 (docs/benchmarks.md §B2): the same console flood across testbed's lossy link (1% loss,
//! 10 ms each way, so 20 ms RTT), ringcastd's QUIC server in namespace A and the library
//! client in namespace B, against TLS 1.3 over TCP across the same link, for `limit` or
//! `bytes`, whichever comes first.
//!
//! ringcast runs once per QUIC congestion controller (`ringcastd --congestion`); the TCP
//! baseline once per TCP controller, set on its sockets with `TCP_CONGESTION` (cubic, and
//! bbr, which is this host's default), so that every figure says which controller it had.
//! Only throughput is reported: the link's forwarder threads run in this process, so CPU
//! figures would not be comparable with §B.

use std::path::{Path, PathBuf};
use std::time::Duration;

use client::Identity;
use testbed::lossy::{LinkSpec, LossyLink};
use transport_quic::proto::Congestion;

use super::{run_ringcast, Bins, Net, Run};
use crate::baselines::{self, Baseline, Place, TcpCc};
use crate::report::{median, Comparison, Measurement, Outcome};
use crate::scenario::Options;

/// The link and what ringcastd needs to admit a client from beyond loopback.
pub(super) struct Ctx {
    pub(super) link: LossyLink,
    pub(super) identity: Identity,
    pub(super) authz: PathBuf,
}

/// The metric name of B2's figures (the variants are compared on it).
const METRIC: &str = "lossy_throughput";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V2 {
    Ringcast(Congestion),
    Tls(TcpCc),
}

impl V2 {
    fn name(self) -> String {
        match self {
            V2::Ringcast(c) => format!("ringcast-quic-{}", c.name()),
            V2::Tls(cc) => Baseline::SocatTls13(cc).name().to_owned(),
        }
    }
}

fn setup(dir: &Path) -> Result<Ctx, String> {
    let link = LossyLink::create(LinkSpec {
        loss_pct: 1.0,
        delay_ms: 10.0,
        jitter_ms: 0.0,
        rate_mbit: 0.0,
        seed: 5,
    })
    .map_err(|e| format!("LossyLink: {e}"))?;
    let authz = dir.join("b2-authorized_clients");
    let identity = crate::procs::authorized_client(&dir.join("b2-client"), &authz, "read")?;
    Ok(Ctx {
        link,
        identity,
        authz,
    })
}

/// Runs B2 and adds its measurements, comparisons and notes to `o`.
pub(super) fn run(bins: &Bins, opts: &Options, reps: usize, o: &mut Outcome) -> Result<(), String> {
    let (bytes, limit) = if opts.quick {
        (256u64 << 20, Duration::from_secs(10))
    } else {
        (512u64 << 20, Duration::from_secs(30))
    };
    let dir = opts.work_dir.join(format!("b2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ctx = setup(&dir)?;
    let place = Place::Netns {
        ns_a: ctx.link.ns_a().to_owned(),
        ns_b: ctx.link.ns_b().to_owned(),
        addr_a: ctx.link.addr_a(),
        addr_b: ctx.link.addr_b(),
    };
    let variants = [
        V2::Ringcast(Congestion::Bbr),
        V2::Tls(TcpCc::Cubic),
        V2::Ringcast(Congestion::Cubic),
        V2::Tls(TcpCc::Bbr),
        V2::Ringcast(Congestion::NewReno),
    ];
    let mut runs: Vec<(V2, Vec<Run>)> = variants.iter().map(|&v| (v, vec![])).collect();
    for rep in 0..reps {
        for (v, rs) in runs.iter_mut() {
            eprintln!(
                "b2: rep {}/{reps}: {} ({} MiB or {} s)",
                rep + 1,
                v.name(),
                bytes >> 20,
                limit.as_secs()
            );
            let r = match *v {
                V2::Ringcast(c) => run_ringcast(
                    bins,
                    opts,
                    bytes,
                    false,
                    Net {
                        lossy: Some(&ctx),
                        congestion: c,
                        limit: Some(limit),
                    },
                )?,
                V2::Tls(cc) => {
                    let f = baselines::run_within(Baseline::SocatTls13(cc), &place, bytes, limit)
                        .map_err(|e| e.to_string())?;
                    Run {
                        mbps: f.mb_per_s(),
                        bytes: f.bytes,
                        ..Run::default()
                    }
                }
            };
            eprintln!(
                "b2:   {:.2} MB/s ({} MiB)",
                r.mbps,
                r.bytes as f64 / f64::from(1 << 20)
            );
            rs.push(r);
        }
    }
    let stats = ctx.link.stats();
    for (v, rs) in &runs {
        let mbps: Vec<f64> = rs.iter().map(|r| r.mbps).collect();
        o.measurements
            .push(Measurement::new(&v.name(), METRIC, median(&mbps), "MB/s"));
        if reps > 1 {
            let (lo, hi) = mbps
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            o.notes.push(format!(
                "{}: MB/s over {reps} reps {lo:.2}..{hi:.2}",
                v.name()
            ));
        }
    }
    for &v in &variants {
        if let V2::Ringcast(_) = v {
            for cc in [TcpCc::Cubic, TcpCc::Bbr] {
                o.comparisons.push(Comparison {
                    variant: v.name(),
                    baseline: V2::Tls(cc).name(),
                });
            }
        }
    }
    let get = |v: V2| {
        o.measurements
            .iter()
            .find(|m| m.variant == v.name() && m.metric == METRIC)
            .map_or(f64::NAN, |m| m.value)
    };
    let best = [Congestion::Cubic, Congestion::NewReno, Congestion::Bbr]
        .into_iter()
        .max_by(|a, b| get(V2::Ringcast(*a)).total_cmp(&get(V2::Ringcast(*b))))
        .unwrap_or(Congestion::Bbr);
    let (rc, cubic, bbr) = (
        get(V2::Ringcast(best)),
        get(V2::Tls(TcpCc::Cubic)),
        get(V2::Tls(TcpCc::Bbr)),
    );
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    o.notes.push(format!(
        "B2 target >= 10x TLS/TCP on the lossy link (best ringcast: --congestion {}): \
         vs TCP cubic {:.1}x {}; vs TCP bbr {:.1}x {}",
        best.name(),
        rc / cubic,
        mark(rc >= 10.0 * cubic),
        rc / bbr,
        mark(rc >= 10.0 * bbr)
    ));
    o.notes.push(format!(
        "B2: {} MiB or {} s from the first byte, whichever first; lossy link 1% loss each \
         way, 10 ms each way (seed 5), ringcastd (QUIC server) in A, client in B; TLS 1.3 \
         AES-128-GCM over TCP (socat OPENSSL, TCP_CONGESTION set on both sockets) sender in A; \
         link counters A->B: {} packets forwarded, {} lost",
        bytes >> 20,
        limit.as_secs(),
        stats.a_to_b.forwarded,
        stats.a_to_b.dropped_loss
    ));
    drop(ctx);
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
