//! The test guest's own timings: `/init` logs `rc: [UPTIME] message` lines on ttyS1, with
//! UPTIME from `/proc/uptime` (10 ms resolution), e.g.
//!
//! ```text
//! rc: [3.41] console: start ttyS0 1048576 bytes seed 11, hvc0 67108864 bytes seed 12
//! rc: [16.02] console: hvc0 done
//! rc: [17.30] console: ttyS0 done
//! ```

/// Every `rc: [UPTIME] message` line of a guest log, in order. Other lines (kernel
/// messages, `rcguest:` reports) and lines whose stamp does not parse are skipped; a line
/// may carry a `\r` (the log is a tty).
pub fn events(log: &str) -> Vec<(f64, String)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.trim_end_matches('\r').strip_prefix("rc: [")?;
            let (stamp, msg) = rest.split_once("] ")?;
            let t: f64 = stamp.trim().parse().ok()?;
            t.is_finite().then(|| (t, msg.to_owned()))
        })
        .collect()
}

/// Uptime of the first event whose message starts with `prefix`.
pub fn first(events: &[(f64, String)], prefix: &str) -> Option<f64> {
    events
        .iter()
        .find(|(_, m)| m.starts_with(prefix))
        .map(|(t, _)| *t)
}

/// Seconds the guest spent writing each console device in the `console` scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsoleTimes {
    /// From `console: start` to `console: hvc0 done`.
    pub hvc0_s: f64,
    /// From `console: start` to `console: ttyS0 done`.
    pub ttys0_s: f64,
}

/// The console phase's timings from a guest log.
pub fn console_times(log: &str) -> Result<ConsoleTimes, String> {
    let ev = events(log);
    let get = |p: &str| first(&ev, p).ok_or_else(|| format!("no '{p}' line in the guest log"));
    let start = get("console: start")?;
    let hvc0 = get("console: hvc0 done")?;
    let ttys0 = get("console: ttyS0 done")?;
    if hvc0 < start || ttys0 < start {
        return Err(format!(
            "guest log stamps go backwards: start {start}, hvc0 {hvc0}, ttyS0 {ttys0}"
        ));
    }
    Ok(ConsoleTimes {
        hvc0_s: hvc0 - start,
        ttys0_s: ttys0 - start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "[    0.000000] Linux version 6.1.0\r\n\
        rc: [1.92] init start, kernel 6.1.0-56-amd64, scenario 'console'\r\n\
        rc: [2.61] modules loaded\n\
        rc: [2.75] console: start ttyS0 1048576 bytes seed 11, hvc0 67108864 bytes seed 12\n\
        rcguest: wrote 67108864 bytes to /dev/hvc0 sha256=ab\n\
        rc: [15.25] console: hvc0 done\n\
        rc: [bad] console: ttyS0 done\n\
        rc: [17.00] console: ttyS0 done\n\
        rc: [17.01] powering off\n\
        rc: scenario console done\n";

    #[test]
    fn parses_stamped_lines_and_skips_the_rest() {
        let ev = events(LOG);
        assert_eq!(ev.len(), 6);
        assert_eq!(
            ev[0],
            (
                1.92,
                "init start, kernel 6.1.0-56-amd64, scenario 'console'".into()
            )
        );
        assert_eq!(first(&ev, "modules loaded"), Some(2.61));
        assert_eq!(first(&ev, "console: ttyS0 done"), Some(17.0));
        assert_eq!(first(&ev, "tone:"), None);
    }

    #[test]
    fn console_times_are_done_minus_start() {
        let t = console_times(LOG).unwrap();
        assert!((t.hvc0_s - 12.5).abs() < 1e-9, "{t:?}");
        assert!((t.ttys0_s - 14.25).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn missing_or_backwards_lines_are_errors() {
        let e = console_times("rc: [1.0] console: start x\nrc: [2.0] console: hvc0 done\n");
        assert!(e.unwrap_err().contains("ttyS0 done"));
        let back = "rc: [5.0] console: start\nrc: [4.0] console: hvc0 done\n\
                    rc: [6.0] console: ttyS0 done\n";
        assert!(console_times(back).unwrap_err().contains("backwards"));
    }
}
