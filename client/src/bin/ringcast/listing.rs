//! `ringcast list` and `ringcast stats`: the server's devices and counters as a table or
//! as JSON (the fields are a documented, stable interface for scripts).

use client::Session;
use protocol::audio::SampleFormat;

use crate::exit::Exit;

/// `ringcast list`: the devices this client may use.
pub async fn list(s: &Session, json: bool) -> anyhow::Result<Exit> {
    let devices = s.list().await?;
    if json {
        let v: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| serde_json::Value::Object(device_json(d)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", transport_quic::table::list_table(&devices));
    }
    Ok(Exit::Success)
}

/// `ringcast stats`: every counter of every device.
pub async fn stats(s: &Session, json: bool) -> anyhow::Result<Exit> {
    let entries = s.stats().await?;
    if json {
        let v: Vec<serde_json::Value> = entries.iter().map(stats_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", transport_quic::table::stats_table(&entries));
    }
    Ok(Exit::Success)
}

/// A device as `list --json` prints it (the field names are documented in `list --help`).
fn device_json(d: &client::DeviceEntry) -> serde_json::Map<String, serde_json::Value> {
    let audio = d.audio.map(|f| {
        let sample = match SampleFormat::from_wire(f.sample_format) {
            Some(s) => s.name().to_string(),
            None => format!("unknown-{}", f.sample_format),
        };
        serde_json::json!({
            "rate": f.rate,
            "channels": f.channels,
            "sample_format": sample,
            "big_endian": f.big_endian,
        })
    });
    let serde_json::Value::Object(map) = serde_json::json!({
        "vm": d.vm,
        "device": d.device,
        "kind": d.kind.name(),
        "state": d.state.name(),
        "audio": audio,
        "bytes": d.bytes,
        "periods": d.periods,
        "journal_start": d.journal_start,
        "journal_end": d.journal_end,
        "subscribers": d.subscribers,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    map
}

/// A device's counters as `stats --json` prints them (documented in `stats --help`).
fn stats_json(e: &client::StatsEntry) -> serde_json::Value {
    let mut m = device_json(&e.device);
    let counters = [
        ("dropped_flight_recorder", e.dropped_flight_recorder),
        ("dropped_audio_overflow", e.dropped_audio_overflow),
        ("subscriber_gap_bytes", e.subscriber_gap_bytes),
        ("subscriber_dropped_periods", e.subscriber_dropped_periods),
        ("spool_errors", e.spool_errors),
        ("dropped_no_spool", e.dropped_no_spool),
        ("ring_fill", e.ring_fill),
        ("ring_capacity", e.ring_capacity),
        ("input_bytes", e.input_bytes),
        ("registrations", e.registrations),
    ];
    for (k, v) in counters {
        m.insert(k.into(), v.into());
    }
    m.insert("poisoned".into(), e.poisoned.clone().into());
    serde_json::Value::Object(m)
}
