//! Who may do what: the server's `authorized_clients` file.
//!
//! ```text
//! # identity                  devices (vm/device, * matches any run of characters)   rights
//! SHA256:3f1c…e9              vm1/*,build-*/serial0                                   read,write,spy
//! cn:alice                    */*                                                     read,spy
//! ```
//!
//! An identity is a client certificate's fingerprint (`ringcast identity show` prints it),
//! or `cn:NAME`, which matches the certificate's common name only when the server was given
//! a client CA (`--client-ca`) that signed it: a self-signed certificate can claim any name.
//! Rights: `read` (output), `write` (input, with the console's write lock), `spy` (read-only
//! watching without taking the lock). A client sees in `list` only the devices it has
//! some right on.
//!
//! Without the file, ringcastd serves clients on loopback only, and then allows them
//! everything ([`Access::LocalOpen`]): the machine's users are already trusted with the
//! VMs' sockets.

use std::net::SocketAddr;
use std::path::Path;

use crate::codec::Mode;
use crate::tls::Fingerprint;
use crate::Error;

/// What a connected client is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Fingerprint of its certificate, if it sent one.
    pub fingerprint: Option<Fingerprint>,
    /// Common name of its certificate, if a configured client CA vouched for it.
    pub verified_cn: Option<String>,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.verified_cn, &self.fingerprint) {
            (Some(cn), _) => write!(f, "cn:{cn} at {}", self.addr),
            (None, Some(fp)) => write!(f, "{fp} at {}", self.addr),
            (None, None) => write!(f, "anonymous at {}", self.addr),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Fingerprint(Fingerprint),
    Cn(String),
}

#[derive(Debug, Clone)]
struct Rule {
    who: Who,
    patterns: Vec<String>,
    read: bool,
    write: bool,
    spy: bool,
}

/// The parsed authorization file.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedClients {
    rules: Vec<Rule>,
}

impl AuthorizedClients {
    /// Reads and parses the file; any bad line is an error naming the line.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
        Self::parse(&text).map_err(|(line, msg)| Error::Authorization {
            path: path.to_owned(),
            line,
            msg,
        })
    }

    /// Parses the file's text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [who, devices, rights] = fields[..] else {
                return Err((i + 1, "expected: IDENTITY DEVICES RIGHTS".into()));
            };
            let who = if let Some(cn) = who.strip_prefix("cn:") {
                Who::Cn(cn.to_owned())
            } else {
                Who::Fingerprint(Fingerprint::parse(who).ok_or_else(|| {
                    (
                        i + 1,
                        format!("{who:?} is neither SHA256:<64 hex digits> nor cn:NAME"),
                    )
                })?)
            };
            let mut rule = Rule {
                who,
                patterns: devices.split(',').map(str::to_owned).collect(),
                read: false,
                write: false,
                spy: false,
            };
            for r in rights.split(',') {
                match r {
                    "read" => rule.read = true,
                    "write" => rule.write = true,
                    "spy" => rule.spy = true,
                    other => {
                        return Err((
                            i + 1,
                            format!("unknown right {other:?} (use read, write, spy)"),
                        ))
                    }
                }
            }
            rules.push(rule);
        }
        Ok(AuthorizedClients { rules })
    }

    fn rules_for<'a>(&'a self, peer: &'a Peer) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| match &r.who {
            Who::Fingerprint(fp) => peer.fingerprint.as_ref() == Some(fp),
            Who::Cn(cn) => peer.verified_cn.as_deref() == Some(cn.as_str()),
        })
    }
}

/// Glob match where `*` matches any run of characters (including `/`).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// The server's access policy.
#[derive(Debug, Clone)]
pub enum Access {
    /// No authorization file: clients from loopback addresses may do everything; others
    /// nothing.
    LocalOpen,
    /// The authorization file decides.
    Rules(AuthorizedClients),
}

