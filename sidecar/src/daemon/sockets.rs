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
            ("stats", "") => crate::device::render_table(&handle.stats()),
            ("authorize", rule) => match authorize(&conn, &handle, rule) {
                Ok(line) => format!("authorized {line}\n"),
                Err(why) => {
                    tracing::warn!(%why, "control socket: authorization refused");
                    format!("error: {why}\n")
                }
            },
            _ => format!("error: unknown request {line:?}; known: stats, authorize RULE\n"),
        };
        let _ = conn.write_all(answer.as_bytes());
    }
}

/// Adds a locally granted rule for an asker that is root or ringcastd's own user.
fn authorize(conn: &UnixStream, handle: &Handle, rule: &str) -> Result<String, String> {
    let cred = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| format!("cannot tell who is asking: {e}"))?;
    let me = rustix::process::geteuid();
    if !cred.uid.is_root() && cred.uid != me {
        return Err(format!(
            "uid {} may not authorize clients; only root and ringcastd's user (uid {}) may",
            cred.uid.as_raw(),
            me.as_raw()
        ));
    }
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
