//! Identities: a certificate chain and its key, created on first use; SHA-256
//! fingerprints; the common name of a certificate.

use super::*;

/// The SHA-256 of a DER certificate, shown as `SHA256:` and 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(cert_der).into())
    }

    /// Parses `SHA256:<64 hex digits>` (the prefix is optional, colons are allowed).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix("SHA256:").unwrap_or(s);
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let txt = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(txt, 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// End-entity certificate first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A new self-signed identity with this common name and subject alternative names.
    pub fn generate(
        common_name: &str,
        names: &[String],
    ) -> Result<(Identity, String, String), Error> {
        let key = rcgen::KeyPair::generate().map_err(Error::Cert)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(Error::Cert)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        // Far in the future: these identities are pinned, not renewed.
        params.not_after = rcgen::date_time_ymd(2125, 1, 1);
        let cert = params.self_signed(&key).map_err(Error::Cert)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let id = Identity {
            certs: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| Error::Pem(e.to_string()))?,
        };
        Ok((id, cert_pem, key_pem))
    }

    /// Loads a PEM certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, Error> {
        let certs = CertificateDer::pem_file_iter(cert)
            .map_err(|e| Error::Pem(format!("{}: {e}", cert.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem(format!("{}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(Error::Pem(format!("{}: no certificate", cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::Pem(format!("{}: {e}", key.display())))?;
        Ok(Identity { certs, key })
    }

    /// Loads `<dir>/<stem>.crt` and `<stem>.key`, creating them first if they do not exist
    /// (directory 0700, key 0600). Returns the identity and whether it was created.
    pub fn load_or_create(
        dir: &Path,
        stem: &str,
        common_name: &str,
        names: &[String],
    ) -> Result<(Identity, bool), Error> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        if cert.exists() && key.exists() {
            return Ok((Identity::load(&cert, &key)?, false));
        }
        Ok((Identity::create(dir, stem, common_name, names)?, true))
    }

    /// Creates (replacing) `<dir>/<stem>.crt` and `<stem>.key`.
    pub fn create(
        dir: &Path,
        stem: &str,
        common_name: &str,
        names: &[String],
    ) -> Result<Identity, Error> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("cannot create", dir, e))?;
        let (id, cert_pem, key_pem) = Identity::generate(common_name, names)?;
        let key = dir.join(format!("{stem}.key"));
        let cert = dir.join(format!("{stem}.crt"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .map_err(|e| Error::io("cannot write", &key, e))?;
        f.write_all(key_pem.as_bytes())
            .map_err(|e| Error::io("cannot write", &key, e))?;
        std::fs::write(&cert, cert_pem).map_err(|e| Error::io("cannot write", &cert, e))?;
        Ok(id)
    }

    /// The fingerprint of the end-entity certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.certs[0])
    }
}

/// The subject common name of a DER certificate, read with a minimal bounds-checked DER
/// walk (certificate → tbsCertificate → subject → the first CN attribute).
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        let (len, hdr) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*b.get(2 + i)?);
            }
            (len, 2 + n)
        };
        let body = b.get(hdr..hdr.checked_add(len)?)?;
        Some((tag, body, &b[hdr + len..]))
    }
    let (_, cert, _) = tlv(cert_der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    // serial, signature algorithm, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (_, subject, _) = tlv(rest)?;
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, next) = tlv(rdns)?;
        rdns = next;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, next) = tlv(attrs)?;
            attrs = next;
            let (_, oid, value) = tlv(attr)?;
            if oid == [0x55, 0x04, 0x03] {
                let (_, v, _) = tlv(value)?;
                return std::str::from_utf8(v).ok().map(str::to_owned);
            }
        }
    }
    None
}
