//! What ringcastd wrote: a device's spool read back from its journal directory, and the
//! configuration of an in-process ringcastd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sidecar::{Config, JournalConfig};

/// The configuration of an in-process ringcastd ([`sidecar::Daemon::start`]) with its
/// sockets under `dir/run` and journals in `dir/state`: a 256 KiB RAM window and 1 MiB
/// segments, so that tests reach the disk spool quickly.
pub fn config(dir: &Path) -> Config {
    let socket = dir.join("run").join("ringcastd.sock");
    Config {
        control_socket: sidecar::control_socket_for(&socket),
        socket,
        state_dir: dir.join("state"),
        journal: JournalConfig {
            window: 256 << 10,
            segment_size: 1 << 20,
            segment_age: Duration::from_secs(3600),
            retention: 1 << 30,
        },
        audio_queue: 64,
        opus: Default::default(),
    }
}

/// Every byte of a device's spool (its journal directory), in offset order, with the holes
/// between segments as (offset, length).
pub fn read_spool(dir: &Path) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading the spool {}: {e}", dir.display()))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let digits = name.strip_suffix(".log")?;
            if digits.len() != 20 {
                return None;
            }
            Some((digits.parse::<u64>().ok()?, e.path()))
        })
        .collect();
    segs.sort();
    let mut data = Vec::new();
    let mut holes = Vec::new();
    let mut end = 0u64;
    for (start, path) in segs {
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading the segment {}: {e}", path.display()));
        if start > end {
            holes.push((end, start - end));
        }
        assert!(start >= end, "segments overlap at {}", path.display());
        end = start + bytes.len() as u64;
        data.extend_from_slice(&bytes);
    }
    (data, holes)
}

/// Writes a console journal as a ringcastd would have left it in `dir` (a device
/// directory, created if needed): `device.meta` naming `vm`/`device`, and `bytes` as one
/// segment at offset 0. For journals of older versions (other directory names, names the
/// grammar now refuses) that a restarted ringcastd must recover.
pub fn write_journal(dir: &Path, vm: &str, device: &str, bytes: &[u8]) {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('\n', "\\n");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let meta = format!(
        "vm={}\ndevice={}\nkind=console\nbase=0\npruned_to=0\nsession=1\n",
        esc(vm),
        esc(device)
    );
    for (name, content) in [
        ("device.meta", meta.as_bytes()),
        (&format!("{:020}.log", 0)[..], bytes),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }
}
