//! Files only ringcastd's own user may use: the state directory, the journals and their
//! metadata, the socket directory. They are created with their final modes (`0700`
//! directories, `0600` files; the umask can only take bits away), never created loose and
//! tightened afterwards, and a directory that already exists is checked before use:
//! ringcastd refuses one that another user owns or that others can write, since whoever
//! can write it can replace journals or put a symlink where a socket goes.

use std::fs::{DirBuilder, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::Error;

/// Mode of every directory ringcastd creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file ringcastd creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents, each `0700`.
pub(crate) fn create_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options that create a file `0600` (write access; add what else is needed).
pub(crate) fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).mode(FILE_MODE);
    o
}

/// Creates `path` if needed (`0700`), then checks that it is a directory owned by
/// ringcastd's user that nobody else can write. `what` names it in the refusal
/// ("state directory"), `option` is the option that chooses another one.
pub(crate) fn ensure_dir(path: &Path, what: &'static str, option: &str) -> Result<(), Error> {
    create_dir(path).map_err(|e| Error::io("create", path, e))?;
    let md = std::fs::metadata(path).map_err(|e| Error::io("inspect", path, e))?;
    let refuse = |reason: String| Error::UnsafeDirectory {
        what,
        path: path.to_owned(),
        reason: format!("{reason}, or choose another with {option}"),
    };
    if !md.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if md.uid() != me {
        return Err(refuse(format!(
            "belongs to uid {}, not to ringcastd's uid {me}: give it to that user (chown {me} {})",
            md.uid(),
            path.display()
        )));
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "can be written by other users (mode {mode:04o}): take their write access away \
             (chmod go-w {})",
            path.display()
        )));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %path.display(), mode = format!("{mode:04o}"),
            "the {what} can be read by other users; `chmod 700` it to keep them out");
    }
    Ok(())
}

/// Sets the mode of the unix socket at `path` without following a symlink there: only a
/// socket is changed.
pub(crate) fn chmod_socket(path: &Path, mode: u32) -> Result<(), Error> {
    use rustix::fs::{FileType, Mode, OFlags};
    let io = |what, e: rustix::io::Errno| Error::io(what, path, e.into());
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open (without following symlinks)", e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io("inspect", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Err(Error::io(
            "chmod",
            path,
            std::io::Error::other("not a socket (replaced behind ringcastd's back?)"),
        ));
    }
    // The fd's /proc entry names the inode it was opened on, not a path that could be
    // swapped: this is how fchmodat(AT_SYMLINK_NOFOLLOW) is done on Linux.
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::set_permissions(&proc, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod (through /proc/self/fd)", path, e))
}
