//! ringcastd's unix sockets: the registration socket QEMU connects to (its directory
//! prepared, a stale socket of a dead daemon replaced, a live one refused) and the control
//! socket `ringcastd stats` asks.

use super::*;

pub(super) fn prepare_socket_path(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::ensure_dir(dir, "socket directory", "--socket")?;
    }
    if path.exists() {
        let alive = || match SocketAddrUnix::new(path) {
            Ok(addr) => {
                rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)
                    .ok()
                    .is_some_and(|s| rustix::net::connect(&s, &addr).is_ok())
                    || UnixStream::connect(path).is_ok()
            }
            Err(_) => false,
        };
        // A ringcastd killed a moment ago may still have its listener open: the kernel
        // tears down an io_uring (whose polls hold the socket) after the process is gone.
        // Only a listener that stays for a second belongs to a running ringcastd.
        let deadline = Instant::now() + Duration::from_secs(1);
        while alive() {
            if Instant::now() >= deadline {
                return Err(Error::AlreadyRunning(path.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_file(path).map_err(|e| Error::io("remove stale socket", path, e))?;
    }
    Ok(())
}

pub(super) fn bind_registration(path: &Path) -> Result<OwnedFd, Error> {
    prepare_socket_path(path)?;
    let io = |what, e: rustix::io::Errno| Error::io(what, path, e.into());
    let addr = SocketAddrUnix::new(path).map_err(|e| io("socket path", e))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io("socket", e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| io("bind", e))?;
    crate::private::chmod_socket(path, 0o600)?;
    rustix::net::listen(&fd, 128).map_err(|e| io("listen", e))?;
    Ok(fd)
}

pub(super) fn bind_control(path: &Path) -> Result<UnixListener, Error> {
    prepare_socket_path(path)?;
    let l = UnixListener::bind(path).map_err(|e| Error::io("bind", path, e))?;
    crate::private::chmod_socket(path, 0o600)?;
    Ok(l)
}

pub(super) fn serve_control(listener: UnixListener, handle: Handle) {
    for conn in listener.incoming() {
        if handle.reg.closed.load(Relaxed) {
            break;
        }
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let line = transport_quic::local::read_request(&conn).unwrap_or_default();
        let answer = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("stats", "") => crate::device::render_table(&handle.stats()) + &fence_line(),
            ("authorize", rule) => match authorize(&conn, &handle, rule) {
                Ok(line) => format!("authorized {line}\n"),
                Err(why) => {
                    tracing::warn!(%why, "control socket: authorization refused");
                    format!("error: {why}\n")
                }
            },
            ("web-link", args) => match web_link(&conn, &handle, args) {
                Ok(answer) => answer,
                Err(why) => {
                    tracing::warn!(%why, "control socket: web link refused");
                    format!("error: {why}\n")
                }
            },
            _ => format!(
                "error: unknown request {line:?}; known: stats, authorize RULE, \
                 web-link IDENTITY LINK_SECONDS SESSION_SECONDS\n"
            ),
        };
        let _ = conn.write_all(answer.as_bytes());
    }
}

/// The line under the stats table that says how ringcastd fences its rings, and how many
/// sleeping-side barriers failed (expected: none).
fn fence_line() -> String {
    let failures = shm_ring::fence::membarrier_failures();
    let failed = if failures > 0 {
        format!("; {failures} membarrier calls failed (a wakeup may then come late)")
    } else {
        String::new()
    };
    format!("ring fence: {}{failed}\n", shm_ring::fence::init())
}

/// Who asks, if it is root or ringcastd's own user (the only ones who may grant).
fn admin(conn: &UnixStream, what: &str) -> Result<rustix::net::UCred, String> {
    let cred = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| format!("cannot tell who is asking: {e}"))?;
    let me = rustix::process::geteuid();
    if !cred.uid.is_root() && cred.uid != me {
        return Err(format!(
            "uid {} may not {what}; only root and ringcastd's user (uid {}) may",
            cred.uid.as_raw(),
            me.as_raw()
        ));
    }
    Ok(cred)
}

/// Mints a browser link (`web-link IDENTITY LINK_SECONDS SESSION_SECONDS`); the answer is
/// `web-link TOKEN PORT HASHES` (HASHES: comma-separated hex SHA-256, or `-`).
fn web_link(conn: &UnixStream, handle: &Handle, args: &str) -> Result<String, String> {
    let cred = admin(conn, "mint browser links")?;
    let fields: Vec<&str> = args.split_whitespace().collect();
    let [who, link, session] = fields[..] else {
        return Err("expected: web-link IDENTITY LINK_SECONDS SESSION_SECONDS".into());
    };
    let rule = transport_quic::authz::Rule::parse(&format!("{who} */* read"))?;
    let secs = |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|&n| n <= 366 * 24 * 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is not a number of seconds (up to a year)"))
    };
    let minted = handle
        .web_auth()
        .mint(rule.who.clone(), secs(link)?, secs(session)?)?;
    tracing::info!(identity = %rule.who, uid = cred.uid.as_raw(), "browser link minted");
    let hashes = if minted.cert_hashes.is_empty() {
        "-".to_owned()
    } else {
        minted
            .cert_hashes
            .iter()
            .map(|h| crate::web::hex(h))
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(format!(
        "web-link {} {} {hashes}\n",
        minted.token, minted.port
    ))
}

/// Adds a locally granted rule for an asker that is root or ringcastd's own user.
fn authorize(conn: &UnixStream, handle: &Handle, rule: &str) -> Result<String, String> {
    let cred = admin(conn, "authorize clients")?;
    let rule = transport_quic::authz::Rule::parse(rule)?;
    let line = rule.to_line();
    handle
        .local_grants()
        .grant(rule)
        .map_err(|e| e.to_string())?;
    tracing::info!(rule = %line, uid = cred.uid.as_raw(), pid = cred.pid.as_raw_nonzero(), "client authorized locally");
    Ok(line)
}

/// Asks the ringcastd behind `control_socket` for its stats table.
pub fn query_stats(control_socket: &Path) -> Result<String, Error> {
    transport_quic::local::request(control_socket, "stats").map_err(|source| Error::Control {
        path: control_socket.to_owned(),
        source,
    })
}
