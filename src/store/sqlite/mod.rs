//! SQLite implementation of the metadata store (connections, pool, migrations; the queries are in
//! `registry.rs` and `iam.rs`): WAL mode, one writer connection, a pool of
//! readers (the shape Trow uses). Writes take `BEGIN IMMEDIATE`, so they serialize with other
//! processes on the same file too (`berth gc` beside a running server), and `synchronous=FULL`
//! makes every commit durable before it returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use super::{Error, Result};
use crate::content::Digest;

mod iam;
mod registry;

/// The migrations, in order. `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_identity.sql"),
    include_str!("../../../migrations/sqlite/0003_security.sql"),
];

/// Readers kept open for reuse; more are opened on demand under load.
const MAX_IDLE_READERS: usize = 8;

#[derive(Clone)]
pub struct MetadataStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for MetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.set_prepared_statement_cache_capacity(64);
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    // FULL: a commit is on disk when it returns, so an acknowledged write survives power loss too.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl MetadataStore {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<MetadataStore> {
        let mut writer = open_conn(path, false)?;
        migrate(&mut writer)?;
        let reader = open_conn(path, true)?;
        Ok(MetadataStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(vec![reader]),
            }),
        })
    }

    /// Runs `f` on a pooled read connection. Reads see the last committed state.
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.inner.path, true)?,
        };
        let out = f(&Reader { conn: &conn });
        let mut idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(true, false, f)
    }

    /// Like `write`, but the commit does not wait for fsync (`synchronous=NORMAL` for this one
    /// transaction, under the same lock). In WAL mode it still survives a process crash, only not
    /// a power loss: for state whose loss costs a client a retry and nothing more (upload sessions).
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
        let mut conn = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if relaxed {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(Error::from)?;
        }
        let out = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(Error::from)?;
            let out = f(&Writer { tx: &tx })?;
            if commit {
                tx.commit().map_err(Error::from)?;
            }
            Ok(out)
        })();
        if relaxed {
            // Every other write must stay fully durable, whatever happened above.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(Error::from)?;
        }
        out
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > known {
        return Err(Error::SchemaTooNew {
            found: version,
            known,
        });
    }
    for sql in MIGRATIONS
        .iter()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn digest_col(s: String) -> Result<Digest> {
    s.parse()
        .map_err(|_| Error::Corrupt(format!("bad digest {s:?}")))
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Read queries; also available inside a write transaction through `Writer::reader`.
/// The queries live beside their tables: `registry.rs` and `iam.rs`.
pub struct Reader<'a> {
    conn: &'a Connection,
}

/// Writes inside one `BEGIN IMMEDIATE` transaction.
pub struct Writer<'a> {
    tx: &'a Transaction<'a>,
}

impl Writer<'_> {
    pub fn reader(&self) -> Reader<'_> {
        Reader { conn: self.tx }
    }
}
