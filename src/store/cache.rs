//! The node's read cache of registry content: manifests by repository and reference (tag or
//! digest) and the sizes of blobs linked in a repository, so that manifest GETs and blob HEADs
//! need no database round trip.
//!
//! Invariant (stale by at most a refresh): every write that changes a repository's tags,
//! manifests or blob links names the repository in the revocation log in its own transaction
//! (`content:<repo>`; `content:*` for garbage collection). The node that wrote forgets the
//! repository once the transaction commits; every node forgets it when its once-a-second read of
//! the log sees the key (`auth::revoked`). A node whose last read of the log is older than
//! `FRESH_FOR` (the database unreachable) answers from the database, not from here. A read that
//! raced a change is never kept: it is kept only if no repository was forgotten between the moment
//! before its database read and its insertion (`epoch`). Only what exists is kept: a tag pushed
//! anywhere is visible everywhere at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::model::{BlobLink, ManifestRow};

/// The key prefix of content changes in the revocation log.
pub(super) const CONTENT_KEY: &str = "content:";
/// The repository name that stands for every repository.
pub(super) const ANY_REPO: &str = "*";

/// How long after the last read of the revocation log the cache is trusted.
/// Content keys are pruned from the log after `KEEP_CONTENT_KEYS`, far longer.
const FRESH_FOR: Duration = Duration::from_secs(3);
/// How long content changes stay in the log (a node that missed them forgets everything).
pub(super) const KEEP_CONTENT_KEYS: i64 = 600;
/// Past these, the cache starts again empty (it holds hot content, not all of it).
const MAX_ENTRIES: usize = 20_000;
const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Repo {
    manifests: HashMap<String, ManifestRow>,
    blobs: HashMap<String, BlobLink>,
    bytes: usize,
}

#[derive(Default)]
struct Entries {
    repos: HashMap<String, Repo>,
    count: usize,
    bytes: usize,
}

pub(super) struct ReadCache {
    entries: RwLock<Entries>,
    /// Bumped by every forgetting: a read that began at another epoch is not kept.
    epoch: AtomicU64,
    /// Until when (milliseconds since `start`) the cache may answer; 0: not yet.
    fresh_until: AtomicU64,
    start: Instant,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            entries: RwLock::default(),
            epoch: AtomicU64::new(0),
            fresh_until: AtomicU64::new(0),
            start: Instant::now(),
        }
    }
}

/// What a lookup found, or the epoch a database read of it starts at.
pub(super) enum Lookup<T> {
    Hit(T),
    Miss(u64),
}

impl ReadCache {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fresh(&self) -> bool {
        self.now_ms() < self.fresh_until.load(Ordering::Acquire)
    }

    /// The revocation log was read just now: the cache may answer for `FRESH_FOR`. After a gap
    /// (the first read, or reads that failed), everything is forgotten first: the keys of the
    /// gap may have been pruned from the log.
    pub(super) fn log_read(&self) {
        if !self.fresh() {
            self.forget([ANY_REPO]);
        }
        let until = self.now_ms() + u64::try_from(FRESH_FOR.as_millis()).unwrap_or(0);
        self.fresh_until.store(until, Ordering::Release);
    }

    fn lookup<T: Clone>(&self, repo: &str, get: impl FnOnce(&Repo) -> Option<&T>) -> Lookup<T> {
        // The epoch is read before the entries: a forgetting after it makes the insert a no-op.
        let epoch = self.epoch.load(Ordering::Acquire);
        if !self.fresh() {
            return Lookup::Miss(epoch);
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        match entries.repos.get(repo).and_then(get) {
            Some(v) => Lookup::Hit(v.clone()),
            None => Lookup::Miss(epoch),
        }
    }

    pub(super) fn manifest(&self, repo: &str, reference: &str) -> Lookup<ManifestRow> {
        self.lookup(repo, |r| r.manifests.get(reference))
    }

    pub(super) fn blob(&self, repo: &str, digest: &str) -> Lookup<BlobLink> {
        self.lookup(repo, |r| r.blobs.get(digest))
    }

    /// Keeps what a database read that began at `epoch` found, unless a forgetting came between.
    /// `put` stores it and says how many bytes the entry it replaced counted, if any: a
    /// replaced entry is not counted twice.
    fn keep(
        &self,
        epoch: u64,
        repo: &str,
        bytes: usize,
        put: impl FnOnce(&mut Repo) -> Option<usize>,
    ) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.count >= MAX_ENTRIES || entries.bytes + bytes > MAX_BYTES {
            *entries = Entries::default();
        }
        let r = entries.repos.entry(repo.to_owned()).or_default();
        let replaced = put(r);
        let old = replaced.unwrap_or(0);
        r.bytes = (r.bytes + bytes).saturating_sub(old);
        entries.bytes = (entries.bytes + bytes).saturating_sub(old);
        if replaced.is_none() {
            entries.count += 1;
        }
    }

    pub(super) fn keep_manifest(&self, epoch: u64, repo: &str, reference: &str, m: &ManifestRow) {
        let size =
            |m: &ManifestRow| m.content.len() + m.media_type.len() + reference.len() + repo.len();
        self.keep(epoch, repo, size(m), |r| {
            r.manifests
                .insert(reference.to_owned(), m.clone())
                .map(|old| size(&old))
        });
    }

