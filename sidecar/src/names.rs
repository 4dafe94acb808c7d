//! Device names, and how they map to directories of the state dir.

use std::fmt;

use protocol::names::{check_name, check_uuid, escape};

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
        // Names are checked at registration, but journals of older versions and keys a
        // client asked for are not: printed names never reach a terminal or log unescaped.
        write!(f, "{}/{}", escape(&self.vm), escape(&self.device))
    }
}

/// Checks the names of a device that registers (see `protocol::names`): the refusal says
/// which name, why, and what to do; QEMU logs it.
pub(crate) fn check_description(d: &shm_ring::handover::DeviceDescription) -> Result<(), String> {
    let grammar = "a name is 1 to 128 bytes of printable characters without '/' \
                   (docs/ringcastd.md, Names)";
    if !d.vm_name.is_empty() {
        check_name(&d.vm_name).map_err(|e| {
            format!(
                "the VM name \"{}\" {e}; give the VM another -name: {grammar}",
                escape(&d.vm_name)
            )
        })?;
    }
    if !d.vm_uuid.is_empty() {
        check_uuid(&d.vm_uuid)
            .map_err(|e| format!("the VM UUID \"{}\" {e}", escape(&d.vm_uuid)))?;
    }
    check_name(&d.device_id).map_err(|e| {
        format!(
            "the device id \"{}\" {e}; give the device another id=: {grammar}",
            escape(&d.device_id)
        )
    })
}

/// Longest directory name [`dir_component`] makes (file systems allow 255 bytes).
const MAX_COMPONENT: usize = 200;

/// The directory name of a VM or device name, one to one: ASCII letters, digits and
/// `-_+@:` stand for themselves (and `.` except in the first place), every other byte is
/// written `%XX` (`prod db` is `prod%20db`, `%` itself `%25`). No two names get the same
/// directory, so a VM cannot take another one's journal by picking its escaped name
/// (`prod_db-4b77ecbe` stays `prod_db-4b77ecbe`). A name whose encoding would be longer than
/// [`MAX_COMPONENT`] is cut and ends in `~` and a SHA-256 prefix of the whole name (`~` is
/// always encoded, so a cut name cannot equal an uncut one).
pub(crate) fn dir_component(name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'+' | b'@' | b':')
            || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    if out.len() > MAX_COMPONENT {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(name.as_bytes());
        let mut cut = MAX_COMPONENT - 33;
        // Never cut inside a %XX.
        while out.as_bytes()[..cut]
            .iter()
            .rev()
            .take(2)
            .any(|&b| b == b'%')
        {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('~');
        for b in &digest[..16] {
            let _ = write!(out, "{b:02x}");
        }
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

    /// The directory name older versions gave a name: safe characters kept, others replaced
    /// by `_`, and a hash appended when anything changed. Two names could share it (`prod db`
    /// and `prod_db-4b77ecbe`); recovery moves such journals to [`dir_component`]'s directory.
    fn legacy_dir_component(name: &str) -> String {
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
            // FNV-1a.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in name.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            out.push_str(&format!("-{:08x}", h as u32));
        }
        out
    }

    #[test]
    fn timestamps_are_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_435_200), "2026-11-23T12:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn safe_names_are_their_own_directory_and_others_are_percent_encoded() {
        assert_eq!(dir_component("vm-1"), "vm-1");
        assert_eq!(dir_component("serial0"), "serial0");
        assert_eq!(dir_component("a.b"), "a.b");
        assert_eq!(dir_component("prod db"), "prod%20db");
        assert_eq!(dir_component("100%"), "100%25");
        assert_eq!(dir_component(".."), "%2E.");
        assert_eq!(dir_component(".hidden"), "%2Ehidden");
        assert_eq!(dir_component("a/b"), "a%2Fb");
        assert_eq!(dir_component("büro"), "b%C3%BCro");
        assert_eq!(dir_component(""), "%");
    }

    #[test]
    fn the_escaped_name_of_one_vm_is_not_the_directory_of_another() {
        let victim = "prod db";
        let attacker = legacy_dir_component(victim);
        assert_eq!(
            attacker, "prod_db-4b77ecbe",
            "the old scheme gave both one directory"
        );
        assert_eq!(legacy_dir_component(&attacker), attacker);
        assert_ne!(dir_component(victim), dir_component(&attacker));
        let names = [
            "a b", "a_b", "a%20b", "a%b", "a~b", "a.b", ".ab", "%2Eab", "a/b", "a%2Fb",
        ];
        let dirs: std::collections::HashSet<String> =
            names.iter().map(|n| dir_component(n)).collect();
        assert_eq!(dirs.len(), names.len(), "{dirs:?}");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_and_stay_distinct() {
        let long_a = "é".repeat(64);
        let mut long_b = "é".repeat(63);
        long_b.push('è');
        let (a, b) = (dir_component(&long_a), dir_component(&long_b));
        assert!(
            a.len() <= MAX_COMPONENT && b.len() <= MAX_COMPONENT,
            "{a} {b}"
        );
        assert_ne!(a, b);
        assert!(a.contains('~'));
        let plain = "x".repeat(128);
        assert_eq!(dir_component(&plain), plain);
    }

    #[test]
    fn keys_parse_at_the_last_slash() {
        let k = DeviceKey::parse("vm/with/slash/serial0").unwrap();
        assert_eq!(k.vm, "vm/with/slash");
        assert_eq!(k.device, "serial0");
        assert!(DeviceKey::parse("noslash").is_none());
    }
}
