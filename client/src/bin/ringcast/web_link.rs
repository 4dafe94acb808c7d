//! `ringcast web-link`: a link that opens the browser client, minted by the ringcastd on
//! this host through its control socket.

use std::path::Path;

use anyhow::Context;

use crate::args::{Cli, Command};

/// Mints the link and prints its URL on stdout.
pub fn web_link(cli: &Cli, id_dir: &Path) -> anyhow::Result<()> {
    let Command::WebLink {
        identity,
        expires,
        session,
        host,
    } = &cli.command
    else {
        anyhow::bail!("not a web-link command");
    };
    let who = match identity {
        Some(who) => who.clone(),
        None => crate::access::identity(id_dir)?.fingerprint().to_string(),
    };
    let ctl = cli
        .control_socket
        .clone()
        .unwrap_or_else(transport_quic::local::default_control_socket);
    let link = transport_quic::local::web_link(&ctl, &who, *expires, *session)
        .map_err(|why| anyhow::anyhow!("ringcastd did not mint a link: {why}"))
        .context("a browser link is minted by the ringcastd on this host, for its admin")?;
    let host = match host {
        Some(h) => h.clone(),
        None => server_host(&cli.server),
    };
    println!("{}", link.url(&host));
    eprintln!(
        "ringcast: the link opens one session as {who}; it expires in {} s unless opened",
        expires.as_secs()
    );
    Ok(())
}

/// The host part of HOST, HOST:PORT or [V6]:PORT.
fn server_host(server: &str) -> String {
    if let Some(rest) = server.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match server.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h.to_owned(),
        _ => server.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_link_host_is_the_server_host() {
        assert_eq!(super::server_host("vmhost:7878"), "vmhost");
        assert_eq!(super::server_host("vmhost"), "vmhost");
        assert_eq!(super::server_host("[::1]:7878"), "::1");
        assert_eq!(super::server_host("::1"), "::1");
    }
}
