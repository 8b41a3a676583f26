//! A cache of verifications that forgets what went stale, so it holds about the entries still
//! alive (the verified-login and verified-token caches).

use std::collections::HashMap;

/// A cache of verifications that drops its stale entries whenever it has doubled since the last
/// sweep (and empties when even the live ones pass a cap), so it holds about the entries still
/// alive, not every one ever seen, and a sweep's cost is spread over as many inserts.
pub(crate) struct Swept<K, V> {
    pub(crate) map: HashMap<K, V>,
    sweep_at: usize,
}

impl<K, V> Default for Swept<K, V> {
    fn default() -> Self {
        Swept {
            map: HashMap::new(),
            sweep_at: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Swept<K, V> {
    /// The smallest size at which stale entries are swept.
    const SWEEP_MIN: usize = 1024;

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// Remembers `v`, first sweeping what `live` says is stale when the map has doubled.
    pub(crate) fn insert(&mut self, k: K, v: V, mut live: impl FnMut(&V) -> bool, cap: usize) {
        if self.map.len() >= self.sweep_at.max(Self::SWEEP_MIN) {
            self.map.retain(|_, v| live(v));
            if self.map.len() >= cap {
                self.map.clear();
            }
            self.sweep_at = self.map.len() * 2;
        }
        self.map.insert(k, v);
    }
}
