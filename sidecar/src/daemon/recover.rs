//! Journals a previous run left in the state directory, loaded at startup. Each is filed
//! under the device its `device.meta` names: a journal found in another directory (the
//! naming of older versions, `prod_db-4b77ecbe` for `prod db`) is moved to its device's
//! directory first, and two directories that claim one device are both reported, the
//! second left alone, never silently merged or overwritten.

use super::*;

impl Registry {
    /// Loads the journals a previous run left in the state dir.
    pub(super) fn recover(&self) {
        let Ok(vms) = std::fs::read_dir(&self.cfg.state_dir) else {
            return;
        };
        let mut found: Vec<(PathBuf, Meta)> = Vec::new();
        for vm in vms.flatten() {
            let Ok(devs) = std::fs::read_dir(vm.path()) else {
                continue;
            };
            for dev in devs.flatten() {
                let dir = dev.path();
                let Some(meta) = crate::journal::read_meta(&dir) else {
                    continue;
                };
                if meta.kind != "console" || meta.vm.is_empty() || meta.device.is_empty() {
                    continue;
                }
                found.push((dir, meta));
            }
        }
        // Directories already where they belong first, so that a misplaced copy never
        // takes the place of the real one.
        found.sort_by_key(|(dir, meta)| {
            *dir != self.device_dir(&DeviceKey::new(meta.vm.as_str(), meta.device.as_str()))
        });
        let mut devices = lock(&self.devices);
        for (found_at, meta) in found {
            let key = DeviceKey::new(meta.vm.clone(), meta.device.clone());
            let home = self.device_dir(&key);
            if let Some(d) = devices.get(&key) {
                let first = lock(d.journal.as_ref().expect("recovered devices are consoles"))
                    .dir()
                    .to_owned();
                tracing::error!(device = %key, used = %first.display(), ignored = %found_at.display(),
                    "two journal directories name the same device; the second is not used \
                     (merge or remove it by hand)");
                continue;
            }
            let dir = if found_at == home {
                home
            } else {
                match move_journal(&found_at, &home) {
                    Ok(()) => {
                        tracing::info!(device = %key, from = %found_at.display(), to = %home.display(),
                            "journal moved to its device's directory");
                        home
                    }
                    Err(e) => {
                        tracing::error!(device = %key, dir = %found_at.display(), error = %e,
                            "cannot move a journal to its device's directory; it is not used");
                        continue;
                    }
                }
            };
            match Journal::open(dir.clone(), self.cfg.journal.clone(), meta) {
                Ok(j) => {
                    tracing::info!(device = %key, end = j.end(), "journal recovered");
                    devices.insert(key.clone(), Device::new(key, DeviceKind::Console, Some(j)));
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot recover a journal")
                }
            }
        }
    }
}

/// Moves a device directory to `to` (whose parent is created `0700`); refuses to replace
/// anything there.
fn move_journal(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        ));
    }
    if let Some(parent) = to.parent() {
        crate::private::create_dir(parent)?;
    }
    std::fs::rename(from, to)?;
    // The segment being written is named by a relative symlink, still right after the move.
    if let Some(old_vm) = from.parent() {
        // An emptied VM directory of the old naming goes too (fails harmlessly otherwise).
        let _ = std::fs::remove_dir(old_vm);
    }
    Ok(())
}
