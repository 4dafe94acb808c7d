//! Load: 256 consoles in 8 fake QEMU processes write continuously into one ringcastd while
//! 99 clients follow one console over QUIC and a 100th is attached but never reads.
//! ringcastd's RSS stays under a bound derived from its configuration, every follower
//! receives every byte, and the stalled client later reads everything from the spool.
//! `cargo run --release -p client --example soak -- --minutes 10` runs it longer.

use testbed::load as loadgen;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringcastd_memory_stays_bounded_with_256_writing_consoles_99_followers_and_a_stalled_client(
) {
    if testbed::kit::skip_slow("load test") {
        return;
    }
    if loadgen::producer_main_if_child() {
        return;
    }
    let report = loadgen::run(
        loadgen::LoadConfig {
            processes: 8,
            devices_per_process: 32,
            duration: Duration::from_secs(20),
            rate: 16 << 10,
            followed_rate: 512 << 10,
            followers: 99,
            sample_every: Duration::from_secs(2),
        },
        &[
            "--exact",
            "ringcastd_memory_stays_bounded_with_256_writing_consoles_99_followers_and_a_stalled_client",
            "--nocapture",
        ],
    )
    .await;
    assert_eq!(report.devices, 256);
    eprintln!("{report:?}");
}
