//! Rights the host's admin granted through the local control socket (`ringcastd
//! authorize`, or `ringcast` run by the admin on this host): authorization rules kept in
//! `local_clients` in the state directory (`0600`, same syntax as the authorization file),
//! added to whatever the authorization file grants. The control socket checks who asks
//! (`SO_PEERCRED`: root or ringcastd's own user); nothing on the network can add a rule.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use transport_quic::authz::{AuthorizedClients, Peer, Rights, Rule};

use crate::error::Error;

/// The file name in the state directory.
pub const LOCAL_CLIENTS: &str = "local_clients";

/// Rules granted locally, in memory and on disk.
#[derive(Debug)]
pub struct LocalGrants {
    path: PathBuf,
    rules: RwLock<AuthorizedClients>,
}

impl LocalGrants {
    /// Loads `local_clients` from `state_dir` (none yet is no rule).
    pub fn open(state_dir: &Path) -> Result<LocalGrants, Error> {
        let path = state_dir.join(LOCAL_CLIENTS);
        let rules = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AuthorizedClients::default(),
            _ => AuthorizedClients::load(&path).map_err(|e| Error::Grants(e.to_string()))?,
        };
        Ok(LocalGrants {
            path,
            rules: RwLock::new(rules),
        })
    }

    /// Adds a rule, on disk and in memory. A rule that cannot be written (a full disk)
    /// still applies until ringcastd stops: the error is returned to be said.
    pub fn grant(&self, rule: Rule) -> Result<(), Error> {
        let saved = self.save(&rule);
        self.rules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(rule);
        saved
    }

    fn save(&self, rule: &Rule) -> Result<(), Error> {
        let mut f = crate::private::file_options()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, e))?;
        writeln!(f, "{}", rule.to_line()).map_err(|e| Error::io("write", &self.path, e))?;
        f.sync_data().map_err(|e| Error::io("sync", &self.path, e))
    }

    /// What the local rules grant `peer` on `vm/device`.
    pub fn rights(&self, peer: &Peer, vm: &str, device: &str) -> Rights {
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rights(peer, vm, device)
    }

    /// Whether a local rule names `peer`.
    pub fn admits(&self, peer: &Peer) -> bool {
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .admits(peer)
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
