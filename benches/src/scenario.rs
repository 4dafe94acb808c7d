//! The scenarios `ringcast-bench` knows (docs/benchmarks.md, A–F). Adding one: a module with a
//! `run(&Options) -> Result<Outcome, String>` and an entry in [`registry`].

use std::path::PathBuf;

use crate::report::Outcome;

/// What every scenario is given.
#[derive(Debug, Clone)]
pub struct Options {
    /// Smaller sizes and one repetition, to check the setup.
    pub quick: bool,
    /// Identifies this invocation in the JSON lines.
    pub run_id: String,
    /// Scratch space for this invocation (removed afterwards unless `--keep`).
    pub work_dir: PathBuf,
    /// The workspace's `target/` directory.
    pub target_dir: PathBuf,
    /// Keep each run's files (logs, QEMU's stderr, outputs) in `work_dir`.
    pub keep: bool,
    /// Repetitions instead of the scenario's default.
    pub reps: Option<usize>,
    /// Extra arguments for every QEMU a scenario starts (e.g. `-trace NAME`).
    pub qemu_args: Vec<String>,
    /// Extra `config=` for the plugin, appended with `:` (e.g. `ring=4M`).
    pub plugin_opts: Option<String>,
    /// Scenario knobs from `--set KEY=VALUE` (each scenario documents its keys and rejects
    /// unknown ones).
    pub settings: Vec<(String, String)>,
}

impl Options {
    /// Checks every `--set` key is one of `known`.
    pub fn check_settings(&self, known: &[&str]) -> Result<(), String> {
        match self
            .settings
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("unknown --set {k} (known: {})", known.join(", "))),
            None => Ok(()),
        }
    }

    /// The `--set` value of `key` as a number, if given.
    pub fn setting_usize(&self, key: &str) -> Result<Option<usize>, String> {
        match self.settings.iter().rev().find(|(k, _)| k == key) {
            Some((_, v)) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--set {key}={v}: not a number")),
            None => Ok(None),
        }
    }
}

/// A scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Name on the command line and of the JSON lines file (`e` → `e.jsonl`).
    pub key: &'static str,
    /// One line.
    pub title: &'static str,
    /// What it runs, its variants and baselines (for `--help`).
    pub about: &'static str,
    /// Runs it; progress goes to stderr.
    pub run: fn(&Options) -> Result<Outcome, String>,
}

/// Every scenario, in the order `all` runs them.
pub fn registry() -> &'static [Scenario] {
    &[
        crate::a_ring::SCENARIO,
        crate::b_capture::SCENARIO,
        crate::c_audio::SCENARIO,
        crate::d_scale::SCENARIO,
        crate::e_real_qemu::SCENARIO,
        crate::web_latency::SCENARIO,
        crate::f_wan_audio::SCENARIO,
    ]
}

/// The scenario named `key` (case-insensitive).
pub fn find(key: &str) -> Option<&'static Scenario> {
    registry().iter().find(|s| s.key.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_findable() {
        let r = registry();
        for (i, s) in r.iter().enumerate() {
            assert!(r[i + 1..].iter().all(|o| o.key != s.key), "{}", s.key);
            assert_eq!(find(&s.key.to_uppercase()).unwrap().key, s.key);
        }
        assert!(find("nope").is_none());
    }
}
