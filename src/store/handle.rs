//! `MetadataStore`, the handle the rest of the program holds: it opens one of the two engines and
//! runs reads and write transactions on it, and hands out digest locks and job leases.

use std::sync::Arc;

use super::error::{Error, Result};
use super::postgres::{self, PgLock, PgOptions};
use super::sql::{Reader, Writer};
use super::sqlite;
use crate::types::Digest;

/// The handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct MetadataStore {
    engine: Arc<Engine>,
    /// Write transactions this process committed (caches of what writes can change compare it).
    writes: Arc<std::sync::atomic::AtomicU64>,
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

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, false, f)
    }

    /// Like `write`, but the commit does not wait for the disk: it survives a crash of berth,
    /// not a power loss of the database's machine. For state whose loss costs a client a retry
    /// and nothing more (upload sessions).
    pub fn write_relaxed<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, true, f)
    }

    /// Like `write`, but always rolls back: for dry runs that must see what a write would do.
    pub fn write_dry_run<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(false, false, f)
    }

    fn transact<T, E: From<Error>>(
        &self,
        commit: bool,
        relaxed: bool,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let result = match &*self.engine {
            Engine::Sqlite(s) => s.transact(commit, relaxed, |conn| f(&Writer { conn })),
            Engine::Postgres(p) => p.transact(commit, relaxed, |conn| f(&Writer { conn })),
        };
        if commit && result.is_ok() {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        result
    }

    /// How many write transactions this process has committed.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }
}
