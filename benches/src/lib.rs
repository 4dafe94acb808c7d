//! Benchmarks of ringcast against the tools people use today.
//!
//! * `benches/ring.rs`: criterion micro-benches of the ring (BENCHMARKS.md §A).
//! * `ringcast-bench` (`src/bin/ringcast-bench.rs`): whole pipelines, one scenario at a
//!   time, each figure a ratio against a baseline measured in the same run; a table per
//!   scenario and JSON lines under `target/bench-results/<scenario>.jsonl`.
//!
//! Scenarios live in [`scenario::registry`]; so far E (real QEMU, [`e_real_qemu`]).

pub mod b_capture;
pub mod baselines;
pub mod c_audio;
pub mod e_real_qemu;
pub mod report;
pub mod scenario;
pub mod uptime;
