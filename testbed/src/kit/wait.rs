//! Waiting with a deadline. Every wait says in its failure what it waited for, how long,
//! and why each attempt failed (identical consecutive errors are counted, not repeated).

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// The errors of the attempts so far, in order, with runs of the same error counted.
#[derive(Debug, Default, Clone)]
pub struct Attempts {
    runs: Vec<(String, u32)>,
    total: u32,
}

impl Attempts {
    /// Records one failed attempt.
    pub fn record(&mut self, error: impl Display) {
        let e = error.to_string();
        self.total += 1;
        match self.runs.last_mut() {
            Some((last, n)) if *last == e => *n += 1,
            _ => self.runs.push((e, 1)),
        }
    }

    /// Failed attempts so far.
    pub fn count(&self) -> u32 {
        self.total
    }

    /// The errors, one line each (the first and the last few when there are many).
    pub fn summary(&self) -> String {
        if self.runs.is_empty() {
            return "no attempt failed".into();
        }
        let line = |(e, n): &(String, u32)| {
            if *n > 1 {
                format!("  {n} x {e}")
            } else {
                format!("  {e}")
            }
        };
        let mut out: Vec<String> = Vec::new();
        if self.runs.len() > 8 {
            out.extend(self.runs[..2].iter().map(line));
            out.push(format!("  ... {} more ...", self.runs.len() - 7));
            out.extend(self.runs[self.runs.len() - 5..].iter().map(line));
        } else {
            out.extend(self.runs.iter().map(line));
        }
        format!("{} failed attempts:\n{}", self.total, out.join("\n"))
    }
}

/// Polls `f` until it returns true; after `timeout`, an error naming `what`.
pub fn try_wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// [`try_wait_until`], panicking on the time-out.
pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    try_wait_until(what, timeout, f).unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `f` until it succeeds; after `timeout`, an error naming `what` with every
/// attempt's error.
pub fn try_wait_for<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, String> {
    let start = Instant::now();
    let mut attempts = Attempts::default();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => attempts.record(e),
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; {}",
                attempts.summary()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// [`try_wait_for`], panicking on the time-out.
pub fn wait_for<T, E: Display>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<T, E>,
) -> T {
    try_wait_for(what, timeout, f).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_out_names_what_was_awaited_and_each_distinct_error() {
        let mut n = 0;
        let e = try_wait_for("the answer", Duration::from_millis(100), || {
            n += 1;
            Err::<(), _>(if n < 3 { "refused" } else { "timed out" })
        })
        .unwrap_err();
        assert!(e.contains("waiting for the answer"), "{e}");
        assert!(e.contains("2 x refused"), "{e}");
        assert!(e.contains("x timed out"), "{e}");
        let e = try_wait_until("nothing", Duration::from_millis(30), || false).unwrap_err();
        assert!(e.contains("waiting for nothing"), "{e}");
    }

    #[test]
    fn success_returns_the_value() {
        let mut n = 0;
        let v = wait_for("the third try", Duration::from_secs(5), || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err("not yet")
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn many_errors_are_summarised() {
        let mut a = Attempts::default();
        for i in 0..20 {
            a.record(format!("error {i}"));
        }
        let s = a.summary();
        assert!(s.starts_with("20 failed attempts"), "{s}");
        assert!(
            s.contains("error 0") && s.contains("error 19") && !s.contains("error 10"),
            "{s}"
        );
    }
}
