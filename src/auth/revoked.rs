//! The revocation set: keys of revoked credentials, sessions and identities (`cred:<id>`,
//! `fam:<id>`, `pw:<uid>:<epoch>`, `user:<id>`, `robot:<id>`, `org:<id>`), read from the metadata
//! store's revocation log.
//!
//! Invariant: every bearer token names the keys it depends on (its `src` claim) and is refused
//! once one of them is here. Each node refreshes the set from the store every `REFRESH` (the
//! background task in `server`), so a revocation on any node reaches every node's bearer tokens
//! within that time, with no database read per request.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::store::MetadataStore;

/// How often each node reads new revocations.
pub const REFRESH: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Revoked {
    keys: RwLock<HashSet<String>>,
    seq: AtomicI64,
}

impl Revoked {
    /// Whether any of `keys` is revoked.
    pub fn any(&self, keys: &[String]) -> bool {
        if keys.is_empty() {
            return false;
        }
        let set = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter().any(|k| set.contains(k))
    }

    /// Reads the keys added since the last refresh. Blocking.
    pub fn refresh(&self, meta: &MetadataStore) -> Result<usize, crate::store::Error> {
        let since = self.seq.load(Ordering::Acquire);
        let rows = meta.read(|r| r.revocations_since(since))?;
        let Some((last, _)) = rows.last() else {
            return Ok(0);
        };
        let last = *last;
        let n = rows.len();
        let mut set = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        set.extend(rows.into_iter().map(|(_, k)| k));
        self.seq.store(last, Ordering::Release);
        Ok(n)
    }
}
