//! Failed-login limits that cannot be aimed at somebody else.
//!
//! Failures are counted per client address and per (credential or user name, address). A typed
//! user name (`iamapikey`, `iamrefresh`, `token`) is keyed by the credential id embedded in the
//! secret, never by the shared name; `iambearer` and malformed secrets cost nothing to check and
//! count against the address only. So a correct credential from an address that is not itself
//! over its limit is never refused because of another address's failures.
//!
//! Invariant: a slot is reserved before the secret is checked (`reserve`), and counts against
//! the limits until it resolves, so concurrent attempts cannot overrun a limit: at most `max`
//! checks of one key are under way or failed within a window.
//!
//! With several nodes (PostgreSQL), failures are also counted in the database per key and
//! minute (`Shared`): a node reads the shared count before an attempt on a key that has failed
//! anywhere (it learns of such keys from its own failures and from a pull every second), and a
//! key is refused when either count reaches its limit. So an attacker who spreads attempts over
//! N nodes gets at most the limit plus one blind attempt per node per window, not N times it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed attempts allowed per window per (credential or name, address), and per address.
pub(crate) const MAX_FAILURES_PER_KEY: u32 = 10;
pub(crate) const MAX_FAILURES_PER_ADDR: u32 = 30;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Keys kept at most; past this, windows that ended are dropped first.
const MAX_KEYS: usize = 200_000;

struct Window {
    start: Instant,
    failures: u32,
    pending: u32,
    /// The count of all nodes for the current minute, as last read: (minute, count).
    shared: Option<(i64, u32)>,
}

/// The current minute (the window of shared counts).
pub(crate) fn minute() -> i64 {
    crate::store::now() / 60
}

#[derive(Default)]
pub(crate) struct Limiter {
    windows: Mutex<HashMap<String, Window>>,
}

/// A reserved attempt: resolve it with `fail` or `succeed`; dropping it releases it.
pub(crate) struct Slot<'a> {
    limiter: &'a Limiter,
    keys: Vec<String>,
}

/// The limit keys of a login attempt: the address, and the credential or name at that address.
pub(crate) fn keys_for(subject: Option<String>, addr: Option<IpAddr>) -> Vec<(String, u32)> {
    // One IPv6 client usually holds a whole /56: it counts as one address.
    let addr = addr.map_or_else(
        || "unknown".to_owned(),
        |a| crate::types::ClientAddress::from(a).to_string(),
    );
    let mut keys = vec![(format!("addr {addr}"), MAX_FAILURES_PER_ADDR)];
    if let Some(s) = subject {
        keys.push((format!("{s} @ {addr}"), MAX_FAILURES_PER_KEY));
    }
    keys
}

impl Limiter {
    /// Reserves an attempt under every key, or says how long until one of them allows it.
    pub(crate) fn reserve(&self, keys: Vec<(String, u32)>) -> Result<Slot<'_>, Duration> {
        let mut map = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > MAX_KEYS {
            map.retain(|_, w| w.pending > 0 || w.start.elapsed() < WINDOW);
        }
        for (key, max) in &keys {
            if let Some(w) = map.get_mut(key) {
                if w.start.elapsed() >= WINDOW {
                    w.start = Instant::now();
                    w.failures = 0;
                }
                let shared = match w.shared {
                    Some((m, n)) if m == minute() => n,
                    _ => 0,
                };
                if w.failures.max(shared) + w.pending >= *max {
                    let left = WINDOW.saturating_sub(w.start.elapsed());
                    return Err(left.max(Duration::from_secs(1)));
                }
            }
        }
        for (key, _) in &keys {
            map.entry(key.clone()).or_insert_with(Window::new).pending += 1;
        }
        Ok(Slot {
            limiter: self,
            keys: keys.into_iter().map(|(k, _)| k).collect(),
        })
    }

    /// Records the count all nodes have for `key` in the current minute.
    pub(crate) fn set_shared(&self, key: &str, count: i64) {
        let mut map = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > MAX_KEYS && !map.contains_key(key) {
            return;
        }
        let n = u32::try_from(count).unwrap_or(u32::MAX);
        map.entry(key.to_owned()).or_insert_with(Window::new).shared = Some((minute(), n));
    }

    /// Whether `key` has failed recently, here or (as last heard) on another node.
    pub(crate) fn suspect(&self, key: &str) -> bool {
        let map = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).is_some_and(|w| {
            (w.failures > 0 && w.start.elapsed() < WINDOW)
                || w.shared.is_some_and(|(m, n)| m == minute() && n > 0)
        })
    }

    fn resolve(&self, keys: &[String], failed: bool) {
        let mut map = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        for k in keys {
            if let Some(w) = map.get_mut(k) {
                w.pending = w.pending.saturating_sub(1);
                if failed {
                    w.failures += 1;
                }
            }
        }
    }
}

impl Window {
    fn new() -> Window {
        Window {
            start: Instant::now(),
            failures: 0,
            pending: 0,
            shared: None,
        }
    }
}

impl Slot<'_> {
    pub(crate) fn fail(mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.limiter.resolve(&keys, true);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            self.limiter.resolve(&self.keys, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_before_the_check() {
        let l = Limiter::default();
        let keys = || keys_for(Some("user alice".into()), "10.0.0.1".parse().ok());
        // Ten attempts under way at once: the eleventh is refused before any resolves.
        let slots: Vec<_> = (0..10).map(|_| l.reserve(keys()).unwrap()).collect();
        assert!(l.reserve(keys()).is_err());
        for s in slots {
            s.fail();
        }
        assert!(l.reserve(keys()).is_err());
        // Another address with the same name is not affected, nor the same address for another
        // credential (until the address itself is over its own limit).
        let other = keys_for(Some("user alice".into()), "10.0.0.2".parse().ok());
        assert!(l.reserve(other).is_ok());
        let bob = keys_for(Some("user bob".into()), "10.0.0.1".parse().ok());
        drop(l.reserve(bob).unwrap());
        // Addresses of one IPv6 /56 count together; an IPv4-mapped one is its IPv4 address.
        let a = keys_for(None, "2001:db8::1".parse().ok());
        let b = keys_for(None, "2001:db8:0:ff::ffff:2".parse().ok());
        assert_eq!(a, b);
        assert_eq!(a[0].0, "addr 2001:db8::/56");
        assert_ne!(a, keys_for(None, "2001:db8:0:100::1".parse().ok()));
        assert_eq!(
            keys_for(None, "::ffff:10.0.0.9".parse().ok()),
            keys_for(None, "10.0.0.9".parse().ok())
        );
        // Successes (dropped slots) do not count.
        let carol = || keys_for(Some("user carol".into()), "10.0.0.3".parse().ok());
        for _ in 0..50 {
            drop(l.reserve(carol()).unwrap());
        }
    }
}
