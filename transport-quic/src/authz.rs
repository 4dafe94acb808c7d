//! Who may do what: the server's authorization rules.
//!
//! ```text
//! # identity                  devices (vm/device, * matches any run of characters)   rights
//! SHA256:3f1c…e9              vm1/*,build-*/serial0                                   read,write,spy
//! cn:alice                    */*                                                     read,spy,audio
//! ```
//!
//! An identity is a client certificate's fingerprint (`ringcast identity show` prints it),
//! or `cn:NAME`, which matches the certificate's common name only when the server was given
//! a client CA (`--client-ca`) that signed it: a self-signed certificate can claim any name.
//! Rights (`protocol::rules::Rights`): `read` (a console's history and live output),
//! `spy` (live output only, from the moment of attaching), `write` (input, with the
//! console's write lock), `monitor` (a QEMU monitor; never implied by `write`), `audio`
//! (listening to an audio output); `all` is every right. A client sees in `list` only the
//! devices it has some right on, and a name it has no right on looks like a missing one.
//!
//! Nobody has any right that no rule grants: without a file, no network client may do
//! anything until the host's admin authorizes it (`ringcastd authorize`, or `ringcast`
//! run by the admin on the same host, which asks ringcastd's local control socket).

use std::net::SocketAddr;
use std::path::Path;

pub use protocol::rules::Rights;

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

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A certificate's fingerprint.
    Fingerprint(Fingerprint),
    /// A common name a configured client CA vouched for.
    Cn(String),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Fingerprint(fp) => write!(f, "{fp}"),
            Who::Cn(cn) => write!(f, "cn:{cn}"),
        }
    }
}

/// One line of the file: an identity, device patterns and rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Whom it grants.
    pub who: Who,
    /// `vm/device` patterns (`*` matches any run of characters).
    pub patterns: Vec<String>,
    /// What it grants on them.
    pub rights: Rights,
}

impl Rule {
    /// Parses one line (`IDENTITY DEVICES RIGHTS`).
    pub fn parse(line: &str) -> Result<Rule, String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [who, devices, rights] = fields[..] else {
            return Err("expected: IDENTITY DEVICES RIGHTS".into());
        };
        let who =
            if let Some(cn) = who.strip_prefix("cn:") {
                Who::Cn(cn.to_owned())
            } else {
                Who::Fingerprint(Fingerprint::parse(who).ok_or_else(|| {
                    format!("{who:?} is neither SHA256:<64 hex digits> nor cn:NAME")
                })?)
            };
        Ok(Rule {
            who,
            patterns: devices.split(',').map(str::to_owned).collect(),
            rights: Rights::parse(rights)?,
        })
    }

    /// The line that parses back to this rule.
    pub fn to_line(&self) -> String {
        format!("{} {} {}", self.who, self.patterns.join(","), self.rights)
    }
}

/// The parsed authorization rules.
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
            if !line.is_empty() {
                rules.push(Rule::parse(line).map_err(|m| (i + 1, m))?);
            }
        }
        Ok(AuthorizedClients { rules })
    }

    /// Adds a rule.
    pub fn add(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Adds every rule of `other`.
    pub fn extend(&mut self, other: AuthorizedClients) {
        self.rules.extend(other.rules);
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none (then nobody may do anything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn rules_for<'a>(&'a self, peer: &'a Peer) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| match &r.who {
            Who::Fingerprint(fp) => peer.fingerprint.as_ref() == Some(fp),
            Who::Cn(cn) => peer.verified_cn.as_deref() == Some(cn.as_str()),
        })
    }

    /// Everything `peer` may do with `vm/device`: the union of the rules that match.
    pub fn rights(&self, peer: &Peer, vm: &str, device: &str) -> Rights {
        let name = format!("{vm}/{device}");
        self.rules_for(peer)
            .filter(|r| r.patterns.iter().any(|p| glob(p, &name)))
            .fold(Rights::default(), |acc, r| acc.union(r.rights))
    }

    /// Whether `peer` may connect at all (some rule names it).
    pub fn admits(&self, peer: &Peer) -> bool {
        self.rules_for(peer).next().is_some()
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
    fn rights_are_the_union_of_the_matching_rules_of_that_identity() {
        let fp = Fingerprint::of(b"alice");
        let other = Fingerprint::of(b"mallory");
        let text = format!("# comment\n{fp} vm1/*,vm2/serial0 read,spy\n{fp} vm1/qmp0 monitor\n");
        let a = AuthorizedClients::parse(&text).unwrap();
        let alice = peer(Some(fp), "192.0.2.1");
        assert_eq!(
            a.rights(&alice, "vm1", "serial0"),
            Rights::parse("read,spy").unwrap()
        );
        assert_eq!(
            a.rights(&alice, "vm1", "qmp0"),
            Rights::parse("read,spy,monitor").unwrap()
        );
        assert_eq!(
            a.rights(&alice, "vm2", "serial0"),
            Rights::parse("read,spy").unwrap()
        );
        assert!(!a.rights(&alice, "vm3", "serial0").any());
        assert!(a.admits(&alice));
        assert!(!a.admits(&peer(Some(other), "127.0.0.1")));
        assert!(!a.admits(&peer(None, "127.0.0.1")));
    }

    #[test]
    fn without_rules_nobody_may_connect_not_even_from_loopback() {
        let a = AuthorizedClients::default();
        assert!(!a.admits(&peer(None, "127.0.0.1")));
        assert!(!a.admits(&peer(Some(Fingerprint::of(b"x")), "127.0.0.1")));
        assert!(!a.rights(&peer(None, "127.0.0.1"), "v", "d").any());
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let e = AuthorizedClients::parse("\n\nSHA256:12 vm/* read\n").unwrap_err();
        assert_eq!(e.0, 3);
        let e = AuthorizedClients::parse("cn:bob vm/* fly\n").unwrap_err();
        assert!(e.1.contains("fly") && e.1.contains("monitor"), "{}", e.1);
    }

    #[test]
    fn a_rule_prints_as_the_line_that_parses_back_to_it() {
        let line = format!("{} vm1/*,*/snd0 read,audio", Fingerprint::of(b"a"));
        let r = Rule::parse(&line).unwrap();
        assert_eq!(r.to_line(), line);
        assert_eq!(Rule::parse(&r.to_line()).unwrap(), r);
    }
}
