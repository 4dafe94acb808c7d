//! Tables for people. `ringcastd stats` (on the server's control socket) and `ringcast stats`
//! (over the network) both print [`stats_table`], so a counter has the same column name and
//! the same rendering wherever it is read; `ringcast list` prints [`list_table`].
//!
//! Every column is as wide as its widest cell (names of any length never run into the next
//! column), columns are two spaces apart and left-aligned, and control characters in cells
//! (names and reasons come from other machines) are shown escaped, never sent to the
//! terminal.

use crate::audio::SampleFormat;
use crate::codec::{DeviceEntry, DeviceKind, StatsEntry};

/// The columns of [`stats_table`], in order.
pub const STATS_COLUMNS: [&str; 15] = [
    "DEVICE",
    "KIND",
    "STATE",
    "BYTES",
    "JOURNAL",
    "LOST:FLIGHT",
    "LOST:AUDIO",
    "SUB-GAPS",
    "SPOOL-ERR",
    "LOST:NO-SPOOL",
    "RING FILL",
    "INPUT",
    "REGS",
    "SUBS",
    "POISONED",
];

/// The columns of [`list_table`], in order.
pub const LIST_COLUMNS: [&str; 6] = ["DEVICE", "KIND", "STATE", "FORMAT", "BYTES/PERIODS", "SUBS"];

/// What [`stats_table`] and [`list_table`] print after the header when there is no device.
pub const NO_DEVICES: &str = "(no devices)";

/// `cell` with control and invisible characters escaped (`\n`, `\u{1b}`, ...; see
/// [`crate::names::escape`]), so that it takes one line and cannot drive the terminal.
pub fn printable(cell: &str) -> String {
    crate::names::escape(cell).into_owned()
}

