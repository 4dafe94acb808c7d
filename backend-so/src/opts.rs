//! The `config=K=V:K=V` string of `-chardev plugin` / `-audiodev plugin`.

use std::path::PathBuf;

/// Options of one instance, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// Registration socket of the daemon.
    pub socket: PathBuf,
    /// Console output ring size in bytes (power of two).
    pub ring_bytes: u64,
    /// Console input ring size in bytes (power of two).
    pub input_ring_bytes: u64,
    /// Device name announced to the daemon (default: the QEMU id).
    pub name: Option<String>,
    /// Restart grace of a console, in milliseconds: how long the guest's output waits
    /// (lossless) for a daemon that went away before the flight recorder takes over.
    pub grace_ms: u64,
    /// A uid besides root and our own that the daemon may run as.
    pub daemon_uid: Option<u32>,
}

/// Default restart grace: long enough for `systemctl restart` of the daemon.
pub(crate) const DEFAULT_GRACE_MS: u64 = 5000;
/// Longest restart grace accepted.
const MAX_GRACE_MS: u64 = 3_600_000;

pub(crate) const HELP: &str =
    "options are socket=PATH (default $XDG_RUNTIME_DIR/ringcast/ringcastd.sock \
or /run/ringcast/ringcastd.sock), ring=BYTES (console output ring, power of two, 4K..1G, \
default 1M), input-ring=BYTES (default 64K), name=NAME (device name, default the id), \
grace=SECONDS or grace=MILLISECONDSms (how long console output waits for a restarting daemon \
before the flight recorder takes over, default 5, 0 = never waits), daemon-uid=UID (a uid \
the daemon may run as besides root and QEMU's own); separate them with ':'";

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: shm_ring::handover::default_socket_path("ringcast"),
            ring_bytes: 1 << 20,
            input_ring_bytes: 64 << 10,
            name: None,
            grace_ms: DEFAULT_GRACE_MS,
            daemon_uid: None,
        }
    }
}

fn grace(v: &str) -> Result<u64, String> {
    let ms = match v.strip_suffix("ms") {
        Some(ms) => ms.parse::<u64>().ok(),
        None => v.parse::<u64>().ok().and_then(|s| s.checked_mul(1000)),
    };
    match ms {
        Some(ms) if ms <= MAX_GRACE_MS => Ok(ms),
        _ => Err(format!(
            "grace={v}: expected seconds (e.g. grace=5) or milliseconds (grace=1500ms), at \
             most one hour; grace=0 never waits"
        )),
    }
}

fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn ring_size(key: &str, v: &str) -> Result<u64, String> {
    match parse_size(v) {
        Some(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n),
        _ => Err(format!(
            "{key}={v}: expected a power of two between 4K and 1G, e.g. {key}=1M"
        )),
    }
}

/// Parses an opts string; errors say which key is wrong and what is accepted.
pub(crate) fn parse(opts: &str) -> Result<Options, String> {
    let mut o = Options::default();
    for item in opts.split(':').filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not KEY=VALUE; {HELP}"))?;
        match k {
            "socket" if !v.is_empty() => o.socket = PathBuf::from(v),
            "ring" => o.ring_bytes = ring_size(k, v)?,
            "input-ring" => o.input_ring_bytes = ring_size(k, v)?,
            "name" if !v.is_empty() && v.len() <= shm_ring::handover::MAX_NAME => {
                o.name = Some(v.to_owned())
            }
            "grace" => o.grace_ms = grace(v)?,
            "daemon-uid" => {
                o.daemon_uid = Some(v.parse::<u32>().map_err(|_| {
                    format!("daemon-uid={v}: expected a numeric uid, e.g. daemon-uid=991")
                })?)
            }
            _ => return Err(format!("unknown or empty option '{k}'; {HELP}")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_opts_give_the_defaults() {
        assert_eq!(parse("").unwrap(), Options::default());
    }

    #[test]
    fn every_key_is_parsed() {
        let o =
            parse("socket=/tmp/x.sock:ring=64K:input-ring=4096:name=con:grace=2:daemon-uid=991")
                .unwrap();
        assert_eq!(o.grace_ms, 2000);
        assert_eq!(o.daemon_uid, Some(991));
        assert_eq!(parse("grace=250ms").unwrap().grace_ms, 250);
        assert_eq!(parse("grace=0").unwrap().grace_ms, 0);
        assert_eq!(o.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(o.ring_bytes, 65536);
        assert_eq!(o.input_ring_bytes, 4096);
        assert_eq!(o.name.as_deref(), Some("con"));
    }

    #[test]
    fn bad_values_are_explained() {
        for bad in [
            "ring=1000",
            "ring=2G",
            "ring=x",
            "bogus=1",
            "novalue",
            "socket=",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("ring=") || e.contains("KEY=VALUE"), "{bad}: {e}");
        }
        for bad in ["grace=-1", "grace=5s", "grace=3601", "grace=x"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("expected seconds"), "{bad}: {e}");
        }
        for bad in ["daemon-uid=root", "daemon-uid=-1"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("numeric uid"), "{bad}: {e}");
        }
    }
}
