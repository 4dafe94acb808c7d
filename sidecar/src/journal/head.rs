//! The first bytes of a console, which tell whether it is a QEMU monitor: QEMU greets on a
//! QMP monitor with `{"QMP": {"version": …` and on an HMP monitor with
//! `QEMU <version> monitor - type 'help' for more information`, first thing, whenever the
//! chardev opens. A monitor controls the whole VM and its QEMU process, so clients need the
//! `monitor` right for it (see `protocol::rules::authorize_attach`).
//!
//! A guest that prints such a line first on its own console only makes that console
//! stricter to use (fail-safe). A monitor whose greeting was lost before ringcastd
//! attached (the QEMU side dropped it) is not recognised; monitors print little, so this
//! takes more than a ring's worth of output before any ringcastd ever attached.

use std::io::Read;
use std::path::Path;

/// How many first bytes are kept.
pub(crate) const HEAD: usize = 96;

/// The head of a console stream (its bytes from offset 0, up to [`HEAD`]).
#[derive(Debug, Default)]
pub(crate) struct Head {
    bytes: Vec<u8>,
    monitor: bool,
}

impl Head {
    /// The head read back from the segment file that starts at offset 0.
    pub fn recover(first_segment: &Path) -> Head {
        let mut bytes = Vec::with_capacity(HEAD);
        if let Ok(f) = std::fs::File::open(first_segment) {
            let _ = f.take(HEAD as u64).read_to_end(&mut bytes);
        }
        let monitor = greets_as_monitor(&bytes);
        Head { bytes, monitor }
    }

    /// Bytes `bytes` were stored at offset `at`.
    pub fn observe(&mut self, at: u64, bytes: &[u8]) {
        if at != self.bytes.len() as u64 || self.bytes.len() >= HEAD {
            return;
        }
        let n = (HEAD - self.bytes.len()).min(bytes.len());
        self.bytes.extend_from_slice(&bytes[..n]);
        self.monitor = greets_as_monitor(&self.bytes);
    }

    /// Whether the console is a QEMU monitor.
    pub fn is_monitor(&self) -> bool {
        self.monitor
    }
}

/// Whether a stream starts with a QEMU monitor's greeting.
pub(crate) fn greets_as_monitor(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let head = &head[start..];
    let qmp = head.starts_with(b"{\"QMP\"");
    let hmp = head.starts_with(b"QEMU ")
        && head
            .windows(b" monitor - type 'help'".len())
            .any(|w| w == b" monitor - type 'help'");
    qmp || hmp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_and_hmp_greetings_are_monitors_and_other_output_is_not() {
        assert!(greets_as_monitor(
            br#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}"#
        ));
        assert!(greets_as_monitor(
            b"QEMU 10.0.2 monitor - type 'help' for more information\r\n(qemu) "
        ));
        assert!(!greets_as_monitor(b"SeaBIOS (version 1.16.2)\r\n"));
        assert!(!greets_as_monitor(b"QEMU emulator booting\r\n"));
        assert!(!greets_as_monitor(b""));
    }

    #[test]
    fn the_head_is_only_what_starts_at_offset_zero_in_order() {
        let mut h = Head::default();
        h.observe(5, b"{\"QMP\": {}}");
        assert!(!h.is_monitor(), "bytes after a hole are not the head");
        h.observe(0, b"{\"QM");
        h.observe(4, b"P\": {\"version\"");
        assert!(h.is_monitor());
    }
}
