//! Trust on first use: the known-hosts file and the server certificate verifier that pins
//! the first fingerprint seen for a host.

use super::*;

/// What the known-hosts file says about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// Not listed.
    Unknown,
    /// Listed with this fingerprint.
    Known(Fingerprint),
    /// The file exists but cannot be read, or is not UTF-8: what it says is unknown, so no
    /// host may be trusted or added (adding would pin over a fingerprint it may hold).
    Unreadable(String),
}

/// Looks up `host` (`name:port`) in a known-hosts file (`host fingerprint` per line).
pub fn known_host(file: &Path, host: &str) -> HostKey {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HostKey::Unknown,
        Err(e) => {
            return HostKey::Unreadable(format!(
                "cannot read the known hosts file {}: {e}; fix it (or move it away to trust \
                 servers anew) and connect again",
                file.display()
            ))
        }
    };
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(h), Some(fp)) = (parts.next(), parts.next()) {
            if h == host {
                if let Some(fp) = Fingerprint::parse(fp) {
                    return HostKey::Known(fp);
                }
            }
        }
    }
    HostKey::Unknown
}

/// Records `host` with `fp` (what a person accepted on first contact).
pub fn add_known_host(file: &Path, host: &str, fp: Fingerprint) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(f, "{host} {fp}")
}

/// Trust-on-first-use: the first fingerprint seen for a host is written to the
/// known-hosts file; later connections must present the same one.
#[derive(Debug)]
pub(super) struct KnownHostsVerifier {
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) file: PathBuf,
    pub(super) host: String,
    pub(super) refusal: Arc<Mutex<Option<String>>>,
    /// Ask before pinning: an unknown server is refused and its fingerprint left here.
    pub(super) ask_first: Option<Arc<Mutex<Option<Fingerprint>>>>,
}

impl ServerCertVerifier for KnownHostsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        match known_host(&self.file, &self.host) {
            HostKey::Known(k) if k == fp => Ok(ServerCertVerified::assertion()),
            HostKey::Known(k) => {
                let msg = format!(
                    "@@@ WARNING: THE IDENTITY OF RINGCAST SERVER {host} HAS CHANGED! @@@\n\
                     Someone could be eavesdropping on you right now (man-in-the-middle), or \
                     the server's identity was regenerated.\n\
                     Expected {k}\n\
                     Received {fp}\n\
                     If the change is expected, remove the line for {host} from {file} and \
                     connect again.",
                    host = self.host,
                    file = self.file.display()
                );
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                Err(rustls::Error::General(msg))
            }
            HostKey::Unreadable(msg) => {
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                Err(rustls::Error::General(msg))
            }
            HostKey::Unknown if self.ask_first.is_some() => {
                if let Some(slot) = &self.ask_first {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
                }
                Err(rustls::Error::General(format!(
                    "{} is not a known host yet ({fp})",
                    self.host
                )))
            }
            HostKey::Unknown => {
                add_known_host(&self.file, &self.host, fp).map_err(|e| {
                    rustls::Error::General(format!(
                        "cannot record {} in {}: {e}",
                        self.host,
                        self.file.display()
                    ))
                })?;
                tracing::warn!(
                    "permanently added {} ({fp}) to the list of known hosts in {}",
                    self.host,
                    self.file.display()
                );
                Ok(ServerCertVerified::assertion())
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