    pub(super) fn keep_blob(&self, epoch: u64, repo: &str, digest: &str, link: BlobLink) {
        let bytes = digest.len() + repo.len();
        self.keep(epoch, repo, bytes, |r| {
            r.blobs.insert(digest.to_owned(), link).map(|_| bytes)
        });
    }

    /// Forgets what is kept of `repos` (`ANY_REPO`: everything).
    pub(super) fn forget<'a>(&self, repos: impl IntoIterator<Item = &'a str>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for repo in repos {
            if repo == ANY_REPO {
                *entries = Entries::default();
                return;
            }
            if let Some(r) = entries.repos.remove(repo) {
                entries.count = entries
                    .count
                    .saturating_sub(r.manifests.len() + r.blobs.len());
                entries.bytes = entries.bytes.saturating_sub(r.bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(body: &str) -> ManifestRow {
        ManifestRow {
            digest: crate::types::Digest::sha256(body.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: bytes::Bytes::from(body.to_owned()),
        }
    }

    fn link(size: u64) -> BlobLink {
        BlobLink {
            size,
            in_row: false,
        }
    }

    fn hit<T>(l: Lookup<T>) -> Option<T> {
        match l {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss(_) => None,
        }
    }

    fn epoch<T>(l: Lookup<T>) -> u64 {
        match l {
            Lookup::Hit(_) => panic!("a hit"),
            Lookup::Miss(e) => e,
        }
    }

    #[test]
    fn a_read_that_raced_a_forgetting_is_not_kept() {
        let c = ReadCache::default();
        c.log_read();
        let e = epoch(c.manifest("a/b", "v1"));
        c.forget(["a/b"]);
        c.keep_manifest(e, "a/b", "v1", &row("old"));
        assert!(hit(c.manifest("a/b", "v1")).is_none());
        let e = epoch(c.manifest("a/b", "v1"));
        c.keep_manifest(e, "a/b", "v1", &row("new"));
        assert_eq!(hit(c.manifest("a/b", "v1")).unwrap().content, "new");
    }

    #[test]
    fn forgetting_is_per_repository_or_everything() {
        let c = ReadCache::default();
        c.log_read();
        for repo in ["a/b", "a/c"] {
            let e = epoch(c.blob(repo, "sha256:x"));
            c.keep_blob(e, repo, "sha256:x", link(7));
        }
        c.forget(["a/b"]);
        assert!(hit(c.blob("a/b", "sha256:x")).is_none());
        assert_eq!(hit(c.blob("a/c", "sha256:x")), Some(link(7)));
        c.forget([ANY_REPO]);
        assert!(hit(c.blob("a/c", "sha256:x")).is_none());
    }

    #[test]
    fn without_a_recent_read_of_the_log_nothing_is_answered_and_a_gap_forgets_everything() {
        let c = ReadCache::default();
        let e = epoch(c.blob("a/b", "sha256:x"));
        c.keep_blob(e, "a/b", "sha256:x", link(7));
        assert!(hit(c.blob("a/b", "sha256:x")).is_none(), "never read");
        c.log_read();
        assert!(
            hit(c.blob("a/b", "sha256:x")).is_none(),
            "kept before the first read"
        );
        let e = epoch(c.blob("a/b", "sha256:x"));
        c.keep_blob(e, "a/b", "sha256:x", link(7));
        assert_eq!(hit(c.blob("a/b", "sha256:x")), Some(link(7)));
        c.fresh_until.store(0, Ordering::Release);
        assert!(
            hit(c.blob("a/b", "sha256:x")).is_none(),
            "read too long ago"
        );
        c.log_read();
        assert!(
            hit(c.blob("a/b", "sha256:x")).is_none(),
            "the gap forgot it"
        );
    }

    #[test]
    fn an_entry_kept_again_is_counted_once() {
        let c = ReadCache::default();
        c.log_read();
        let e = epoch(c.blob("a/b", "sha256:y"));
        c.keep_blob(e, "a/b", "sha256:y", link(1));
        let big = row(&"x".repeat(MAX_BYTES / 4));
        for _ in 0..MAX_ENTRIES + 10 {
            let e = c.epoch.load(Ordering::Acquire);
            c.keep_manifest(e, "a/b", "v1", &big);
            c.keep_blob(e, "a/b", "sha256:x", link(7));
        }
        let entries = c.entries.read().unwrap();
        assert_eq!(entries.count, 3);
        assert_eq!(entries.repos["a/b"].bytes, entries.bytes);
        drop(entries);
        c.log_read();
        assert_eq!(
            hit(c.blob("a/b", "sha256:y")),
            Some(link(1)),
            "emptied early"
        );
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let c = ReadCache::default();
        c.log_read();
        let big = "x".repeat(MAX_BYTES / 3);
        for i in 0..10 {
            let e = epoch(c.manifest("a/b", &format!("t{i}")));
            c.keep_manifest(e, "a/b", &format!("t{i}"), &row(&big));
            let entries = c.entries.read().unwrap();
            assert!(entries.bytes <= MAX_BYTES && entries.count <= 3);
        }
    }
}
