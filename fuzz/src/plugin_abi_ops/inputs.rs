//! What the operation stream makes of its input bytes: instance ids, VM names, opts strings
//! (valid, invalid and random) and audio formats.

use std::ffi::CString;

use ringcast_backend::abi::*;

use super::daemon::Daemon;
use crate::input::Input;

pub(super) fn c_string(bytes: &[u8]) -> CString {
    CString::new(
        bytes
            .iter()
            .copied()
            .filter(|&b| b != 0)
            .collect::<Vec<u8>>(),
    )
    .unwrap()
}

pub(super) fn pick_string(inp: &mut Input<'_>, pool: &[&str]) -> CString {
    let sel = inp.u8() as usize;
    if sel < pool.len() * 24 {
        c_string(pool[sel % pool.len()].as_bytes())
    } else {
        let n = inp.u8() as usize % 40;
        c_string(inp.bytes(n))
    }
}

pub(super) const IDS: &[&str] = &["serial0", "con", "", "mon-é", "x"];
pub(super) const VM_NAMES: &[&str] = &["", "vm1", "a/b", "日本語の名前"];
const OPTS: &[&str] = &[
    "",
    "ring=4K",
    "ring=4K:input-ring=4K",
    "ring=8K:input-ring=4096:name=console",
    "name=other",
    "ring=1000",
    "ring=2G",
    "input-ring=",
    "bogus=1",
    "novalue",
    ":::",
    "socket=",
    "ring=18446744073709551615K",
    "name=",
];

/// A size the way the plugin parses `ring=`; used to keep rings small enough to fuzz fast.
fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

pub(super) fn opts(inp: &mut Input<'_>, daemon: &Daemon) -> Option<CString> {
    let mut s = pick_string(inp, OPTS).into_bytes();
    // Keep the (otherwise valid) ring sizes at the default or below: a 1 GiB ring per
    // instance measures the page allocator, not the plugin.
    for item in String::from_utf8_lossy(&s).split(':') {
        if let Some((k, v)) = item.split_once('=') {
            if (k == "ring" || k == "input-ring") && parse_size(v).is_some_and(|n| n > 1 << 20) {
                return None;
            }
        }
    }
    // Always name the socket last (the last one wins), so no run reaches a real daemon.
    let socket = match inp.u8() % 8 {
        0..=4 => daemon.path.display().to_string(),
        5 => "/nonexistent-ringcast-fuzz/d.sock".into(),
        6 => format!("/{}", "a".repeat(200)),
        _ => daemon.dir.display().to_string(),
    };
    if !s.is_empty() {
        s.push(b':');
    }
    s.extend_from_slice(b"socket=");
    s.extend_from_slice(socket.as_bytes());
    Some(c_string(&s))
}

pub(super) fn audio_format(inp: &mut Input<'_>) -> QbpAudioFormat {
    let frequency = match inp.u8() % 8 {
        0 => 0,
        1 => 8000,
        2 => 44100,
        3 => 48000,
        4 => 768_000,
        5 => u32::MAX,
        _ => inp.u32(),
    };
    let channels = match inp.u8() % 6 {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 64,
        4 => u16::MAX,
        _ => inp.u16(),
    };
    QbpAudioFormat {
        frequency,
        channels,
        sample_format: inp.u8() as u16 % 10,
        big_endian: inp.u8(),
        reserved: [0; 7],
    }
}

pub(super) struct Info {
    pub(super) raw: QbpInstanceInfo,
    _strings: [CString; 4],
}

impl Info {
    pub(super) fn new(id: CString, vm_name: CString, vm_uuid: CString, opts: CString) -> Info {
        let raw = QbpInstanceInfo {
            header: QbpTableHeader::for_table::<QbpInstanceInfo>(),
            id: id.as_ptr(),
            vm_name: vm_name.as_ptr(),
            vm_uuid: vm_uuid.as_ptr(),
            config: opts.as_ptr(),
        };
        Info {
            raw,
            _strings: [id, vm_name, vm_uuid, opts],
        }
    }
}
