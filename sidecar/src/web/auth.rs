//! Links and sessions of the browser client.
//!
//! The operator mints a link for an identity (`ringcast web-link IDENTITY`, through the
//! control socket, so only root and ringcastd's user can). The link is short-lived and
//! single-use; the page exchanges it for a session token, which its WebTransport sessions
//! carry. A session stands for the identity it was minted for: the authorization file and
//! the local grants decide what it may do, at every request, as for that identity's
//! certificate; removing the rule removes the rights. A session ends at its expiry or when
//! the page logs out; its WebTransport sessions are closed then.
//!
//! Tokens are 256 random bits; only their SHA-256 is kept, so a lookup does not compare
//! secrets byte by byte. Everything is in memory: a restart of ringcastd ends every link
//! and session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use transport_quic::authz::Who;
use transport_quic::tls::web::WebCerts;

use crate::device::lock;

/// How long a link may wait to be used unless the operator says otherwise.
pub const DEFAULT_LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// How long a session lasts unless the operator says otherwise.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most links waiting to be used at once (minting more refuses).
pub const MAX_PENDING_LINKS: usize = 1024;
/// Most sessions at once (an exchange beyond refuses).
pub const MAX_SESSIONS: usize = 1024;
/// How long a used or expired link is remembered, to say so instead of "unknown".
const REMEMBER: Duration = Duration::from_secs(24 * 3600);

type Key = [u8; 32];

fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// Links and sessions; one per ringcastd.
#[derive(Debug, Default)]
pub struct WebAuth {
    inner: Mutex<Inner>,
    /// The per-address limit on page and session requests.
    pub(crate) limit: super::limit::RequestLimit,
}

#[derive(Debug, Default)]
struct Inner {
    serving: Option<Serving>,
    links: HashMap<Key, Link>,
    sessions: HashMap<Key, Session>,
}

#[derive(Debug, Clone)]
struct Serving {
    port: u16,
    certs: Arc<WebCerts>,
}

#[derive(Debug)]
struct Link {
    who: Who,
    expires: Instant,
    session_lifetime: Duration,
    used: bool,
}

#[derive(Debug, Clone)]
struct Session {
    who: Who,
    expires: Instant,
    expires_wall: SystemTime,
    ended: bool,
}

/// A session as the server uses it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The identity it stands for.
    pub who: Who,
    /// When it ends (wall clock, for the page).
    pub expires: SystemTime,
}

/// A minted link: what the operator's tool turns into a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The link's secret.
    pub token: String,
    /// The port of the page and of WebTransport.
    pub port: u16,
    /// SHA-256 of the self-signed certificate the browser must accept (empty with the
    /// admin's certificate).
    pub cert_hashes: Vec<[u8; 32]>,
    /// How long the link may wait.
    pub lifetime: Duration,
}

/// Why a link was not exchanged: each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No such link (mistyped, or ringcastd restarted since).
    #[error("this link is not known to ringcastd (mistyped, or ringcastd restarted since it was made): ask the host's operator for a new one (ringcast web-link)")]
    Unknown,
    /// Already exchanged once.
    #[error("this link was already used: a link opens one session only; ask the host's operator for a new one (ringcast web-link)")]
    Used,
    /// Not used in time.
    #[error("this link expired before it was used: ask the host's operator for a new one (ringcast web-link)")]
    Expired,
    /// Too many sessions.
    #[error(
        "ringcastd has too many browser sessions open: log out of some, or wait for them to expire"
    )]
    Full,
}

fn random_token() -> Result<String, String> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| "the system's random number generator failed".to_owned())?;
    Ok(super::hex(&b))
}

impl WebAuth {
    /// Called when the browser client starts serving.
    pub fn set_serving(&self, port: u16, certs: Arc<WebCerts>) {
        lock(&self.inner).serving = Some(Serving { port, certs });
    }

