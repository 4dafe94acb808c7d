//! The `opts=K=V:K=V` string of `-chardev plugin` / `-audiodev plugin`.

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
}

pub(crate) const HELP: &str =
    "options are socket=PATH (default $XDG_RUNTIME_DIR/ringcast/ringcastd.sock \
or /run/ringcast/ringcastd.sock), ring=BYTES (console output ring, power of two, 4K..1G, \
default 1M), input-ring=BYTES (default 64K), name=NAME (device name, default the id); \
separate them with ':'";

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: shm_ring::handover::default_socket_path("ringcast"),
            ring_bytes: 1 << 20,
            input_ring_bytes: 64 << 10,
            name: None,
        }
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
        let o = parse("socket=/tmp/x.sock:ring=64K:input-ring=4096:name=con").unwrap();
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
    }
}
