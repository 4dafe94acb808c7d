//! Client identities and the authorization file that grants them rights: what a client
//! beyond loopback needs.

use std::path::Path;

use transport_quic::tls::Identity;

/// A client identity `name` created in `id_dir` (`<name>.crt`, `<name>.key`; the directory
/// is made 0700 when missing, as for a real client).
pub fn try_client_identity(id_dir: &Path, name: &str) -> Result<Identity, String> {
    Identity::create(id_dir, name, name, &[name.to_owned()])
        .map_err(|e| format!("client identity {name}: {e}"))
}

/// A client identity `name` created in `id_dir`, and the authorization file `authz`
/// granting it `rights` (e.g. `read`, `read,write,spy`) on every device.
pub fn try_authorized_client(
    id_dir: &Path,
    name: &str,
    authz: &Path,
    rights: &str,
) -> Result<Identity, String> {
    let identity = try_client_identity(id_dir, name)?;
    std::fs::write(authz, format!("{} */* {rights}\n", identity.fingerprint()))
        .map_err(|e| format!("cannot write {}: {e}", authz.display()))?;
    Ok(identity)
}

/// The client identity `name` in `id_dir`: loaded if it is there, created on first use.
pub fn reused_client_identity(id_dir: &Path, name: &str) -> Identity {
    let (crt, key) = (
        id_dir.join(format!("{name}.crt")),
        id_dir.join(format!("{name}.key")),
    );
    if crt.exists() {
        return Identity::load(&crt, &key)
            .unwrap_or_else(|e| panic!("client identity {name} in {}: {e}", id_dir.display()));
    }
    client_identity(id_dir, name)
}

/// [`try_client_identity`], panicking on failure.
pub fn client_identity(id_dir: &Path, name: &str) -> Identity {
    try_client_identity(id_dir, name).unwrap_or_else(|e| panic!("{e}"))
}

/// [`try_authorized_client`], panicking on failure.
pub fn authorized_client(id_dir: &Path, name: &str, authz: &Path, rights: &str) -> Identity {
    try_authorized_client(id_dir, name, authz, rights).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_file_names_the_identity_with_its_rights() {
        let t = tempfile::tempdir().unwrap();
        let authz = t.path().join("authorized_clients");
        let id = authorized_client(&t.path().join("ids"), "alice", &authz, "read,spy");
        let line = std::fs::read_to_string(&authz).unwrap();
        assert_eq!(line, format!("{} */* read,spy\n", id.fingerprint()));
        assert!(t.path().join("ids/alice.key").is_file());
    }
}
