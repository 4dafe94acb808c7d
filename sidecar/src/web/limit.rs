//! A per-address limit on the browser client's requests: the page's HTTPS requests (its
//! files, the link exchange, logout) and WebTransport session requests, counted together
//! for each client address. A token bucket per address: `BURST` requests at once (a page
//! load is about 16), then `PER_SECOND` more each second. Over it, a request is refused
//! with how long to wait (HTTP 429 and the reason; a WebTransport session request gets a
//! 429 status), so one address cannot turn ringcastd's web server into its own work (link
//! guessing, a reload loop) while others wait.
//!
//! An IPv6 client is counted by its /64 (one host can pick any address in its prefix); an
//! IPv4-mapped IPv6 address as the IPv4 address it is.
//!
//! The table is bounded: at most `MAX_ADDRESSES` addresses are tracked. When it is full,
//! full buckets (addresses quiet long enough) are forgotten first; if every tracked address
//! is still counting, the quarter of them with the most requests left are forgotten (they
//! start again with a full bucket if they come back), so a newcomer is never refused for
//! the table's sake and the table is swept at most once per `MAX_ADDRESSES / 4` newcomers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests an address may make at once.
pub const BURST: f64 = 120.0;
/// Requests an address gains each second, up to `BURST`.
pub const PER_SECOND: f64 = 4.0;
/// Addresses tracked at once.
pub const MAX_ADDRESSES: usize = 4096;

/// A refused request: how long until the address may make one again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TooMany {
    pub retry_after: Duration,
}

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many requests from this address (more than {BURST:.0} at once, or over \
             {PER_SECOND:.0} a second): try again in {} s",
            self.retry_after.as_secs().max(1)
        )
    }
}

/// The buckets of one ringcastd's web server.
#[derive(Debug, Default)]
pub struct RequestLimit {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + gained).min(BURST);
        self.at = now;
    }
}

impl RequestLimit {
    /// Counts a request from `addr` now; Err if it is over the limit.
    pub fn check(&self, addr: IpAddr) -> Result<(), TooMany> {
        self.check_at(addr, Instant::now())
    }

    pub(crate) fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), TooMany> {
        let addr = counted_as(addr);
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !b.contains_key(&addr) && b.len() >= MAX_ADDRESSES {
            make_room(&mut b, now);
        }
        let k = b.entry(addr).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        k.refill(now);
        if k.tokens < 1.0 {
            return Err(TooMany {
                retry_after: Duration::from_secs_f64((1.0 - k.tokens) / PER_SECOND),
            });
        }
        k.tokens -= 1.0;
        Ok(())
    }
}

/// The address a request is counted under: an IPv6 address's /64, an IPv4-mapped IPv6
/// address's IPv4 address, any other address itself.
fn counted_as(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Forgets full buckets and, if the table is still full, the quarter of the buckets with
/// the most tokens (the addresses that asked least lately).
fn make_room(b: &mut HashMap<IpAddr, Bucket>, now: Instant) {
    b.retain(|_, k| {
        k.refill(now);
        k.tokens < BURST
    });
    if b.len() < MAX_ADDRESSES {
        return;
    }
    let mut by_tokens: Vec<(IpAddr, f64)> = b.iter().map(|(a, k)| (*a, k.tokens)).collect();
    by_tokens.sort_unstable_by(|x, y| y.1.total_cmp(&x.1));
    for (a, _) in by_tokens.into_iter().take(MAX_ADDRESSES / 4) {
        b.remove(&a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_over_its_burst_is_refused_until_it_has_waited_and_others_are_not() {
        let l = RequestLimit::default();
        let t0 = Instant::now();
        for i in 0..BURST as usize {
            assert!(l.check_at(ip("10.0.0.1"), t0).is_ok(), "request {i}");
        }
        let refused = l.check_at(ip("10.0.0.1"), t0).unwrap_err();
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused
            .to_string()
            .contains("too many requests from this address"));
        // Another address has its own bucket.
        assert!(l.check_at(ip("10.0.0.2"), t0).is_ok());
        // After the time it was told, one more request goes through, and only one.
        let later = t0 + refused.retry_after + Duration::from_millis(1);
        assert!(l.check_at(ip("10.0.0.1"), later).is_ok());
        assert!(l.check_at(ip("10.0.0.1"), later).is_err());
    }

    #[test]
    fn the_table_stays_bounded_forgets_quiet_addresses_first_and_never_refuses_a_newcomer() {
        let l = RequestLimit::default();
        let t0 = Instant::now();
        // One address spends its whole burst; the table then fills with addresses that
        // asked once each.
        for _ in 0..BURST as usize {
            l.check_at(ip("10.9.9.9"), t0).unwrap();
        }
        for i in 1..MAX_ADDRESSES as u32 {
            l.check_at(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        assert_eq!(l.buckets.lock().unwrap().len(), MAX_ADDRESSES);
        // Every tracked address is still counting, yet a newcomer is served.
        assert!(l.check_at(ip("192.168.0.1"), t0).is_ok());
        assert!(l.buckets.lock().unwrap().len() <= MAX_ADDRESSES);
        // The address that asked most was kept: it is still over its limit, not reset.
        assert!(l.check_at(ip("10.9.9.9"), t0).is_err());
        // Once buckets are full again they are forgotten first.
        let later = t0 + Duration::from_secs_f64(1.0 / PER_SECOND) + Duration::from_millis(1);
        for i in 0..MAX_ADDRESSES as u32 {
            assert!(l
                .check_at(IpAddr::from(((i + 1) << 12).to_be_bytes()), later)
                .is_ok());
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_ADDRESSES);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_slash_64_and_a_mapped_ipv4_as_ipv4() {
        let l = RequestLimit::default();
        let t0 = Instant::now();
        for i in 0..BURST as u32 {
            l.check_at(ip(&format!("2001:db8:1:2::{:x}", i + 1)), t0)
                .unwrap();
        }
        // Another address in the same /64 shares the spent bucket; the next /64 does not.
        assert!(l.check_at(ip("2001:db8:1:2:ffff::1"), t0).is_err());
        assert!(l.check_at(ip("2001:db8:1:3::1"), t0).is_ok());
        for _ in 0..BURST as usize {
            l.check_at(ip("10.0.0.7"), t0).unwrap();
        }
        assert!(l.check_at(ip("::ffff:10.0.0.7"), t0).is_err());
    }
}
