//! Soak: the load scenario of `tests/load.rs` (256 writing consoles in 8 fake QEMU
//! processes, 99 clients following one console over QUIC, one attached client that never
//! reads) for `--minutes N`, sampling ringcastd's RSS every 10 s and reporting the series
//! and its slope after the first minute of warm-up.
//!
//! ```text
//! cargo run --release -p client --example soak -- --minutes 10
//! ```

use testbed::load as loadgen;

use std::time::Duration;

fn main() {
    if loadgen::producer_main_if_child() {
        return;
    }
    let mut minutes = 10.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .and_then(|m| m.parse().ok())
                    .expect("--minutes N")
            }
            other => panic!("unknown argument {other:?} (use --minutes N)"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = loadgen::LoadConfig {
        processes: 8,
        devices_per_process: 32,
        duration: Duration::from_secs_f64(minutes * 60.0),
        rate: 16 << 10,
        followed_rate: 256 << 10,
        followers: 99,
        sample_every: Duration::from_secs(10),
    };
    let r = rt.block_on(loadgen::run(cfg, &[]));
    println!("t_s,rss_kib");
    for (t, kib) in &r.rss_kib {
        println!("{t:.0},{kib}");
    }
    println!(
        "devices {} followed bytes {} base {} KiB bound {} KiB max {} KiB slope after 60 s {:.1} KiB/min",
        r.devices,
        r.followed_bytes,
        r.base_kib,
        r.bound_kib,
        r.rss_kib.iter().map(|s| s.1).max().unwrap_or(0),
        r.slope_kib_per_min(60.0)
    );
}
