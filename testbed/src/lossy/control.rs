//! The control socket of a running link: cut, loss and statistics commands.

use super::*;

/// Cuts, loss changes and counters of a link, usable from any thread.
#[derive(Debug, Clone)]
pub struct LinkControl {
    pub(super) shared: Arc<Shared>,
}

impl LinkControl {
    /// See [`LossyLink::set_cut`].
    pub fn set_cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::Relaxed);
    }

    /// See [`LossyLink::set_loss`].
    pub fn set_loss(&self, dir: Dir, pct: f64) {
        self.shared.loss_ppb[dir as usize].store(pct_to_ppb(pct), Ordering::Relaxed);
    }

    /// See [`LossyLink::stats`].
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            a_to_b: self.shared.counters[0].snapshot(),
            b_to_a: self.shared.counters[1].snapshot(),
        }
    }

    /// Carries out one control command (the language of [`LossyLink::serve_control`]) and
    /// returns the answer.
    pub fn command(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let pct = |w: Option<&&str>| {
            w.and_then(|w| w.parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
        };
        match words.as_slice() {
            ["cut", "on"] => {
                self.set_cut(true);
                "ok cut".into()
            }
            ["cut", "off"] => {
                self.set_cut(false);
                "ok restored".into()
            }
            [cmd @ ("loss" | "loss-ab" | "loss-ba"), rest @ ..] => match pct(rest.first()) {
                Some(p) if rest.len() == 1 => {
                    if *cmd != "loss-ba" {
                        self.set_loss(Dir::AToB, p);
                    }
                    if *cmd != "loss-ab" {
                        self.set_loss(Dir::BToA, p);
                    }
                    format!("ok {cmd} {p}")
                }
                _ => "error: loss wants a percentage 0-100".into(),
            },
            ["stats"] => {
                let s = self.stats();
                let fmt = |d: &DirStats| {
                    format!(
                        "received={} forwarded={} bytes={} dropped_loss={} dropped_cut={} dropped_queue={} write_errors={}",
                        d.received, d.forwarded, d.forwarded_bytes, d.dropped_loss, d.dropped_cut, d.dropped_queue, d.write_errors
                    )
                };
                format!("a_to_b {} | b_to_a {}", fmt(&s.a_to_b), fmt(&s.b_to_a))
            }
            _ => "error: commands are: cut on, cut off, loss PCT, loss-ab PCT, loss-ba PCT, stats"
                .into(),
        }
    }
}