impl Access {
    /// Whether `peer` may use `vm/device` in `mode`.
    pub fn allows(&self, peer: &Peer, vm: &str, device: &str, mode: Mode) -> bool {
        match self {
            Access::LocalOpen => peer.addr.ip().is_loopback(),
            Access::Rules(r) => {
                let name = format!("{vm}/{device}");
                r.rules_for(peer).any(|rule| {
                    let right = match mode {
                        Mode::Read => rule.read,
                        Mode::Write => rule.write,
                        Mode::Spy => rule.spy,
                    };
                    right && rule.patterns.iter().any(|p| glob(p, &name))
                })
            }
        }
    }

    /// Whether `peer` has any right on `vm/device` (it is then listed).
    pub fn sees(&self, peer: &Peer, vm: &str, device: &str) -> bool {
        [Mode::Read, Mode::Write, Mode::Spy]
            .into_iter()
            .any(|m| self.allows(peer, vm, device, m))
    }

    /// Whether `peer` may connect at all.
    pub fn admits(&self, peer: &Peer) -> bool {
        match self {
            Access::LocalOpen => peer.addr.ip().is_loopback(),
            Access::Rules(r) => r.rules_for(peer).next().is_some(),
        }
    }

    /// Refuses a configuration that would expose devices beyond loopback with nobody
    /// deciding who may use them.
    pub fn check_listen(&self, listen: SocketAddr, authz_path: &Path) -> Result<(), Error> {
        if matches!(self, Access::LocalOpen) && !listen.ip().is_loopback() {
            return Err(Error::NoAuthorization {
                listen,
                path: authz_path.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(fp: Option<Fingerprint>, ip: &str) -> Peer {
        Peer {
            addr: format!("{ip}:5000").parse().unwrap(),
            fingerprint: fp,
            verified_cn: None,
        }
    }

    #[test]
    fn glob_stars_match_any_run_of_characters() {
        assert!(glob("vm1/*", "vm1/serial0"));
        assert!(glob("*/serial0", "a/b/serial0"));
        assert!(glob("*", ""));
        assert!(glob("build-*/ser*0", "build-7/serial0"));
        assert!(!glob("vm1/*", "vm2/serial0"));
        assert!(!glob("vm1", "vm1/x"));
    }

    #[test]
    fn rights_are_granted_per_fingerprint_pattern_and_mode() {
        let fp = Fingerprint::of(b"alice");
        let other = Fingerprint::of(b"mallory");
        let text = format!("# comment\n{fp} vm1/*,vm2/serial0 read,spy\n");
        let a = Access::Rules(AuthorizedClients::parse(&text).unwrap());
        let alice = peer(Some(fp), "192.0.2.1");
        assert!(a.allows(&alice, "vm1", "serial0", Mode::Read));
        assert!(a.allows(&alice, "vm2", "serial0", Mode::Spy));
        assert!(!a.allows(&alice, "vm1", "serial0", Mode::Write));
        assert!(!a.allows(&alice, "vm3", "serial0", Mode::Read));
        assert!(!a.admits(&peer(Some(other), "127.0.0.1")));
        assert!(!a.admits(&peer(None, "127.0.0.1")));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let e = AuthorizedClients::parse("\n\nSHA256:12 vm/* read\n").unwrap_err();
        assert_eq!(e.0, 3);
        let e = AuthorizedClients::parse("cn:bob vm/* fly\n").unwrap_err();
        assert!(e.1.contains("fly"));
    }

    #[test]
    fn without_a_file_only_loopback_is_served_and_wider_listening_is_refused() {
        let a = Access::LocalOpen;
        assert!(a.allows(&peer(None, "127.0.0.1"), "v", "d", Mode::Write));
        assert!(!a.allows(&peer(None, "192.0.2.7"), "v", "d", Mode::Read));
        let p = Path::new("/etc/ringcast/authorized_clients");
        assert!(a.check_listen("127.0.0.1:7878".parse().unwrap(), p).is_ok());
        let e = a
            .check_listen("0.0.0.0:7878".parse().unwrap(), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("authorized_clients"), "{e}");
    }
}
