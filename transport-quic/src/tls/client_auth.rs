//! Client certificates: any certificate whose holder proves its key is accepted (the
//! authorization file decides what it may do), and a CA whose signature vouches for
//! common names.

use super::*;

/// Accepts any client certificate whose holder proves possession of its key; what the
/// certificate may do is decided afterwards by the authorization file (by fingerprint,
/// or by common name when a client CA vouches for it). A client without a certificate
/// is anonymous.
#[derive(Debug)]
pub(super) struct AnyClientCert(pub(super) Arc<CryptoProvider>);

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
