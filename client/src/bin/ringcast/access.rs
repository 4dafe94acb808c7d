//! How this client gets in: its identity (created on first use, like an SSH key), and, when
//! ringcastd runs on this same host and the user is its admin (root or ringcastd's user),
//! authorization through ringcastd's control socket, which checks the asker's uid. Anyone
//! else is told which fingerprint to send to the server's admin.

use std::path::{Path, PathBuf};

use anyhow::Context;
use client::{ErrorCode, Identity, Session, Trust};
use transport_quic::authz::{Rights, Rule, Who};

/// This client's identity in `dir`, created there on first use (said on stderr).
pub fn identity(dir: &Path) -> anyhow::Result<Identity> {
    let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
    if crt.exists() || key.exists() {
        return Identity::load(&crt, &key)
            .with_context(|| format!("cannot load this client's identity from {}", dir.display()));
    }
    let name = crate::identity::default_name();
    let id = Identity::create(dir, "client", &name, std::slice::from_ref(&name))
        .with_context(|| format!("cannot create this client's identity in {}", dir.display()))?;
    eprintln!(
        "ringcast: created this client's identity {} in {}",
        id.fingerprint(),
        dir.display()
    );
    Ok(id)
}

/// Connects once as the identity in `id_dir`; a server not yet known is shown to the
/// person at the terminal, who decides whether to pin it (like ssh). Without a terminal the
/// trust pins on first use and says so on stderr.
async fn connect_once(server: &str, id_dir: &Path, trust: &Trust) -> anyhow::Result<Session> {
    match Session::connect(server, Some(identity(id_dir)?), trust.clone()).await {
        Err(client::Error::UnknownHost { host, fingerprint }) => {
            let Trust::KnownHostsAsk(file) = trust else {
                anyhow::bail!("{host} is not a known host ({fingerprint})");
            };
            eprint!(
                "The identity of ringcast server {host} is not known yet.\n\
                 Its fingerprint is {fingerprint}.\n\
                 Compare it with the one its admin sees in ringcastd's log \
                 (\"server identity\" or \"serving\").\n\
                 Trust it and remember it in {}? (yes/no) ",
                file.display()
            );
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            if !matches!(answer.trim(), "yes" | "y") {
                anyhow::bail!("{host} was not trusted; nothing was recorded");
            }
            transport_quic::tls::add_known_host(file, &host, fingerprint)
                .with_context(|| format!("cannot record {host} in {}", file.display()))?;
            eprintln!(
                "ringcast: added {host} ({fingerprint}) to {}",
                file.display()
            );
            Ok(Session::connect(server, Some(identity(id_dir)?), trust.clone()).await?)
        }
        other => Ok(other?),
    }
}

/// Whether `server` (`host` or `host:port`) names this machine's loopback.
fn is_loopback(server: &str) -> bool {
    let host = match server.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => server,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Connects as this client's identity; a loopback server that does not know it yet is
/// asked, through its control socket, to grant it every right (which ringcastd allows only
/// to root and its own user).
pub async fn connect(
    server: &str,
    id_dir: &Path,
    trust: Trust,
    control_socket: &Option<PathBuf>,
) -> anyhow::Result<Session> {
    let fingerprint = identity(id_dir)?.fingerprint();
    let refused = match connect_once(server, id_dir, &trust).await {
        Err(e) if refused_as_unauthorized(&e) => e,
        other => return other.with_context(|| format!("cannot connect to {server}")),
    };
    let ctl = control_socket
        .clone()
        .unwrap_or_else(transport_quic::local::default_control_socket);
    let hint = format!(
        "ringcastd at {server} does not know this client; its admin can run: ringcastd authorize \
         {fingerprint} (add --devices and --rights to grant less than everything)"
    );
    if !is_loopback(server) || !ctl.exists() {
        return Err(refused.context(hint));
    }
    let rule = Rule {
        who: Who::Fingerprint(fingerprint),
        patterns: vec!["*/*".into()],
        rights: Rights::ALL,
    };
    if let Err(why) = transport_quic::local::authorize(&ctl, &rule) {
        return Err(refused
            .context(format!("this host's ringcastd did not authorize it: {why}"))
            .context(hint));
    }
    eprintln!(
        "ringcast: this host's ringcastd ({}) authorized this client {fingerprint}: {} on */*",
        ctl.display(),
        Rights::ALL
    );
    connect_once(server, id_dir, &trust)
        .await
        .with_context(|| format!("cannot connect to {server} after authorizing this client"))
}

fn refused_as_unauthorized(e: &anyhow::Error) -> bool {
    e.downcast_ref::<client::Error>()
        .is_some_and(|e| e.code() == Some(ErrorCode::NotAuthorized))
}
