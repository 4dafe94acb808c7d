//! Certificates and trust: identities generated on first use, SHA-256 fingerprints,
//! trust-on-first-use known-hosts pinning or a CA bundle, and the quinn/rustls
//! configurations (TLS 1.3 only, ring provider, ALPN `ringcast/1`).
//!
//! Modules: [`identity`] (certificates, keys, fingerprints), [`known_hosts`] (trust on first
//! use), [`client_auth`] (client certificates and a CA for `cn:` names), [`web`] (browsers:
//! the certificate they see, the endpoint that also speaks HTTP/3); this one builds
//! the quinn/rustls configurations from them.

pub mod client_auth;
pub mod identity;
pub mod known_hosts;
pub mod web;

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

pub use client_auth::*;
pub use identity::*;
pub use known_hosts::*;

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Flow-control window of one stream the client receives.
pub(super) const CLIENT_STREAM_WINDOW: u32 = 16 << 20;
/// Receive window of one stream on the server side: a few maximum input frames.
pub(super) const SERVER_STREAM_WINDOW: u32 = 256 << 10;

/// Transport settings shared by both ends: the stream limit, the idle timeout and
/// keep-alives well inside it (so an idle but live link is never silent for long); the
/// congestion controller of `limits` for what this end sends; larger receive windows on
/// the client.
pub(super) fn transport(limits: &Limits, client: bool) -> Arc<quinn::TransportConfig> {
    let idle = limits.idle_timeout.max(crate::proto::MIN_IDLE_TIMEOUT);
    let mut t = quinn::TransportConfig::default();
    if client {
        // The client receives the console floods. quinn's default stream window (1.25 MB)
        // caps one stream at window / (RTT + loss recovery): about 25 MB/s at 20 ms RTT and
        // 1% loss, where a lost packet holds the window for two round trips. The server
        // keeps the default: its streams carry only small input frames, and a larger window
        // there would let a client make it buffer more.
        t.stream_receive_window(quinn::VarInt::from_u32(CLIENT_STREAM_WINDOW))
            .receive_window(quinn::VarInt::from_u32(2 * CLIENT_STREAM_WINDOW))
            .datagram_receive_buffer_size(Some(1 << 20));
    } else {
        // The server reads small frames only (input, requests; `Limits::max_client_frame`)
        // and never reads datagrams: buffer little. The datagram buffer cannot be `None`:
        // quinn then refuses to *send* datagrams too (audio with `--datagrams` would silently
        // fall back to the stream), so it is one datagram's worth, never read.
        t.stream_receive_window(quinn::VarInt::from_u32(SERVER_STREAM_WINDOW))
            .receive_window(quinn::VarInt::from_u32(4 * SERVER_STREAM_WINDOW))
            .datagram_receive_buffer_size(Some(1500));
    }
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .keep_alive_interval(Some(crate::proto::keep_alive_for(idle, limits.keep_alive)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle)
                .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
        ));
    use quinn::congestion::{CubicConfig, NewRenoConfig};
    match limits.congestion {
        Congestion::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
        Congestion::NewReno => t.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(crate::congestion::BbrFactory::default()))
        }
    };
    t.mtu_discovery_config(Some(mtu_discovery()));
    Arc::new(t)
}

/// Path MTU discovery searches up to the largest UDP payload. quinn's default bound (1452,
/// Ethernet's) keeps loopback and jumbo-frame links at 1452-byte packets, and on loopback
/// (MTU 64 KiB) the per-packet work, not the crypto, is what limits a flood. Each path
/// still gets its own value: probes that do not arrive are not used, and every connection
/// starts at 1200 bytes.
pub(super) fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(u16::MAX);
    mtu
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
    /// Like `KnownHosts`, but a server not yet in the file is refused (reported in
    /// [`ClientSetup::unknown`]) rather than pinned, so a person can be asked first.
    KnownHostsAsk(PathBuf),
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

pub(super) fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// A client configuration and where a pinning refusal is reported.
#[derive(Debug)]
pub struct ClientSetup {
    /// For `quinn::Endpoint::connect_with`.
    pub config: quinn::ClientConfig,
    /// Set when the known-hosts check refused the server (the message to show).
    pub refusal: Arc<Mutex<Option<String>>>,
    /// Set when [`Trust::KnownHostsAsk`] met a server not in the file: its fingerprint.
    pub unknown: Arc<Mutex<Option<Fingerprint>>>,
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
    let unknown = Arc::new(Mutex::new(None));
    let builder = match trust {
        Trust::KnownHosts(file) | Trust::KnownHostsAsk(file) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KnownHostsVerifier {
                provider: p,
                file: file.clone(),
                host: host.to_owned(),
                refusal: refusal.clone(),
                ask_first: matches!(trust, Trust::KnownHostsAsk(_)).then(|| unknown.clone()),
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
    Ok(ClientSetup {
        config,
        refusal,
        unknown,
    })
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
        // Not UTF-8, or not a readable file: never "unknown" (which would pin anew).
        std::fs::write(&file, b"h:1 \xff\xfe\n").unwrap();
        assert!(
            matches!(known_host(&file, "h:1"), HostKey::Unreadable(m) if m.contains("cannot read the known hosts file")),
        );
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(matches!(known_host(&file, "h:1"), HostKey::Unreadable(_)));
    }
}
