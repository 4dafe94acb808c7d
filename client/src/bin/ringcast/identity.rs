//! `ringcast identity`: create and show this client's certificate (its mTLS identity).

use std::path::Path;

use anyhow::bail;
use client::Identity;

use crate::args::IdentityCommand;

/// Runs `ringcast identity new|show` on the identity in `dir`; needs no server.
pub fn identity(cmd: &IdentityCommand, dir: &Path) -> anyhow::Result<()> {
    let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
    match cmd {
        IdentityCommand::New { name, force } => {
            if crt.exists() && !force {
                bail!(
                    "{} already exists; pass --force to replace it (servers that know the old \
                     fingerprint will then refuse you)",
                    crt.display()
                );
            }
            let name = name.clone().unwrap_or_else(default_name);
            let id = Identity::create(dir, "client", &name, std::slice::from_ref(&name))?;
            println!("created {} ({name})", crt.display());
            println!("{}", id.fingerprint());
        }
        IdentityCommand::Show => {
            if !crt.exists() {
                bail!(
                    "no identity in {}; create one with `ringcast identity new`",
                    dir.display()
                );
            }
            let id = Identity::load(&crt, &key)?;
            println!("{}", id.fingerprint());
            println!(
                "\nOn the server, its admin grants it rights with:\n  ringcastd authorize {} \
                 --devices '*/*' --rights read,spy,write\nor a line in its authorized_clients:\n{}  */*  \
                 read,spy,write",
                id.fingerprint(),
                id.fingerprint()
            );
        }
    }
    Ok(())
}

/// The common name of a new identity: `user@host`.
pub fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{user}@{host}")
}
