//! Certificates and trust: identities generated on first use, SHA-256 fingerprints,
//! trust-on-first-use known-hosts pinning or a CA bundle, and the quinn/rustls
//! configurations (TLS 1.3 only, ring provider, ALPN `ringcast/1`).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::proto::{Congestion, Limits, ALPN};
use crate::Error;

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Flow-control window of one stream the client receives.
const CLIENT_STREAM_WINDOW: u32 = 16 << 20;

/// Transport settings shared by both ends: the stream limit, the idle timeout and
/// keep-alives well inside it (so an idle but live link is never silent for long); the
/// congestion controller of `limits` for what this end sends; larger receive windows on
/// the client.
fn transport(limits: &Limits, client: bool) -> Arc<quinn::TransportConfig> {
    let idle = limits.idle_timeout.max(crate::proto::MIN_IDLE_TIMEOUT);
    let mut t = quinn::TransportConfig::default();
    if client {
        // The client receives the console floods. quinn's default stream window (1.25 MB)
        // caps one stream at window / (RTT + loss recovery): about 25 MB/s at 20 ms RTT and
        // 1% loss, where a lost packet holds the window for two round trips. The server
        // keeps the default: its streams carry only small input frames, and a larger window
        // there would let a client make it buffer more.
        t.stream_receive_window(quinn::VarInt::from_u32(CLIENT_STREAM_WINDOW))
            .receive_window(quinn::VarInt::from_u32(2 * CLIENT_STREAM_WINDOW));
    }
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .keep_alive_interval(Some(crate::proto::keep_alive_for(idle, limits.keep_alive)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle)
                .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
        ))
        .datagram_receive_buffer_size(Some(1 << 20));
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    match limits.congestion {
        Congestion::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
        Congestion::NewReno => t.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
        Congestion::Bbr => t.congestion_controller_factory(Arc::new(BbrConfig::default())),
    };
    Arc::new(t)
}

/// Accepts any client certificate whose holder proves possession of its key; what the
/// certificate may do is decided afterwards by the authorization file (by fingerprint,
/// or by common name when a client CA vouches for it). A client without a certificate
/// is anonymous.
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The quinn server configuration: TLS 1.3 only, ALPN `ringcast/1`, optional client
/// certificates, the per-client stream limit.
pub fn server_config(identity: &Identity, limits: &Limits) -> Result<quinn::ServerConfig, Error> {
    let p = provider();
    let mut tls = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .with_client_cert_verifier(Arc::new(AnyClientCert(p)))
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(Error::Tls)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Protocol(format!("TLS configuration unusable for QUIC: {e}")))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(limits, false));
    Ok(cfg)
}

/// How a client decides to trust a server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Pin the server's certificate fingerprint in this known-hosts file on first use;
    /// refuse a changed one.
    KnownHosts(PathBuf),
    /// Verify the server's certificate chain and name against this PEM CA bundle.
    Ca(PathBuf),
}

/// `~/.config/ringcast` (or `$XDG_CONFIG_HOME/ringcast`).
pub fn config_dir() -> PathBuf {
    match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("ringcast"),
        _ => home().join(".config").join("ringcast"),
    }
}

/// `~/.local/state/ringcast` (or `$XDG_STATE_HOME/ringcast`).
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("ringcast"),
        _ => home().join(".local").join("state").join("ringcast"),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// What the known-hosts file says about a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// Not listed.
    Unknown,
    /// Listed with this fingerprint.
    Known(Fingerprint),
}

