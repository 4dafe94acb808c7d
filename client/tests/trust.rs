//! What the ringcast CLI trusts, against a real ringcastd: a known-hosts file it cannot
//! read is an error (never "no hosts known", which would pin whatever answers); `--ca`
//! checks an IP address target against the address in the certificate; `play --raw` does
//! not pour PCM into a terminal.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use testbed::kit::*;

fn start(dir: &Path) -> Ringcastd {
    Ringcastd::start(dir, &dir.join("state"), &[])
}

fn known_hosts(d: &Ringcastd) -> std::path::PathBuf {
    d.dir.join("client").join("known_hosts")
}

/// `ringcast list` against `d`: (success, stderr).
fn list(d: &Ringcastd, extra: &[&str]) -> (bool, String) {
    let out = d.ringcast().args(extra).arg("list").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_known_hosts_file_that_is_not_utf8_is_an_error_and_is_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let file = known_hosts(&d);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // A pin for this server written by an editor in Latin-1: unreadable as UTF-8.
    let content = format!("# caf\u{e9}\n{} SHA256:00\n", d.server()).replace('\u{e9}', "");
    let mut bytes = content.into_bytes();
    bytes.splice(5..5, [0xe9]);
    std::fs::write(&file, &bytes).unwrap();
    let (ok, err) = list(&d, &[]);
    assert!(!ok, "connected with an unreadable known_hosts: {err}");
    assert!(err.contains("cannot read the known hosts file"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "known_hosts was changed"
    );
}

#[test]
fn a_known_hosts_path_that_cannot_be_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let file = known_hosts(&d);
    std::fs::create_dir_all(&file).unwrap();
    let (ok, err) = list(&d, &[]);
    assert!(!ok, "connected with an unreadable known_hosts: {err}");
    assert!(err.contains("cannot read the known hosts file"), "{err}");
    // And a missing one is simply empty: the first connection pins.
    std::fs::remove_dir(&file).unwrap();
    let (ok, err) = list(&d, &[]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains(&d.server()));
}

/// A CA, and a server certificate it signed for `names` (DNS names or IP addresses),
/// installed as ringcastd's identity in `state`. Returns the CA's PEM file.
fn ca_signed_server(dir: &Path, state: &Path, names: &[&str]) -> std::path::PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(state.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(state.join("server.key"), key.serialize_pem()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    ca_file
}

#[test]
fn ca_verifies_an_ip_target_against_that_ip() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ca = ca_signed_server(dir.path(), &state, &["127.0.0.1"]);
    let d = start(dir.path());
    assert!(d.server().starts_with("127.0.0.1:"), "{}", d.server());
    let (ok, err) = list(&d, &["--ca", ca.to_str().unwrap()]);
    assert!(
        ok,
        "a certificate for 127.0.0.1 was refused for 127.0.0.1: {err}"
    );
}

#[test]
fn ca_refuses_an_ip_target_whose_certificate_names_only_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ca = ca_signed_server(dir.path(), &state, &["localhost"]);
    let d = start(dir.path());
    let (ok, err) = list(&d, &["--ca", ca.to_str().unwrap()]);
    assert!(
        !ok,
        "a certificate for localhost was accepted for 127.0.0.1"
    );
    assert!(
        err.to_lowercase().contains("certificate"),
        "the refusal does not say why: {err}"
    );
}

#[test]
fn play_raw_refuses_to_write_pcm_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let mut audio = FakeAudio::new(&d.socket(), "vm", "snd0");
    audio.push(0, 240);
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two fds into the pointers and reads nothing else.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: both fds were just opened for us and are owned by nothing else.
    let (_master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    let mut child = d
        .ringcast()
        .args(["play", "vm/snd0", "--raw"])
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringcast play --raw kept writing PCM into the terminal");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--raw writes PCM samples to stdout, which is a terminal"),
        "{err}"
    );
}
