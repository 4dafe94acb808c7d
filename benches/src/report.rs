//! Results of a scenario: measurements, ratios against a baseline from the same run, the
//! printed table and the JSON lines under `target/bench-results/`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One figure: the median (or the stated aggregate) of a variant's repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// What was measured (`plugin`, `file`, ...).
    pub variant: String,
    /// Which quantity (`hvc0_throughput`, ...).
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Its unit (`MB/s`, `s`, `bool`, ...).
    pub unit: String,
}

impl Measurement {
    /// A measurement.
    pub fn new(variant: &str, metric: &str, value: f64, unit: &str) -> Measurement {
        Measurement {
            variant: variant.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// "Show `variant` as a ratio of `baseline`" for every metric both have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The variant under test.
    pub variant: String,
    /// The variant it is divided by.
    pub baseline: String,
}

/// What a scenario hands back.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every figure.
    pub measurements: Vec<Measurement>,
    /// Which ratios to show.
    pub comparisons: Vec<Comparison>,
    /// Free-form lines printed under the table (repetition spread, targets).
    pub notes: Vec<String>,
}

/// A printed row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Variant.
    pub variant: String,
    /// Metric.
    pub metric: String,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: String,
    /// Baseline variant and its value for the same metric.
    pub baseline: Option<(String, f64)>,
}

impl Row {
    /// value / baseline, when there is a non-zero baseline.
    pub fn ratio(&self) -> Option<f64> {
        match self.baseline {
            Some((_, b)) if b != 0.0 => Some(self.value / b),
            _ => None,
        }
    }
}

impl Outcome {
    /// One row per measurement without a comparison, and one per (measurement, baseline)
    /// pair for variants that have comparisons, in measurement order.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for m in &self.measurements {
            let baselines: Vec<(String, f64)> = self
                .comparisons
                .iter()
                .filter(|c| c.variant == m.variant)
                .filter_map(|c| {
                    self.measurements
                        .iter()
                        .find(|b| b.variant == c.baseline && b.metric == m.metric)
                        .map(|b| (b.variant.clone(), b.value))
                })
                .collect();
            let row = |baseline| Row {
                variant: m.variant.clone(),
                metric: m.metric.clone(),
                value: m.value,
                unit: m.unit.clone(),
                baseline,
            };
            if baselines.is_empty() {
                rows.push(row(None));
            } else {
                rows.extend(baselines.into_iter().map(|b| row(Some(b))));
            }
        }
        rows
    }

    /// The ratios as measurements of their own (`plugin/file`, unit `x`), for the JSON lines.
    pub fn ratio_measurements(&self) -> Vec<Measurement> {
        self.rows()
            .iter()
            .filter_map(|r| {
                let ratio = r.ratio()?;
                let (b, _) = r.baseline.as_ref()?;
                Some(Measurement::new(
                    &format!("{}/{}", r.variant, b),
                    &format!("{}_ratio", r.metric),
                    ratio,
                    "x",
                ))
            })
            .collect()
    }
}

fn number(v: f64) -> String {
    if v == 0.0 || v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// The table: variant, metric, value, unit, baseline, ratio.
pub fn render_table(title: &str, outcome: &Outcome) -> String {
    let header = ["variant", "metric", "value", "unit", "baseline", "ratio"];
    let mut cells: Vec<[String; 6]> = vec![header.map(String::from)];
    for r in outcome.rows() {
        let (baseline, ratio) = match (&r.baseline, r.ratio()) {
            (Some((name, v)), Some(q)) => (format!("{name} {}", number(*v)), format!("{q:.3}")),
            (Some((name, v)), None) => (format!("{name} {}", number(*v)), "-".into()),
            _ => ("-".into(), "-".into()),
        };
        cells.push([
            r.variant,
            r.metric,
            number(r.value),
            r.unit,
            baseline,
            ratio,
        ]);
    }
    let mut width = [0usize; 6];
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("== {title}\n");
    for (i, row) in cells.iter().enumerate() {
        let mut line = String::new();
        for (j, (c, w)) in row.iter().zip(width).enumerate() {
            // Text left, numbers right.
            if j == 2 || j == 5 {
                let _ = write!(line, "{c:>w$}  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = width.iter().sum::<usize>() + 2 * 5;
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    for n in &outcome.notes {
        out.push_str(n);
        out.push('\n');
    }
    out
}

fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// One JSON line `{"scenario","variant","metric","value","unit","run_id","time"}`.
pub fn json_line(scenario: &str, m: &Measurement, run_id: &str, time: &str) -> String {
    format!(
        "{{\"scenario\":{},\"variant\":{},\"metric\":{},\"value\":{},\"unit\":{},\"run_id\":{},\"time\":{}}}",
        json_string(scenario),
        json_string(&m.variant),
        json_string(&m.metric),
        json_number(m.value),
        json_string(&m.unit),
        json_string(run_id),
        json_string(time)
    )
}

/// Appends the measurements and their ratios to `<dir>/<scenario>.jsonl`; returns the file.
pub fn append_jsonl(
    dir: &Path,
    scenario: &str,
    outcome: &Outcome,
    run_id: &str,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{scenario}.jsonl"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let time = utc_rfc3339(SystemTime::now());
    let mut text = String::new();
    for m in outcome
        .measurements
        .iter()
        .chain(&outcome.ratio_measurements())
    {
        text.push_str(&json_line(scenario, m, run_id, &time));
        text.push('\n');
    }
    f.write_all(text.as_bytes())?;
    Ok(path)
}

/// `2026-11-23T20:31:05Z`.
pub fn utc_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The median (mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_466_096);
        assert_eq!(utc_rfc3339(t), "2026-11-23T20:34:56Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn rows_pair_each_variant_with_its_baselines() {
        let o = Outcome {
            measurements: vec![
                Measurement::new("plugin", "tput", 9.0, "MB/s"),
                Measurement::new("file", "tput", 10.0, "MB/s"),
                Measurement::new("socket", "tput", 6.0, "MB/s"),
                Measurement::new("plugin", "only_here", 1.0, "bool"),
            ],
            comparisons: vec![
                Comparison {
                    variant: "plugin".into(),
                    baseline: "file".into(),
                },
                Comparison {
                    variant: "plugin".into(),
                    baseline: "socket".into(),
                },
            ],
            notes: vec![],
        };
        let rows = o.rows();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].ratio(), Some(0.9));
        assert_eq!(rows[1].ratio(), Some(1.5));
        assert_eq!(rows[4].baseline, None);
        let ratios = o.ratio_measurements();
        assert_eq!(ratios.len(), 2);
        assert_eq!(ratios[0].variant, "plugin/file");
        assert_eq!(ratios[0].metric, "tput_ratio");
        let table = render_table("t", &o);
        assert!(table.contains("file 10"), "{table}");
    }

    #[test]
    fn json_lines_escape_strings() {
        let m = Measurement::new("a\"b", "m", 1.5, "MB/s");
        assert_eq!(
            json_line("e", &m, "r1", "t"),
            r#"{"scenario":"e","variant":"a\"b","metric":"m","value":1.5,"unit":"MB/s","run_id":"r1","time":"t"}"#
        );
        let nan = Measurement::new("v", "m", f64::NAN, "x");
        assert!(json_line("e", &nan, "r", "t").contains("\"value\":null"));
    }
}