/// Renders `rows` (the first is the header) with every column as wide as its widest cell,
/// two spaces between columns, no trailing spaces.
pub fn render(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn header(columns: &[&str]) -> Vec<String> {
    columns.iter().map(|c| c.to_string()).collect()
}

/// `VM/DEVICE`.
pub fn device_name(d: &DeviceEntry) -> String {
    format!("{}/{}", d.vm, d.device)
}

/// The audio format as `48000Hz 2ch s16le`, or `-`.
pub fn format_name(d: &DeviceEntry) -> String {
    let Some(f) = d.audio else {
        return "-".into();
    };
    let sample = match SampleFormat::from_wire(f.sample_format) {
        Some(s) if s.has_byte_order() => {
            format!("{}{}", s.name(), if f.big_endian { "be" } else { "le" })
        }
        Some(s) => s.name().to_string(),
        None => format!("fmt{}", f.sample_format),
    };
    format!("{}Hz {}ch {sample}", f.rate, f.channels)
}

/// The stats table: one row per device, the columns of [`STATS_COLUMNS`]. A `-` marks a
/// counter that does not apply to the device's kind.
pub fn stats_table(entries: &[StatsEntry]) -> String {
    let mut rows = vec![header(&STATS_COLUMNS)];
    for s in entries {
        let d = &s.device;
        let console = d.kind == DeviceKind::Console;
        let only_console = |v: String| if console { v } else { "-".into() };
        let (bytes, lost_audio, sub_gaps) = if console {
            (
                d.bytes.to_string(),
                "-".to_string(),
                format!("{} B", s.subscriber_gap_bytes),
            )
        } else {
            (
                format!("{} ({} periods)", d.bytes, d.periods),
                s.dropped_audio_overflow.to_string(),
                format!("{} periods", s.subscriber_dropped_periods),
            )
        };
        let fill = if s.ring_capacity == 0 {
            "-".to_string()
        } else {
            format!(
                "{}/{} ({}%)",
                s.ring_fill,
                s.ring_capacity,
                u128::from(s.ring_fill) * 100 / u128::from(s.ring_capacity)
            )
        };
        rows.push(vec![
            device_name(d),
            d.kind.name().into(),
            d.state.name().into(),
            bytes,
            only_console(format!("{}..{}", d.journal_start, d.journal_end)),
            only_console(s.dropped_flight_recorder.to_string()),
            lost_audio,
            sub_gaps,
            only_console(s.spool_errors.to_string()),
            only_console(s.dropped_no_spool.to_string()),
            fill,
            only_console(s.input_bytes.to_string()),
            s.registrations.to_string(),
            d.subscribers.to_string(),
            s.poisoned.clone().unwrap_or_else(|| "no".into()),
        ]);
    }
    let mut out = render(&rows);
    if entries.is_empty() {
        out.push_str(NO_DEVICES);
        out.push('\n');
    }
    out
}

/// The device list: one row per device, the columns of [`LIST_COLUMNS`]. BYTES/PERIODS is
/// the console's journal end or the audio device's periods.
pub fn list_table(entries: &[DeviceEntry]) -> String {
    let mut rows = vec![header(&LIST_COLUMNS)];
    for d in entries {
        let amount = match d.kind {
            DeviceKind::Console => d.journal_end,
            DeviceKind::Audio => d.periods,
        };
        rows.push(vec![
            device_name(d),
            d.kind.name().into(),
            d.state.name().into(),
            format_name(d),
            amount.to_string(),
            d.subscribers.to_string(),
        ]);
    }
    let mut out = render(&rows);
    if entries.is_empty() {
        out.push_str(NO_DEVICES);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{AudioFormat, DeviceState};

    fn entry(vm: &str, device: &str, kind: DeviceKind) -> DeviceEntry {
        DeviceEntry {
            vm: vm.into(),
            device: device.into(),
            kind,
            state: DeviceState::Attached,
            audio: (kind == DeviceKind::Audio).then_some(AudioFormat {
                rate: 44100,
                channels: 2,
                sample_format: 3,
                big_endian: false,
            }),
            bytes: 1234,
            periods: 7,
            journal_start: 0,
            journal_end: 1234,
            subscribers: 1,
        }
    }

    fn stats(device: DeviceEntry) -> StatsEntry {
        StatsEntry {
            device,
            dropped_flight_recorder: 11,
            dropped_audio_overflow: 12,
            subscriber_gap_bytes: 13,
            subscriber_dropped_periods: 14,
            ring_fill: 15,
            ring_capacity: 1 << 16,
            input_bytes: 16,
            registrations: 2,
            spool_errors: 17,
            dropped_no_spool: 18,
            poisoned: None,
        }
    }

    /// Splits a rendered line at its column starts (the header's word starts).
    fn cells<'a>(header: &str, line: &'a str) -> Vec<&'a str> {
        let starts: Vec<usize> = header
            .char_indices()
            .filter(|&(i, c)| c != ' ' && (i == 0 || header[..i].ends_with("  ")))
            .map(|(i, _)| i)
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let e = starts
                    .get(k + 1)
                    .copied()
                    .unwrap_or(line.len())
                    .min(line.len());
                line.get(s.min(line.len())..e).unwrap_or("").trim()
            })
            .collect()
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_so_long_names_never_touch_the_next() {
        let long = "a-virtual-machine-with-a-very-long-name-indeed";
        let t = list_table(&[
            entry(long, "serial0", DeviceKind::Console),
            entry("vm", "snd0", DeviceKind::Audio),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let row = cells(lines[0], lines[1]);
        assert_eq!(row[0], format!("{long}/serial0"), "{t}");
        assert_eq!(row[1], "console", "{t}");
        let row = cells(lines[0], lines[2]);
        assert_eq!(
            row,
            [
                "vm/snd0",
                "audio",
                "attached",
                "44100Hz 2ch s16le",
                "7",
                "1"
            ]
        );
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn the_stats_table_has_every_counter_and_marks_those_that_do_not_apply() {
        let t = stats_table(&[
            stats(entry("vm", "serial0", DeviceKind::Console)),
            stats(entry("vm", "snd0", DeviceKind::Audio)),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        // "RING FILL" is one column with a space inside.
        assert_eq!(cells(lines[0], lines[0]), STATS_COLUMNS);
        let console = cells(lines[0], lines[1]);
        let col = |name: &str| STATS_COLUMNS.iter().position(|c| *c == name).unwrap();
        assert_eq!(console[col("LOST:NO-SPOOL")], "18");
        assert_eq!(console[col("SPOOL-ERR")], "17");
        assert_eq!(console[col("INPUT")], "16");
        assert_eq!(console[col("SUB-GAPS")], "13 B");
        assert_eq!(console[col("RING FILL")], "15/65536 (0%)");
        let audio = cells(lines[0], lines[2]);
        assert_eq!(audio[col("LOST:NO-SPOOL")], "-");
        assert_eq!(audio[col("LOST:AUDIO")], "12");
        assert_eq!(audio[col("SUB-GAPS")], "14 periods");
        assert_eq!(audio[col("BYTES")], "1234 (7 periods)");
    }

    #[test]
    fn control_characters_in_names_and_reasons_are_escaped() {
        let mut s = stats(entry("vm\x1b[2J", "dev\n", DeviceKind::Console));
        s.poisoned = Some("bad\rthing".into());
        let t = stats_table(&[s]);
        assert!(!t.contains('\x1b') && !t.contains('\r'), "{t:?}");
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("vm\\u{1b}[2J/dev\\n"), "{t}");
    }

    #[test]
    fn audio_formats_are_named_with_their_byte_order_and_unknown_ones_by_number() {
        let named = |sample_format: u16, big_endian: bool| {
            let mut d = entry("vm", "snd0", DeviceKind::Audio);
            d.audio = Some(AudioFormat {
                rate: 48000,
                channels: 1,
                sample_format,
                big_endian,
            });
            format_name(&d)
        };
        let le: Vec<String> = (0..=7).map(|n| named(n, false)).collect();
        assert_eq!(
            le,
            [
                "48000Hz 1ch u8",
                "48000Hz 1ch s8",
                "48000Hz 1ch u16le",
                "48000Hz 1ch s16le",
                "48000Hz 1ch u32le",
                "48000Hz 1ch s32le",
                "48000Hz 1ch f32le",
                "48000Hz 1ch fmt7",
            ]
        );
        assert_eq!(named(1, true), "48000Hz 1ch s8");
        assert_eq!(named(6, true), "48000Hz 1ch f32be");
        assert_eq!(
            format_name(&entry("vm", "serial0", DeviceKind::Console)),
            "-"
        );
    }

    #[test]
    fn empty_tables_say_so_under_the_header() {
        assert_eq!(stats_table(&[]).lines().nth(1), Some(NO_DEVICES));
        assert_eq!(list_table(&[]).lines().nth(1), Some(NO_DEVICES));
    }
}
