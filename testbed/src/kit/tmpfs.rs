//! A small tmpfs mounted for one test (a disk that fills up); unmounted when dropped.
//! Mounting needs root (CI runs as root); elsewhere the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `1m`) on `dir`, creating it; its
    /// root is `0700` (ringcastd refuses a state directory others can write).
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            rustix::process::getuid().is_root(),
            "this test mounts a tmpfs to fill a disk and needs root; run it as root (CI does)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "mount -t tmpfs -o size={size} tmpfs {} failed",
            dir.display()
        );
        Tmpfs(dir.to_owned())
    }

    /// Fills it: writes a file `name` until the disk is full.
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join(name)).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        while f.write_all(&small[..1]).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
