//! `MetadataStore`, the handle the rest of the program holds: it opens one of the two engines and
//! runs reads and write transactions on it, and hands out digest locks and job leases.

use std::sync::Arc;

use super::cache::{CONTENT_KEY, Lookup, ReadCache};
use super::error::{Error, Result};
use super::model::{BlobLink, ManifestRow};
use super::postgres::{self, PgLock, PgOptions};
use super::sql::{Lane, Reader, Writer};
use super::sqlite;
use crate::types::{Digest, Reference};

/// The handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct MetadataStore {
    engine: Arc<Engine>,
    /// Write transactions this process committed (caches of what writes can change compare it).
    writes: Arc<std::sync::atomic::AtomicU64>,
    /// Manifests and blob links read lately (see `cache`).
    cache: Arc<ReadCache>,
}

enum Engine {
    Sqlite(sqlite::Sqlite),
    Postgres(Arc<postgres::Postgres>),
}

/// Digest locks in the database: 4096 stripes of session advisory locks.
const DIGEST_LOCK_BASE: i64 = 0x6265_7274_6800_0000;
/// Leases of periodic jobs (see `MetadataStore::try_lease`).
const LEASE_BASE: i64 = 0x6265_7274_6c00_0000;

/// A held lease; released on drop.
pub struct Lease(#[allow(dead_code)] Option<PgLock>);

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl MetadataStore {
    /// Opens (creating if needed) the SQLite database at `path` and runs pending migrations.
    pub fn open(path: &std::path::Path) -> Result<MetadataStore> {
        Ok(MetadataStore {
            engine: Arc::new(Engine::Sqlite(sqlite::Sqlite::open(path)?)),
            writes: Arc::default(),
            cache: Arc::default(),
        })
    }

    /// Connects to PostgreSQL and runs pending migrations (under an advisory lock, so that
    /// nodes starting together are safe).
    pub fn open_postgres(options: &PgOptions) -> Result<MetadataStore> {
        Ok(MetadataStore {
            engine: Arc::new(Engine::Postgres(Arc::new(postgres::Postgres::open(
                options,
            )?))),
            writes: Arc::default(),
            cache: Arc::default(),
        })
    }

    /// Which engine and where (never a password).
    pub fn describe(&self) -> String {
        match &*self.engine {
            Engine::Sqlite(s) => s.describe(),
            Engine::Postgres(p) => p.describe(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(&*self.engine, Engine::Postgres(_))
    }

    /// The lease of a periodic job (`"gc"`, `"upload-expiry"`): held by one node at a time while
    /// the job runs; `None` when another node holds it. With SQLite (one node) always granted.
    pub fn try_lease(&self, job: &str) -> Result<Option<Lease>> {
        match &*self.engine {
            Engine::Sqlite(_) => Ok(Some(Lease(None))),
            Engine::Postgres(p) => {
                let h = job
                    .bytes()
                    .fold(0i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
                Ok(p.try_lock(LEASE_BASE ^ (h & 0xffff))?
                    .map(|l| Lease(Some(l))))
            }
        }
    }

    /// With PostgreSQL, takes the lock stripe of `d` across every node (a session advisory
    /// lock, blocking); `None` with SQLite, whose callers lock files instead.
    pub fn lock_digest(&self, d: &Digest) -> Result<Option<PgLock>> {
        match &*self.engine {
            Engine::Sqlite(_) => Ok(None),
            Engine::Postgres(p) => {
                let stripe = i64::from_str_radix(&d.hex()[..3], 16).unwrap_or(0);
                p.lock(DIGEST_LOCK_BASE + stripe).map(Some)
            }
        }
    }

    /// Runs `f` on a read connection. Reads see the last committed state.
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        match &*self.engine {
            Engine::Sqlite(s) => s.read(|conn| f(&Reader { conn })),
            Engine::Postgres(p) => p.read(|conn| f(&Reader { conn })),
        }
    }

    /// Runs `f` in one write transaction, alone among the writes of every node, and commits it
    /// if `f` succeeds.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, false, Lane::Exclusive, f)
    }

    /// Like `write`, but the commit does not wait for the disk: it survives a crash of berth,
    /// not a power loss of the database's machine. For state whose loss costs a client a retry
    /// and nothing more.
    pub fn write_relaxed<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, true, Lane::Exclusive, f)
    }

    /// A write of repository content (uploads, blob links, manifests, tags) that runs beside the
    /// content writes of other nodes (`Lane::Content`): `f` takes the repository's lock
    /// (`Writer::lock_repo`) before it reads what it is about to change of a repository's
    /// manifests, tags or links.
    pub fn write_content<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, false, Lane::Content, f)
    }

    /// `write_content` whose commit does not wait for the disk (upload sessions: losing one costs
    /// the client a retry).
    pub fn write_content_relaxed<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, true, Lane::Content, f)
    }

    /// Like `write`, but always rolls back: for dry runs that must see what a write would do.
    pub fn write_dry_run<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(false, false, Lane::Exclusive, f)
    }

    fn transact<T, E: From<Error>>(
        &self,
        commit: bool,
        relaxed: bool,
        lane: Lane,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let changed = std::cell::RefCell::default();
        let changed_ref = &changed;
        let result = match &*self.engine {
            Engine::Sqlite(s) => s.transact(commit, relaxed, |conn| {
                f(&Writer {
                    conn,
                    lane,
                    changed: changed_ref,
                })
            }),
            Engine::Postgres(p) => p.transact(commit, relaxed, lane, |conn| {
                f(&Writer {
                    conn,
                    lane,
                    changed: changed_ref,
                })
            }),
        };
        if commit && result.is_ok() {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            let changed = changed.into_inner();
            if !changed.is_empty() {
                self.cache.forget(changed.iter().map(String::as_str));
            }
        }
        result
    }

    /// Manifest `reference` of `repo`, from the node's cache when it holds it (see `cache`).
    pub fn manifest(&self, repo: &str, reference: &Reference) -> Result<Option<ManifestRow>> {
        let key = reference.to_string();
        let epoch = match self.cache.manifest(repo, &key) {
            Lookup::Hit(m) => return Ok(Some(m)),
            Lookup::Miss(epoch) => epoch,
        };
        let found = self.read(|r| r.manifest(repo, reference))?;
        if let Some(m) = &found {
            self.cache.keep_manifest(epoch, repo, &key, m);
        }
        Ok(found)
    }

    /// Blob `digest` if `repo` links it, from the node's cache when it holds it.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<BlobLink>> {
        let key = digest.to_string();
        let epoch = match self.cache.blob(repo, &key) {
            Lookup::Hit(link) => return Ok(Some(link)),
            Lookup::Miss(epoch) => epoch,
        };
        let found = self.read(|r| r.blob_in_repo(repo, digest))?;
        if let Some(link) = found {
            self.cache.keep_blob(epoch, repo, &key, link);
        }
        Ok(found)
    }

    /// Forgets what the node's cache holds of `repo`: its content was found changed.
    pub fn forget_cached(&self, repo: &str) {
        self.cache.forget([repo]);
    }

    /// Takes in keys just read from the revocation log: the content changes among them are
    /// forgotten, and the cache may answer for a while (see `cache`). Returns the other keys.
    pub fn log_read(&self, keys: Vec<(i64, String, i64)>) -> Vec<(i64, String, i64)> {
        let (content, other): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .partition(|(_, k, _)| k.starts_with(CONTENT_KEY));
        if !content.is_empty() {
            self.cache
                .forget(content.iter().map(|(_, k, _)| &k[CONTENT_KEY.len()..]));
        }
        self.cache.log_read();
        other
    }

    /// How many write transactions this process has committed.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }
}
