//! Certificates for browsers (ringcastd `--web`): the page over HTTPS and WebTransport over
//! HTTP/3 on the same QUIC endpoint as `ringcast/1`.
//!
//! A browser cannot pin a fingerprint on first use the way `ringcast` does. It accepts a
//! server either by a certificate a CA it trusts signed (the admin's `--web-cert`), or, for
//! WebTransport only, by `serverCertificateHashes`: the SHA-256 of an ECDSA certificate
//! valid for at most 14 days, handed to the page out of band (in the link the operator
//! mints). Without an admin certificate ringcastd makes such a certificate itself and
//! replaces it before it gets old ([`WebCerts::ephemeral`]).
//!
//! One endpoint answers both protocols: the certificate is picked by the ALPN the client
//! offers (`ringcast/1`: the server identity clients pin; anything else: the web
//! certificate).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::*;

/// The ALPN of HTTP/3 (WebTransport sessions).
pub const H3_ALPN: &[u8] = b"h3";

/// How long a certificate ringcastd makes for browsers is valid: browsers accept
/// `serverCertificateHashes` only for certificates valid for 14 days or less.
pub const EPHEMERAL_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// Age at which ringcastd replaces its browser certificate with a new one.
pub const EPHEMERAL_ROTATE_AFTER: Duration = Duration::from_secs(6 * 24 * 3600);

/// The certificate browsers see.
#[derive(Debug)]
pub struct WebCerts {
    provider: Arc<CryptoProvider>,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// The admin's (CA-signed) certificate and key.
    Admin(Arc<CertifiedKey>),
    /// A short-lived self-signed ECDSA certificate, replaced when it gets old.
    Ephemeral {
        names: Vec<String>,
        current: Mutex<Ephemeral>,
    },
}

#[derive(Debug)]
struct Ephemeral {
    key: Arc<CertifiedKey>,
    made: SystemTime,
}

impl WebCerts {
    /// The admin's certificate chain and key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<WebCerts, Error> {
        let provider = provider();
        let id = Identity::load(cert, key)?;
        let certified = certified(&provider, id)?;
        Ok(WebCerts {
            provider,
            source: Source::Admin(Arc::new(certified)),
        })
    }

    /// A self-signed ECDSA P-256 certificate for `names`, valid for
    /// [`EPHEMERAL_VALIDITY`], replaced after [`EPHEMERAL_ROTATE_AFTER`].
    pub fn ephemeral(names: &[String]) -> Result<WebCerts, Error> {
        let provider = provider();
        let current = make_ephemeral(&provider, names, SystemTime::now())?;
        Ok(WebCerts {
            provider,
            source: Source::Ephemeral {
                names: names.to_vec(),
                current: Mutex::new(current),
            },
        })
    }

    /// Whether browsers must be given [`WebCerts::hashes`] (no CA vouches for it).
    pub fn self_signed(&self) -> bool {
        matches!(self.source, Source::Ephemeral { .. })
    }

    /// The certificate to present now (a new one when the current one is old).
    pub fn current(&self) -> Arc<CertifiedKey> {
        match &self.source {
            Source::Admin(k) => k.clone(),
            Source::Ephemeral { names, current } => {
                let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
                let now = SystemTime::now();
                let age = now.duration_since(cur.made).unwrap_or(Duration::ZERO);
                if age >= EPHEMERAL_ROTATE_AFTER {
                    match make_ephemeral(&self.provider, names, now) {
                        Ok(fresh) => {
                            tracing::info!(
                                "the browser certificate was replaced (it was {} days old)",
                                age.as_secs() / 86400
                            );
                            *cur = fresh;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot make a new browser certificate; keeping the old one")
                        }
                    }
                }
                cur.key.clone()
            }
        }
    }

    /// SHA-256 of the self-signed certificate browsers must be told to accept
    /// (`serverCertificateHashes`); empty for an admin's certificate.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        match &self.source {
            Source::Admin(_) => Vec::new(),
            // The hash of what `current` presents now (replaced first if it is old).
            Source::Ephemeral { .. } => vec![Sha256::digest(&self.current().cert[0]).into()],
        }
    }
}

fn certified(provider: &CryptoProvider, id: Identity) -> Result<CertifiedKey, Error> {
    let key = provider
        .key_provider
        .load_private_key(id.key)
        .map_err(Error::Tls)?;
    Ok(CertifiedKey::new(id.certs, key))
}

fn make_ephemeral(
    provider: &CryptoProvider,
    names: &[String],
    now: SystemTime,
) -> Result<Ephemeral, Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(Error::Cert)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(Error::Cert)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ringcastd (browser)");
    // A minute of slack for clocks a little behind; the whole span stays within 14 days.
    let from = now - Duration::from_secs(60);
    params.not_before = time::OffsetDateTime::from(from);
    params.not_after = time::OffsetDateTime::from(from + EPHEMERAL_VALIDITY);
    let cert = params.self_signed(&key).map_err(Error::Cert)?;
    let id = Identity {
        certs: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| Error::Pem(e.to_string()))?,
    };
    Ok(Ephemeral {
        key: Arc::new(certified(provider, id)?),
        made: now,
    })
}

