//! Booting the test guest under the patched QEMU with the plugin on its devices.
//!
//! The QEMU binary and the guest come from `qemu-patches/build.sh` and
//! `testbed/guest/build.sh` (both cached); `$RINGCAST_QEMU` and `$RINGCAST_GUEST_DIR` skip
//! the lookup (scripts/test.sh sets them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testbed lives in the workspace")
        .to_path_buf()
}

fn last_line_of(script: &Path) -> Result<PathBuf, String> {
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed", script.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().ok_or("no output")?.trim().to_owned();
    Ok(PathBuf::from(line))
}

/// The patched `qemu-system-x86_64`.
pub fn qemu_binary() -> Result<PathBuf, String> {
    match std::env::var_os("RINGCAST_QEMU") {
        Some(p) => Ok(PathBuf::from(p)),
        None => last_line_of(&workspace_root().join("qemu-patches/build.sh")),
    }
}

/// The directory holding the guest's `vmlinuz` and `initrd.gz`.
pub fn guest_dir() -> Result<PathBuf, String> {
    match std::env::var_os("RINGCAST_GUEST_DIR") {
        Some(p) => Ok(PathBuf::from(p)),
        None => last_line_of(&workspace_root().join("testbed/guest/build.sh")),
    }
}

/// Which emulated sound card carries the audiodev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoundCard {
    /// `-device AC97`.
    Ac97,
    /// `-device intel-hda -device hda-output`.
    IntelHda,
    /// `-device intel-hda -device hda-duplex`: a line-out and a line-in.
    IntelHdaDuplex,
}

/// A guest run: which scenario, and where each device goes.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// `-name guest=...`.
    pub vm_name: String,
    /// Kernel command line parameters after the fixed ones (`rc.scenario=... rc.seed=...`).
    pub params: String,
    /// The plugin library.
    pub plugin: PathBuf,
    /// `config=` for every plugin device (e.g. `socket=/path`).
    pub plugin_opts: String,
    /// Where ttyS1 (kernel console and the guest's own log) is written.
    pub log_file: PathBuf,
    /// Put the plugin on ttyS0 (isa-serial) as chardev `serial0`.
    pub serial: bool,
    /// Put the plugin on a virtconsole (hvc0) as chardev `hvc0`.
    pub virtconsole: bool,
    /// Put the plugin on a sound card as audiodev `snd0`.
    pub sound: Option<SoundCard>,
    /// More `-audiodev` options for `snd0` (e.g. `out.mixing-engine=off`), comma-separated.
    pub audiodev_options: String,
}

impl GuestRun {
    /// The full QEMU argument list.
    pub fn args(&self, guest: &Path) -> Vec<String> {
        let so = self.plugin.display();
        let o = self.plugin_opts.replace(',', ",,");
        let mut a: Vec<String> = [
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-m",
            "256",
            "-L",
            "/usr/share/seabios",
            "-L",
            "/usr/share/qemu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend([
            "-name".into(),
            format!("guest={}", self.vm_name),
            "-kernel".into(),
            guest.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            guest.join("initrd.gz").display().to_string(),
            "-append".into(),
            format!("console=ttyS1 quiet loglevel=3 panic=-1 {}", self.params),
        ]);
        if self.serial {
            a.extend([
                "-chardev".into(),
                format!("plugin,id=serial0,path={so},config={o}"),
            ]);
        } else {
            a.extend(["-chardev".into(), "null,id=serial0".into()]);
        }
        a.extend([
            "-serial".into(),
            "chardev:serial0".into(),
            "-chardev".into(),
            format!("file,id=log,path={}", self.log_file.display()),
            "-serial".into(),
            "chardev:log".into(),
            "-device".into(),
            "virtio-serial-pci".into(),
        ]);
        if self.virtconsole {
            a.extend([
                "-chardev".into(),
                format!("plugin,id=hvc0,path={so},config={o}"),
            ]);
        } else {
            a.extend(["-chardev".into(), "null,id=hvc0".into()]);
        }
        a.extend(["-device".into(), "virtconsole,chardev=hvc0".into()]);
        match self.sound {
            Some(card) => {
                let mut spec = format!("plugin,id=snd0,path={so},config={o}");
                if !self.audiodev_options.is_empty() {
                    spec = format!("{spec},{}", self.audiodev_options);
                }
                a.extend(["-audiodev".into(), spec]);
                match card {
                    SoundCard::Ac97 => a.extend(["-device".into(), "AC97,audiodev=snd0".into()]),
                    SoundCard::IntelHda => a.extend([
                        "-device".into(),
                        "intel-hda".into(),
                        "-device".into(),
                        "hda-output,audiodev=snd0".into(),
                    ]),
                    SoundCard::IntelHdaDuplex => a.extend([
                        "-device".into(),
                        "intel-hda".into(),
                        "-device".into(),
                        "hda-duplex,audiodev=snd0".into(),
                    ]),
                }
            }
            None => a.extend(["-audiodev".into(), "none,id=snd0".into()]),
        }
        a
    }

    /// Starts QEMU; its stderr (QEMU's and the plugin's log) is captured.
    pub fn spawn(&self) -> Result<Child, String> {
        let qemu = qemu_binary()?;
        let guest = guest_dir()?;
        Command::new(&qemu)
            .args(self.args(&guest))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", qemu.display()))
    }
}

/// Whether the real-QEMU tests were explicitly switched off (`scripts/test.sh --no-qemu`).
pub fn skipped() -> bool {
    std::env::var_os("RINGCAST_SKIP_QEMU").is_some()
}

/// Builds `testbed/plugins/tiny.c`, a minimal C backend plugin, as `dir/tiny-ABI.so` for the
/// ABI variant `abi` (see the file: 10, 11, 12 load; 9 and 20 are broken tables).
pub fn tiny_plugin(abi: u32, dir: &Path) -> Result<PathBuf, String> {
    let root = workspace_root();
    let so = dir.join(format!("tiny-{abi}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Werror",
            "-shared",
            "-fPIC",
            "-fvisibility=hidden",
        ])
        .arg(format!("-DTINY_ABI={abi}"))
        .arg("-I")
        .arg(root.join("qemu-patches/include"))
        .arg(root.join("testbed/plugins/tiny.c"))
        .arg("-o")
        .arg(&so)
        .output()
        .map_err(|e| format!("running {cc} (a C compiler is needed): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the tiny plugin failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(so)
}

/// A QEMU process that is killed when dropped (a failing test leaves no guest behind).
#[derive(Debug)]
pub struct Vm {
    /// The process; its stderr is piped.
    pub child: Child,
}

impl Vm {
    /// Starts `qemu_binary()` with `args`, stdin and stdout closed, stderr piped.
    pub fn start(args: &[String]) -> Result<Vm, String> {
        let qemu = qemu_binary()?;
        let child = Command::new(&qemu)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", qemu.display()))?;
        Ok(Vm { child })
    }

    /// Waits up to `timeout` for QEMU to exit; returns its status and stderr, or kills it
    /// and fails.
    pub fn wait(mut self, timeout: std::time::Duration) -> Result<(ExitStatus, String), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok((status, self.stderr()));
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "QEMU did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills QEMU and returns its stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr()
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
