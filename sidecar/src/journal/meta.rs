//! `device.meta`: a device's persistent description (names, VM UUID, ring session, where
//! the session starts in the journal, the retention mark), one `key=value` per line with
//! `\\`, newline and carriage return escaped in values.

use std::fs;
use std::path::Path;

/// The file name of a device's description.
pub(super) const META: &str = "device.meta";

/// What the persistent description of a device says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub vm: String,
    pub device: String,
    pub kind: String,
    pub session: Option<u64>,
    /// Journal offset of position 0 of the session's ring.
    pub base: u64,
    /// Everything below this offset was deleted (retention).
    pub pruned_to: u64,
    /// The UUID of the VM the device belongs to ("" when it registered without one): the
    /// name is bound to it, another VM cannot take it over.
    pub uuid: String,
}

impl Meta {
    pub(super) fn encode(&self) -> String {
        let mut s = format!(
            "vm={}\ndevice={}\nkind={}\nbase={}\npruned_to={}\n",
            escape(&self.vm),
            escape(&self.device),
            self.kind,
            self.base,
            self.pruned_to
        );
        if let Some(session) = self.session {
            s.push_str(&format!("session={session}\n"));
        }
        if !self.uuid.is_empty() {
            s.push_str(&format!("uuid={}\n", escape(&self.uuid)));
        }
        s
    }

    pub(super) fn decode(text: &str) -> Meta {
        let mut m = Meta::default();
        // Split on '\n' alone: `lines()` would also eat a '\r' that ends a value.
        for line in text.split('\n') {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "vm" => m.vm = unescape(v),
                "device" => m.device = unescape(v),
                "kind" => m.kind = v.to_owned(),
                "session" => m.session = v.parse().ok(),
                "base" => m.base = v.parse().unwrap_or(0),
                "pruned_to" => m.pruned_to = v.parse().unwrap_or(0),
                "uuid" => m.uuid = unescape(v),
                _ => {}
            }
        }
        m
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads a device's persistent description, if the directory has one.
pub(crate) fn read_meta(dir: &Path) -> Option<Meta> {
    fs::read_to_string(dir.join(META))
        .ok()
        .map(|t| Meta::decode(&t))
}