/// Looks up `host` (`name:port`) in a known-hosts file (`host fingerprint` per line).
pub fn known_host(file: &Path, host: &str) -> HostKey {
    let Ok(text) = std::fs::read_to_string(file) else {
        return HostKey::Unknown;
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

fn add_known_host(file: &Path, host: &str, fp: Fingerprint) -> std::io::Result<()> {
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
struct KnownHostsVerifier {
    provider: Arc<CryptoProvider>,
    file: PathBuf,
    host: String,
    refusal: Arc<Mutex<Option<String>>>,
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

/// A client configuration and where a pinning refusal is reported.
#[derive(Debug)]
pub struct ClientSetup {
    /// For `quinn::Endpoint::connect_with`.
    pub config: quinn::ClientConfig,
    /// Set when the known-hosts check refused the server (the message to show).
    pub refusal: Arc<Mutex<Option<String>>>,
}

/// The quinn client configuration for connecting to `host` (`name:port`, the known-hosts
/// key): TLS 1.3 only, ALPN `ringcast/1`, the client certificate if there is one.
pub fn client_config(
    identity: Option<&Identity>,
    trust: &Trust,
    host: &str,
) -> Result<ClientSetup, Error> {
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?;
    let refusal = Arc::new(Mutex::new(None));
    let builder = match trust {
        Trust::KnownHosts(file) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KnownHostsVerifier {
                provider: p,
                file: file.clone(),
                host: host.to_owned(),
                refusal: refusal.clone(),
            })),
        Trust::Ca(bundle) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(bundle)
                .map_err(|e| Error::Pem(format!("{}: {e}", bundle.display())))?
            {
                let c = c.map_err(|e| Error::Pem(format!("{}: {e}", bundle.display())))?;
                roots.add(c).map_err(Error::Tls)?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let mut tls = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(Error::Tls)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Protocol(format!("TLS configuration unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(&Limits::default(), true));
    Ok(ClientSetup { config, refusal })
}

/// A CA whose signature makes a client certificate's common name trustworthy
/// (`cn:NAME` lines of the authorization file).
#[derive(Debug, Clone)]
pub struct ClientCa(Arc<dyn ClientCertVerifier>);

impl ClientCa {
    /// Loads a PEM bundle of CA certificates.
    pub fn load(bundle: &Path) -> Result<Self, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(bundle)
            .map_err(|e| Error::Pem(format!("{}: {e}", bundle.display())))?
        {
            let c = c.map_err(|e| Error::Pem(format!("{}: {e}", bundle.display())))?;
            roots.add(c).map_err(Error::Tls)?;
        }
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| Error::Pem(format!("{}: {e}", bundle.display())))?;
        Ok(ClientCa(v))
    }

    /// The common name of the chain's end-entity certificate if this CA signed it.
    pub fn verified_common_name(&self, chain: &[CertificateDer<'static>]) -> Option<String> {
        let (ee, rest) = chain.split_first()?;
        self.0
            .verify_client_cert(ee, rest, UnixTime::now())
            .ok()
            .and_then(|_| common_name(ee))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_prints_and_parses_back() {
        let fp = Fingerprint::of(b"certificate");
        let s = fp.to_string();
        assert!(s.starts_with("SHA256:") && s.len() == 7 + 64);
        assert_eq!(Fingerprint::parse(&s), Some(fp));
        assert_eq!(Fingerprint::parse("SHA256:zz"), None);
    }

    #[test]
    fn a_created_identity_is_loaded_back_with_its_common_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) =
            Identity::load_or_create(dir.path(), "client", "alice", &["alice".into()]).unwrap();
        assert!(created);
        let (b, created) =
            Identity::load_or_create(dir.path(), "client", "alice", &["alice".into()]).unwrap();
        assert!(!created);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(common_name(&a.certs[0]).as_deref(), Some("alice"));
        assert_eq!(common_name(b"\x30\x82\xff"), None);
    }

    #[test]
    fn the_known_hosts_file_maps_host_and_port_to_a_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        assert_eq!(known_host(&file, "h:1"), HostKey::Unknown);
        let fp = Fingerprint::of(b"x");
        add_known_host(&file, "h:1", fp).unwrap();
        assert_eq!(known_host(&file, "h:1"), HostKey::Known(fp));
        assert_eq!(known_host(&file, "h:2"), HostKey::Unknown);
    }
}