    /// Mints a link for `who`.
    pub fn mint(
        &self,
        who: Who,
        lifetime: Duration,
        session_lifetime: Duration,
    ) -> Result<Minted, String> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let serving = inner
            .serving
            .clone()
            .ok_or_else(|| "ringcastd does not serve browsers: start it with --web".to_owned())?;
        inner.purge(now);
        let pending = inner
            .links
            .values()
            .filter(|l| !l.used && l.expires > now)
            .count();
        if pending >= MAX_PENDING_LINKS {
            return Err(format!(
                "{pending} links are waiting to be used already; wait for some to expire"
            ));
        }
        let token = random_token()?;
        inner.links.insert(
            key(&token),
            Link {
                who,
                expires: now + lifetime,
                session_lifetime,
                used: false,
            },
        );
        Ok(Minted {
            token,
            port: serving.port,
            cert_hashes: serving.certs.hashes(),
            lifetime,
        })
    }

    /// Exchanges a link for a session token (the link is used up).
    pub fn exchange(&self, link: &str) -> Result<(String, SessionInfo), Refused> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner.purge(now);
        let live = inner.sessions.values().filter(|s| !s.ended).count();
        let l = inner.links.get_mut(&key(link)).ok_or(Refused::Unknown)?;
        if l.used {
            return Err(Refused::Used);
        }
        if l.expires <= now {
            return Err(Refused::Expired);
        }
        if live >= MAX_SESSIONS {
            return Err(Refused::Full);
        }
        l.used = true;
        let (who, lifetime) = (l.who.clone(), l.session_lifetime);
        let token = random_token().map_err(|_| Refused::Full)?;
        let expires_wall = SystemTime::now() + lifetime;
        inner.sessions.insert(
            key(&token),
            Session {
                who: who.clone(),
                expires: now + lifetime,
                expires_wall,
                ended: false,
            },
        );
        Ok((
            token,
            SessionInfo {
                who,
                expires: expires_wall,
            },
        ))
    }

    /// The session of `token`, if it is live.
    pub fn session(&self, token: &str) -> Option<SessionInfo> {
        let inner = lock(&self.inner);
        let s = inner.sessions.get(&key(token))?;
        (!s.ended && s.expires > Instant::now()).then(|| SessionInfo {
            who: s.who.clone(),
            expires: s.expires_wall,
        })
    }

    /// Whether the session of `token` is still live; the error says why not.
    pub fn check_session(&self, token: &str) -> Result<(), String> {
        let inner = lock(&self.inner);
        match inner.sessions.get(&key(token)) {
            None => Err("the session is not known (ringcastd restarted?): open a new link".into()),
            Some(s) if s.ended => Err("the session was logged out".into()),
            Some(s) if s.expires <= Instant::now() => {
                Err("the session expired: ask the host's operator for a new link".into())
            }
            Some(_) => Ok(()),
        }
    }

    /// Ends the session of `token`; false if there was none.
    pub fn logout(&self, token: &str) -> bool {
        let mut inner = lock(&self.inner);
        match inner.sessions.get_mut(&key(token)) {
            Some(s) if !s.ended => {
                s.ended = true;
                true
            }
            _ => false,
        }
    }

    /// The certificate hashes browsers must accept now (they change when the certificate
    /// is replaced).
    pub fn cert_hashes(&self) -> Vec<[u8; 32]> {
        lock(&self.inner)
            .serving
            .as_ref()
            .map(|s| s.certs.hashes())
            .unwrap_or_default()
    }
}

impl Inner {
    /// Forgets links and sessions that ended long ago.
    fn purge(&mut self, now: Instant) {
        self.links.retain(|_, l| l.expires + REMEMBER > now);
        self.sessions.retain(|_, s| s.expires + REMEMBER > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport_quic::tls::Fingerprint;

    fn auth() -> WebAuth {
        let a = WebAuth::default();
        let certs = Arc::new(WebCerts::ephemeral(&["localhost".into()]).unwrap());
        a.set_serving(4433, certs);
        a
    }

    fn who() -> Who {
        Who::Fingerprint(Fingerprint::of(b"alice"))
    }

    #[test]
    fn a_link_is_exchanged_once_for_a_session_of_its_identity() {
        let a = auth();
        let m = a
            .mint(who(), Duration::from_secs(60), Duration::from_secs(60))
            .unwrap();
        assert_eq!((m.port, m.cert_hashes.len()), (4433, 1));
        let (session, info) = a.exchange(&m.token).unwrap();
        assert_eq!(info.who, who());
        assert_eq!(a.session(&session).unwrap().who, who());
        assert_eq!(a.exchange(&m.token).unwrap_err(), Refused::Used);
        assert_eq!(a.exchange("00").unwrap_err(), Refused::Unknown);
        assert!(a.session(&m.token).is_none(), "a link is not a session");
    }

    #[test]
    fn an_expired_link_is_refused_and_an_expired_session_ends() {
        let a = auth();
        let m = a
            .mint(who(), Duration::ZERO, Duration::from_secs(60))
            .unwrap();
        assert_eq!(a.exchange(&m.token).unwrap_err(), Refused::Expired);
        let m = a
            .mint(who(), Duration::from_secs(60), Duration::ZERO)
            .unwrap();
        let (session, _) = a.exchange(&m.token).unwrap();
        assert!(a.session(&session).is_none());
        assert!(a.check_session(&session).unwrap_err().contains("expired"));
    }

    #[test]
    fn logout_ends_a_session() {
        let a = auth();
        let m = a
            .mint(who(), Duration::from_secs(60), Duration::from_secs(60))
            .unwrap();
        let (session, _) = a.exchange(&m.token).unwrap();
        assert!(a.logout(&session));
        assert!(a.session(&session).is_none());
        assert!(a
            .check_session(&session)
            .unwrap_err()
            .contains("logged out"));
        assert!(!a.logout(&session));
    }

    #[test]
    fn without_web_no_link_is_minted() {
        let e = WebAuth::default()
            .mint(who(), Duration::from_secs(1), Duration::from_secs(1))
            .unwrap_err();
        assert!(e.contains("--web"), "{e}");
    }
}
