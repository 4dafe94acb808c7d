//! ringcastd's local control socket, as its clients on the same host use it: one request
//! line, one answer. The socket is `ringcastd.ctl` beside the registration socket; only
//! root and ringcastd's own user may connect, and ringcastd checks the asker's uid
//! (`SO_PEERCRED`) again before granting anything.
//!
//! Requests: `stats` (the device table), `authorize RULE` (adds an authorization rule,
//! in the authorization file's syntax, to ringcastd's `local_clients`), `web-link IDENTITY
//! LINK_SECONDS SESSION_SECONDS` (mints a browser link). Answers to `authorize`:
//! `authorized RULE` or `error: WHY`; to `web-link`: `web-link TOKEN PORT HASHES` (HASHES:
//! comma-separated hex, or `-`) or `error: WHY`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authz::Rule;

/// The control socket of a ringcastd with the default registration socket:
/// `$XDG_RUNTIME_DIR/ringcast/ringcastd.ctl`, or `/run/ringcast/ringcastd.ctl`.
pub fn default_control_socket() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/run"),
    };
    dir.join("ringcast").join("ringcastd.ctl")
}

/// Longest request line ringcastd reads.
pub const MAX_REQUEST: usize = 4096;

/// Sends one request line and returns the whole answer.
pub fn request(control_socket: &Path, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(control_socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Reads one request line (at most [`MAX_REQUEST`] bytes).
pub fn read_request(conn: &UnixStream) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(conn.take(MAX_REQUEST as u64)).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Asks the ringcastd behind `control_socket` to add `rule`; the error says why not.
pub fn authorize(control_socket: &Path, rule: &Rule) -> Result<(), String> {
    let answer = request(control_socket, &format!("authorize {}", rule.to_line()))
        .map_err(|e| format!("cannot ask ringcastd at {}: {e}", control_socket.display()))?;
    let answer = answer.trim();
    match answer.strip_prefix("error: ") {
        Some(why) => Err(why.to_owned()),
        None if answer.starts_with("authorized ") => Ok(()),
        None => Err(format!("unexpected answer from ringcastd: {answer:?}")),
    }
}

/// A browser link ringcastd minted (`web-link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLink {
    /// The link's secret.
    pub token: String,
    /// The port of the page and of WebTransport.
    pub port: u16,
    /// Hex SHA-256 of the self-signed certificate browsers must accept (none with an
    /// admin's certificate).
    pub cert_hashes: Vec<String>,
}

impl WebLink {
    /// The URL to open: the secrets are in the fragment, which browsers do not send.
    pub fn url(&self, host: &str) -> String {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let mut url = format!("https://{host}:{}/#link={}", self.port, self.token);
        if !self.cert_hashes.is_empty() {
            url.push_str("&cert=");
            url.push_str(&self.cert_hashes.join(","));
        }
        url
    }
}

/// Asks the ringcastd behind `control_socket` for a browser link for `who` (an identity as
/// the authorization file writes it), usable once within `link`, for a session of
/// `session`.
pub fn web_link(
    control_socket: &Path,
    who: &str,
    link: Duration,
    session: Duration,
) -> Result<WebLink, String> {
    let line = format!("web-link {who} {} {}", link.as_secs(), session.as_secs());
    let answer = request(control_socket, &line)
        .map_err(|e| format!("cannot ask ringcastd at {}: {e}", control_socket.display()))?;
    let answer = answer.trim();
    if let Some(why) = answer.strip_prefix("error: ") {
        return Err(why.to_owned());
    }
    let bad = || format!("unexpected answer from ringcastd: {answer:?}");
    let fields: Vec<&str> = answer.split(' ').collect();
    let ["web-link", token, port, hashes] = fields[..] else {
        return Err(bad());
    };
    Ok(WebLink {
        token: token.to_owned(),
        port: port.parse().map_err(|_| bad())?,
        cert_hashes: match hashes {
            "-" => Vec::new(),
            h => h.split(',').map(str::to_owned).collect(),
        },
    })
}
