//! Device names, and how they map to directories of the state dir.

use std::fmt;

/// Names a device across QEMU restarts: the VM (its name, else its UUID) and the device id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey {
    /// The VM's name (`-name`), or its UUID when it has no name, or `pid<N>` when neither.
    pub vm: String,
    /// The device id on the QEMU command line.
    pub device: String,
}

impl DeviceKey {
    /// A key from its two parts.
    pub fn new(vm: impl Into<String>, device: impl Into<String>) -> Self {
        DeviceKey {
            vm: vm.into(),
            device: device.into(),
        }
    }

    /// Parses `vm/device` (the device id is everything after the last `/`).
    pub fn parse(s: &str) -> Option<Self> {
        let (vm, device) = s.rsplit_once('/')?;
        (!vm.is_empty() && !device.is_empty()).then(|| DeviceKey::new(vm, device))
    }

    /// The key of a registered device: VM name, else UUID, else the producer's pid.
    pub fn from_description(d: &shm_ring::handover::DeviceDescription) -> Self {
        let vm = if !d.vm_name.is_empty() {
            d.vm_name.clone()
        } else if !d.vm_uuid.is_empty() {
            d.vm_uuid.clone()
        } else {
            format!("pid{}", d.pid)
        };
        DeviceKey::new(vm, d.device_id.clone())
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vm, self.device)
    }
}

/// A file name made from an untrusted name: safe characters kept, others replaced, and a
/// hash of the original appended when anything changed (so two names cannot collide).
pub(crate) fn path_component(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    if out != name {
        // FNV-1a: stable across versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("-{:08x}", h as u32));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time in seconds since the Unix epoch.
pub(crate) fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_435_200), "2026-11-23T12:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn unsafe_names_become_distinct_safe_components() {
        assert_eq!(path_component("vm-1"), "vm-1");
        let a = path_component("a/b");
        let b = path_component("a_b");
        assert_ne!(a, b);
        assert!(!a.contains('/'));
        assert!(path_component("..").starts_with('_'));
        assert!(!path_component("").is_empty());
    }

    #[test]
    fn keys_parse_at_the_last_slash() {
        let k = DeviceKey::parse("vm/with/slash/serial0").unwrap();
        assert_eq!(k.vm, "vm/with/slash");
        assert_eq!(k.device, "serial0");
        assert!(DeviceKey::parse("noslash").is_none());
    }
}
