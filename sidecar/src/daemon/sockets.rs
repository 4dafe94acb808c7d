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
        let mut line = String::new();
        let _ = BufReader::new((&conn).take(256)).read_line(&mut line);
        let answer = match line.trim() {
            "stats" => crate::device::render_table(&handle.stats()),
            other => format!("unknown request {other:?}; known: stats\n"),
        };
        let _ = conn.write_all(answer.as_bytes());
    }
}

/// Asks the ringcastd behind `control_socket` for its stats table.
pub fn query_stats(control_socket: &Path) -> Result<String, Error> {
    let err = |source| Error::Control {
        path: control_socket.to_owned(),
        source,
    };
    let mut s = UnixStream::connect(control_socket).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    s.write_all(b"stats\n").map_err(err)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(err)?;
    Ok(out)
}