/// Picks the certificate by the ALPN the client offers.
#[derive(Debug)]
struct ByAlpn {
    identity: Arc<CertifiedKey>,
    web: Arc<WebCerts>,
}

impl ResolvesServerCert for ByAlpn {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let ringcast = hello.alpn().is_some_and(|mut a| a.any(|p| p == ALPN));
        Some(if ringcast {
            self.identity.clone()
        } else {
            self.web.current()
        })
    }
}

/// Always the web certificate (the HTTPS page).
#[derive(Debug)]
struct WebOnly(Arc<WebCerts>);

impl ResolvesServerCert for WebOnly {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// [`server_config`] that also speaks HTTP/3 (`h3`) for WebTransport: the same endpoint,
/// the server identity for `ringcast/1`, `web`'s certificate for browsers. The transport
/// also accepts what HTTP/3 needs: a few unidirectional streams (its control and QPACK
/// streams) and datagrams (WebTransport requires them, though the server reads none).
pub fn server_config_with_web(
    identity: &Identity,
    limits: &Limits,
    web: Arc<WebCerts>,
) -> Result<quinn::ServerConfig, Error> {
    let p = provider();
    let resolver = ByAlpn {
        identity: Arc::new(certified(&p, identity.clone())?),
        web,
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .with_client_cert_verifier(Arc::new(AnyClientCert(p)))
        .with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = vec![ALPN.to_vec(), H3_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Protocol(format!("TLS configuration unusable for QUIC: {e}")))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut t = transport(limits, false);
    if let Some(t) = Arc::get_mut(&mut t) {
        t.max_concurrent_uni_streams(quinn::VarInt::from_u32(8))
            .datagram_receive_buffer_size(Some(64 << 10));
    }
    cfg.transport_config(t);
    Ok(cfg)
}

/// The TLS configuration of the HTTPS page (TCP): the web certificate, HTTP/1.1.
pub fn page_tls_config(web: Arc<WebCerts>) -> Result<rustls::ServerConfig, Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(WebOnly(web)));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ephemeral_certificate_is_ecdsa_and_valid_for_at_most_14_days() {
        let w = WebCerts::ephemeral(&["localhost".into()]).unwrap();
        assert!(w.self_signed());
        let der = w.current().cert[0].clone();
        let hash: [u8; 32] = Sha256::digest(&der).into();
        assert_eq!(w.hashes(), vec![hash]);
        let (_, cert) = x509_validity(&der);
        assert!(cert <= 14 * 24 * 3600, "valid for {cert} s");
        // id-ecPublicKey and prime256v1.
        let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
        assert!(has(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]));
        assert!(has(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]));
    }

    #[test]
    fn an_old_ephemeral_certificate_is_replaced_and_its_hash_follows() {
        let w = WebCerts::ephemeral(&["localhost".into()]).unwrap();
        let before = w.hashes();
        assert_eq!(w.hashes(), before, "a young certificate is kept");
        let Source::Ephemeral { names, current } = &w.source else {
            unreachable!()
        };
        let old = SystemTime::now() - EPHEMERAL_ROTATE_AFTER - Duration::from_secs(1);
        *current.lock().unwrap() = make_ephemeral(&w.provider, names, old).unwrap();
        let aged: [u8; 32] = Sha256::digest(w.source_cert()).into();
        let after = w.hashes();
        assert_ne!(after, vec![aged], "an old certificate is still presented");
        assert_ne!(after, before);
        assert_eq!(
            after,
            vec![<[u8; 32]>::from(Sha256::digest(&w.current().cert[0]))]
        );
    }

    impl WebCerts {
        /// The certificate held now, without replacing it.
        fn source_cert(&self) -> Vec<u8> {
            match &self.source {
                Source::Ephemeral { current, .. } => current.lock().unwrap().key.cert[0].to_vec(),
                Source::Admin(k) => k.cert[0].to_vec(),
            }
        }
    }

    /// (not before, seconds of validity) from the first two UTCTime values of a certificate.
    fn x509_validity(der: &[u8]) -> (i64, i64) {
        let mut times = Vec::new();
        let mut i = 0;
        while i + 15 <= der.len() && times.len() < 2 {
            if der[i] == 0x17 && der[i + 1] == 13 {
                let s = std::str::from_utf8(&der[i + 2..i + 14]).unwrap();
                let n = |a: usize| s[a..a + 2].parse::<i64>().unwrap();
                let days = days_from_civil(2000 + n(0), n(2), n(4));
                times.push(days * 86400 + n(6) * 3600 + n(8) * 60 + n(10));
                i += 15;
            } else {
                i += 1;
            }
        }
        (times[0], times[1] - times[0])
    }

    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    }
}
