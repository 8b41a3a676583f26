//! SQLite implementation of the metadata store (connections, pool, migrations; the queries are
//! shared with PostgreSQL in `registry.rs` and `iam.rs`): WAL mode, one writer connection, a pool
//! of readers (the shape Trow uses). Writes take `BEGIN IMMEDIATE`, so they serialize with other
//! processes on the same file too (`berth gc` beside a running server), and `synchronous=FULL`
//! makes every commit durable before it returns.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::sql::Conn;
use super::{Error, Result};

/// The migrations, in order. `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_identity.sql"),
    include_str!("../../migrations/sqlite/0003_security.sql"),
    include_str!("../../migrations/sqlite/0004_token_keys.sql"),
    include_str!("../../migrations/sqlite/0005_trusts.sql"),
    include_str!("../../migrations/sqlite/0006_upload_parts.sql"),
    include_str!("../../migrations/sqlite/0007_lineage.sql"),
];

/// Readers kept open for reuse; more are opened on demand under load.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite engine: one writer connection, a pool of readers.
pub(super) struct Sqlite {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
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

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and runs pending migrations.
    pub(super) fn open(path: &Path) -> Result<Sqlite> {
        let mut writer = open_conn(path, false)?;
        migrate(&mut writer)?;
        let reader = open_conn(path, true)?;
        Ok(Sqlite {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(vec![reader]),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    /// Runs `f` on a pooled read connection. Reads see the last committed state.
    pub(super) fn read<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path, true)?,
        };
        let out = f(Conn::Sqlite(&conn));
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction; commits if `commit` and `f` succeeds.
    /// `relaxed`: the commit does not wait for fsync (`synchronous=NORMAL` for this one
    /// transaction; in WAL mode it still survives a process crash, only not a power loss).
    pub(super) fn transact<T, E: From<Error>>(
        &self,
        commit: bool,
        relaxed: bool,
        f: impl FnOnce(Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if relaxed {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(Error::from)?;
        }
        let out = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(Error::from)?;
            let out = f(Conn::Sqlite(&tx))?;
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
