//! The revocation set: keys of revoked credentials, sessions and identities (`cred:<id>`,
//! `fam:<id>`, `pw:<uid>:<epoch>`, `user:<id>`, `robot:<id>`, `ns:<name>@<org id>.<created>`),
//! read from the metadata
//! store's revocation log.
//!
//! Invariant: every bearer token names the keys it depends on (its `src` claim) and is refused
//! once one of them is here. Each node refreshes the set from the store every `REFRESH` (the
//! background task in `server`), so a revocation on any node reaches every node's bearer tokens
//! within that time, with no database read per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::store::MetadataStore;

/// How often each node reads new revocations.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Keys (with when they were revoked) kept at most this long, like the rows of the log: longer
/// than any bearer token lives (`server` sets it to the token lifetime plus an hour).
#[derive(Default)]
pub struct Revoked {
    keys: RwLock<HashMap<String, i64>>,
    seq: AtomicI64,
    retention_secs: AtomicI64,
}

impl Revoked {
    /// Whether any of `keys` is revoked.
    pub fn any(&self, keys: &[String]) -> bool {
        if keys.is_empty() {
            return false;
        }
        let set = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter().any(|k| set.contains_key(k))
    }

    /// How long keys are kept; until set, forever.
    pub fn set_retention(&self, d: Duration) {
        self.retention_secs.store(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Reads the keys added since the last refresh. Blocking.
    /// The sequence number of the last revocation read (any node's).
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Acquire)
    }

    pub fn refresh(&self, meta: &MetadataStore) -> Result<usize, crate::store::Error> {
        let since = self.seq.load(Ordering::Acquire);
        let rows = meta.read(|r| r.revocations_since(since))?;
        let last = rows.last().map(|(seq, ..)| *seq);
        // Content changes go to the store's read cache, not into the set.
        let rows = meta.log_read(rows);
        let n = rows.len();
        let mut set = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = last {
            self.seq.store(last, Ordering::Release);
        }
        set.extend(rows.into_iter().map(|(_, k, at)| (k, at)));
        // Memory stays bounded: keys older than any token that could name them go.
        let keep = self.retention_secs.load(Ordering::Relaxed);
        if keep > 0 {
            let cutoff = crate::store::now().saturating_sub(keep);
            set.retain(|_, at| *at >= cutoff);
        }
        Ok(n)
    }
}
