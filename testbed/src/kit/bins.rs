//! The binaries under test come from the build that runs the tests: `cargo test
//! --workspace` builds every bin target of the workspace into the same profile directory as
//! the test executables. A test never runs cargo itself (a nested build into the running
//! build's target directory races it); a missing binary is an error that names the command
//! that builds it.

use std::path::{Path, PathBuf};

/// The profile directory (`target/debug`, `target/release`) of the running executable: a
/// test in `target/debug/deps`, an example in `target/debug/examples`, a binary in
/// `target/debug`.
pub fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    profile_dir_of(&exe).ok_or_else(|| {
        format!(
            "{} is not inside a cargo target directory (no deps/ beside it)",
            exe.display()
        )
    })
}

fn profile_dir_of(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .find(|p| p.file_name().is_some_and(|n| n != "deps") && p.join("deps").is_dir())
        .map(Path::to_path_buf)
}

fn is_release(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == "release")
}

/// The command that builds what a test of the profile in `dir` needs.
pub fn build_command(dir: &Path) -> String {
    if is_release(dir) {
        "cargo build --release --workspace".into()
    } else {
        "cargo build --workspace".into()
    }
}

fn locate(dir: &Path, file: &str, what: &str) -> Result<PathBuf, String> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{what} is not built: {} does not exist. Run `{}` first (`cargo test --workspace` \
             builds it too)",
            path.display(),
            build_command(dir)
        ))
    }
}

/// A workspace binary (`ringcastd`, `ringcast`, `fake-qemu`, `lossy-link`) of the running
/// executable's profile.
pub fn try_binary(name: &str) -> Result<PathBuf, String> {
    locate(&profile_dir()?, name, &format!("the `{name}` binary"))
}

/// [`try_binary`], or a panic whose message names the command to run.
pub fn binary(name: &str) -> PathBuf {
    try_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// `libringcast_backend.so`: `$RINGCAST_BACKEND_SO` when set (a file that must exist), else
/// the one of the running executable's profile.
pub fn try_plugin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RINGCAST_BACKEND_SO") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "RINGCAST_BACKEND_SO={} does not exist (unset it to use the workspace build)",
                p.display()
            ))
        };
    }
    let dir = profile_dir()?;
    locate(&dir, "libringcast_backend.so", "the plugin library").map_err(|e| {
        format!(
            "{e}; or set RINGCAST_BACKEND_SO to a built libringcast_backend.so (`cargo build -p \
             backend-so{}`)",
            if is_release(&dir) { " --release" } else { "" }
        )
    })
}

/// [`try_plugin`], or a panic whose message names the command to run.
pub fn plugin() -> PathBuf {
    try_plugin().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_directory_is_found_from_tests_examples_and_binaries() {
        let t = tempfile::tempdir().unwrap();
        let debug = t.path().join("target/debug");
        std::fs::create_dir_all(debug.join("deps")).unwrap();
        std::fs::create_dir_all(debug.join("examples")).unwrap();
        for exe in ["deps/client-0123", "examples/scale", "ringcastd"] {
            assert_eq!(profile_dir_of(&debug.join(exe)).as_deref(), Some(&*debug));
        }
        assert_eq!(profile_dir_of(&t.path().join("elsewhere/x")), None);
    }

    #[test]
    fn a_missing_binary_names_the_command_that_builds_it() {
        let t = tempfile::tempdir().unwrap();
        let release = t.path().join("release");
        let e = locate(&release, "ringcastd", "the `ringcastd` binary").unwrap_err();
        assert!(e.contains("cargo build --release --workspace"), "{e}");
        let debug = t.path().join("debug");
        std::fs::create_dir_all(&debug).unwrap();
        std::fs::write(debug.join("ringcastd"), b"").unwrap();
        assert_eq!(
            locate(&debug, "ringcastd", "x").unwrap(),
            debug.join("ringcastd")
        );
        let e = locate(&debug, "ringcast", "x").unwrap_err();
        assert!(e.contains("`cargo build --workspace`"), "{e}");
    }
}
