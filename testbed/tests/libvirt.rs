//! The patched QEMU under Debian's libvirt: the test starts its own libvirtd and virtlogd
//! (no systemd), defines a domain whose `<emulator>` is the patched QEMU and whose
//! `<qemu:commandline>` adds the plugin devices, boots the test guest under TCG with QEMU
//! confined as libvirt does it (the unprivileged `libvirt-qemu` user, DAC labelling of the
//! kernel and initrd, a private /dev), and checks that the guest's console streams arrive
//! byte for byte in ringcastd's spool.
//!
//! What the confinement needs (docs/qemu.md): the plugin library and the emulator readable
//! and executable by `libvirt-qemu` along their whole path, and ringcastd running as that
//! same user (it accepts devices only from its own user or root) with its registration
//! socket in a directory that user can reach.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testbed::kit::bins::{binary, plugin};
use testbed::kit::{read_spool, wait_until, Ringcastd};
use testbed::qemu;
use testbed::stream::GuestStream;

const BOOT: Duration = Duration::from_secs(240);
const USER: &str = "libvirt-qemu";

/// A daemon started by the test, stopped (by its pid) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running domain, destroyed when dropped (a failing test leaves no guest behind).
struct Domain {
    uri: String,
    name: String,
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-c", &self.uri, "destroy", &self.name])
            .output();
    }
}

fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(cmd).exists())
}

fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn chown(path: &Path, ids: (u32, u32)) {
    std::os::unix::fs::chown(path, Some(ids.0), Some(ids.1))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Why libvirt cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !have("libvirtd") || !have("virtlogd") || !have("virsh") {
        return Some(
            "libvirt is not installed (qemu-patches/install-libvirt.sh installs it)".into(),
        );
    }
    if user_ids(USER).is_none() {
        return Some(format!(
            "there is no user {USER} (qemu-patches/install-libvirt.sh creates it)"
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("a system libvirtd needs root".into());
    }
    None
}

struct Libvirt {
    uri: String,
    _virtlogd: Daemon,
    _libvirtd: Daemon,
    log: PathBuf,
}

impl Libvirt {
    /// Starts virtlogd and a libvirtd listening on a socket in `dir` only.
    fn start(dir: &Path) -> Result<Libvirt, String> {
        let conf = dir.join("libvirtd.conf");
        std::fs::write(
            &conf,
            format!(
                "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
                dir.display()
            ),
        )
        .unwrap();
        // virtlogd keeps QEMU's stdout/stderr for libvirt; it listens in /run/libvirt.
        let virtlogd = Command::new("virtlogd")
            .arg("--pid-file")
            .arg(dir.join("virtlogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("virtlogd.log")).unwrap())
            .spawn()
            .map_err(|e| format!("virtlogd: {e}"))?;
        let log = dir.join("libvirtd.log");
        let libvirtd = Command::new("libvirtd")
            .arg("--config")
            .arg(&conf)
            .arg("--pid-file")
            .arg(dir.join("libvirtd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("libvirtd: {e}"))?;
        let lv = Libvirt {
            uri: format!("qemu:///system?socket={}/libvirt-sock", dir.display()),
            _virtlogd: Daemon(virtlogd),
            _libvirtd: Daemon(libvirtd),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // (`virsh version` fails without a system QEMU; `list` needs only the driver.)
            let out = lv.virsh(&["list", "--all"]);
            if out.is_ok() {
                return Ok(lv);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "libvirtd did not answer: {out:?}\n{}",
                    std::fs::read_to_string(&lv.log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn virsh(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .map_err(|e| format!("virsh: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

#[test]
fn guest_under_libvirt_streams_its_consoles_to_ringcastd() {
    if qemu::skipped() {
        eprintln!("libvirt test skipped: RINGCAST_SKIP_QEMU is set (scripts/test.sh --no-qemu)");
        return;
    }
    if let Some(why) = unavailable() {
        eprintln!("libvirt test skipped: {why}");
        return;
    }
    let ids = user_ids(USER).unwrap();
    // Everything QEMU (as libvirt-qemu) must reach lives in a directory it can traverse;
    // the emulator and the guest are copied there (the build cache is under /root).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    chmod(dir, 0o755);
    let lv_dir = dir.join("libvirt");
    std::fs::create_dir(&lv_dir).unwrap();
    let emulator = dir.join("qemu-system-x86_64");
    std::fs::copy(qemu::qemu_binary().unwrap(), &emulator).unwrap();
    chmod(&emulator, 0o755);
    let guest = qemu::guest_dir().unwrap();
    for f in ["vmlinuz", "initrd.gz"] {
        std::fs::copy(guest.join(f), dir.join(f)).unwrap();
        chmod(&dir.join(f), 0o644);
    }
    let so = dir.join("libringcast_backend.so");
    std::fs::copy(plugin(), &so).unwrap();
    chmod(&so, 0o755);

    // ringcastd as the user QEMU runs as: it accepts devices only from its own user.
    let rc_dir = dir.join("ringcastd");
    for d in ["", "run", "state", "home"] {
        let p = rc_dir.join(d);
        std::fs::create_dir_all(&p).unwrap();
        chown(&p, ids);
        chmod(&p, 0o755);
    }
    std::fs::create_dir(dir.join("bin")).unwrap();
    chmod(&dir.join("bin"), 0o755);
    let ringcastd_bin = dir.join("bin/ringcastd");
    std::fs::copy(binary("ringcastd"), &ringcastd_bin).unwrap();
    chmod(&ringcastd_bin, 0o755);
    let launcher_bin = ringcastd_bin.clone();
    let mut rc = Ringcastd::with_launcher(
        &rc_dir,
        &rc_dir.join("state"),
        Box::new(move || {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={USER}"),
                &format!("--regid={USER}"),
                "--clear-groups",
            ])
            .arg(&launcher_bin);
            c
        }),
    );
    rc.spawn();

    let lv = match Libvirt::start(&lv_dir) {
        Ok(lv) => lv,
        Err(why) => {
            eprintln!("libvirt test skipped: libvirt cannot start here: {why}");
            return;
        }
    };

    let name = format!("rc-lv-{}", std::process::id());
    let (serial_len, hvc_len) = (64 * 1024 + 1, 1024 * 1024 + 3);
    // The log file is created by QEMU, as libvirt-qemu, in a directory it may write.
    let log_dir = dir.join("guestlog");
    std::fs::create_dir(&log_dir).unwrap();
    chown(&log_dir, ids);
    let log = log_dir.join("ttyS1.log");
    let opts = format!("socket={}", rc.socket().display()).replace(',', ",,");
    let chardev = |id: &str| format!("plugin,id={id},path={},config={opts}", so.display());
    let args: Vec<String> = vec![
        "-L".into(),
        "/usr/share/seabios".into(),
        "-L".into(),
        "/usr/share/qemu".into(),
        "-chardev".into(),
        chardev("serial0"),
        "-device".into(),
        "isa-serial,chardev=serial0,index=0".into(),
        "-chardev".into(),
        format!("file,id=rclog,path={}", log.display()),
        "-device".into(),
        "isa-serial,chardev=rclog,index=1".into(),
        "-device".into(),
        "virtio-serial-pci,id=rcvs".into(),
        "-chardev".into(),
        chardev("hvc0"),
        "-device".into(),
        "virtconsole,chardev=hvc0,bus=rcvs.0".into(),
    ];
    let qemu_args: String = args
        .iter()
        .map(|a| format!("    <qemu:arg value='{}'/>\n", xml_escape(a)))
        .collect();
    let xml = format!(
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{dir}/vmlinuz</kernel>
    <initrd>{dir}/initrd.gz</initrd>
    <cmdline>console=ttyS1 quiet loglevel=3 panic=-1 rc.scenario=console rc.seed=61 rc.hvc_seed=62 rc.serial_bytes={serial_len} rc.hvc_bytes={hvc_len}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
{qemu_args}  </qemu:commandline>
</domain>
",
        dir = dir.display(),
        emulator = emulator.display(),
    );
    let xml_path = dir.join("domain.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let created = lv.virsh(&["create", xml_path.to_str().unwrap()]);
    let _domain = Domain {
        uri: lv.uri.clone(),
        name: name.clone(),
    };
    let qemu_log =
        || std::fs::read_to_string(format!("/var/log/libvirt/qemu/{name}.log")).unwrap_or_default();
    let created = created.unwrap_or_else(|e| {
        panic!("virsh create failed: {e}\nQEMU log:\n{}", qemu_log());
    });
    eprintln!("{created}");
    let running = lv.virsh(&["list"]).unwrap();
    eprintln!("{running}");
    // QEMU runs as libvirt-qemu, not as root.
    let pid = std::fs::read_to_string(format!("/run/libvirt/qemu/{name}.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    assert_eq!(uid, Some(ids.0), "QEMU's effective uid:\n{status}");

    // The guest powers off when it is done, and libvirt destroys the domain.
    wait_until("the domain to finish", BOOT, || {
        lv.virsh(&["domstate", &name]).is_err()
    });
    let guest_log = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "--- QEMU log (libvirt) ---\n{}\n--- guest ---\n{guest_log}",
        qemu_log()
    );
    assert!(
        guest_log.contains("scenario console done"),
        "the guest did not finish:\n{guest_log}\nQEMU:\n{}",
        qemu_log()
    );
    // QEMU ran as libvirt-qemu, under libvirt's user and labelling.
    assert!(qemu_log().contains("-chardev plugin"), "{}", qemu_log());
    for (dev, seed, len) in [("serial0", 61, serial_len), ("hvc0", 62, hvc_len)] {
        let spool = rc_dir.join(format!("state/{name}/{dev}"));
        rc.wait_until(&format!("{dev}'s spool is complete"), BOOT, || {
            spool.exists() && read_spool(&spool).0.len() >= len
        });
        let (bytes, _) = read_spool(&spool);
        assert!(
            bytes == GuestStream::bytes(seed, len),
            "{dev}: the spool differs"
        );
    }
}
