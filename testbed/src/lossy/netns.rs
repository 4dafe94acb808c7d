//! Network namespaces, `ip` and TUN devices for the link.

use super::*;
/// Fails with a clear message unless this process can create a link.
pub fn check_prerequisites() -> io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "lossy link: needs root (network namespaces and /dev/net/tun); run as root",
        ));
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "lossy link: iproute2's `ip` not found on PATH (Debian package iproute2)",
            ))
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "lossy link: /dev/net/tun does not exist",
        ));
    }
    Ok(())
}

/// Deletes namespaces named by [`LossyLink::create`] whose process is gone.
pub fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(AUTO_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// Deletes the namespaces of a link created with [`LossyLink::create_named`] by another process
/// (`lossy-link down`).
pub fn remove_named(name: &str) -> io::Result<()> {
    for side in ["a", "b"] {
        let ns = format!("{name}{side}");
        if Path::new(NETNS_DIR).join(&ns).exists() {
            ip(&["netns", "delete", &ns])?;
        }
    }
    Ok(())
}

pub(super) fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

pub(super) fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "lossy link: `ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `f` on a new thread that first joins the network namespace at `ns_path`.
pub(super) fn in_netns<R: Send + 'static>(
    ns_path: &Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    let ns = File::open(ns_path)?;
    let handle = std::thread::Builder::new()
        .name("lossy-setns".into())
        .spawn(move || -> io::Result<R> {
            // SAFETY: `ns` is an open namespace file; setns only changes this thread's network
            // namespace, and this thread ends when `f` returns.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })?;
    handle
        .join()
        .map_err(|_| io::Error::other("lossy link: namespace thread panicked"))?
}

/// Creates (or attaches to) TUN device `name` in the calling thread's namespace, non-blocking,
/// without packet information headers.
pub(super) fn open_tun(name: &str) -> io::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let path = c"/dev/net/tun";
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TUN name too long",
        ));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes), which `IfReq` matches in
    // size and layout for the fields used (name, then flags at offset 16).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(fd))
}
