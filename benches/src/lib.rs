//! Benchmarks of ringcast against the tools people use today.
//!
//! * `benches/ring.rs`: criterion micro-benches of the ring (docs/benchmarks.md §A).
//! * `ringcast-bench` (`src/bin/ringcast-bench.rs`): whole pipelines, one scenario at a
//!   time, each figure a ratio against a baseline measured in the same run; a table per
//!   scenario and JSON lines under `target/bench-results/<scenario>.jsonl`.
//!
//! Scenarios live in [`scenario::registry`]: A ([`a_ring`]), B ([`b_capture`]), C
//! ([`c_audio`]), D ([`d_scale`]), E ([`e_real_qemu`]) and web-latency ([`web_latency`]).

pub mod a_ring;
pub mod b_capture;
pub mod baselines;
pub mod c_audio;
pub mod d_scale;
pub mod e_real_qemu;
pub mod f_wan_audio;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod uptime;
pub mod web_latency;
