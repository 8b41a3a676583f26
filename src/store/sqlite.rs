//! SQLite implementation of the metadata store (connections, pool, migrations; the queries are
//! shared with PostgreSQL in `registry.rs` and `iam.rs`): WAL mode, one writer connection, a
//! bounded `r2d2` pool of read-only connections (the shape Trow uses). Writes take `BEGIN IMMEDIATE`, so they serialize with other
//! processes on the same file too (`berth gc` beside a running server), and `synchronous=FULL`
//! makes every commit durable before it returns.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::{Error, Result};
use super::sql::Conn;

/// The migrations, in order. `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_identity.sql"),
    include_str!("../../migrations/sqlite/0003_security.sql"),
    include_str!("../../migrations/sqlite/0004_token_keys.sql"),
    include_str!("../../migrations/sqlite/0005_trusts.sql"),
    include_str!("../../migrations/sqlite/0006_upload_parts.sql"),
    include_str!("../../migrations/sqlite/0007_lineage.sql"),
    include_str!("../../migrations/sqlite/0008_audit_org.sql"),
    include_str!("../../migrations/sqlite/0009_tags_by_push.sql"),
    include_str!("../../migrations/sqlite/0010_sso.sql"),
    include_str!("../../migrations/sqlite/0011_public_periods.sql"),
    include_str!("../../migrations/sqlite/0012_inline_blobs.sql"),
];

/// Read-only connections open at most; a reader waits for one beyond that.
const MAX_READERS: u32 = 16;

/// The SQLite engine: one writer connection, a pool of readers.
pub(super) struct Sqlite {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: r2d2::Pool<Readers>,
}

/// Opens read-only connections for `r2d2`.
#[derive(Debug)]
struct Readers(PathBuf);

impl r2d2::ManageConnection for Readers {
    type Connection = Connection;
    type Error = Error;

    fn connect(&self) -> Result<Connection> {
        open_conn(&self.0, true)
    }

    fn is_valid(&self, _: &mut Connection) -> Result<()> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
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
    } else {
        // Each of up to 16 readers keeps a page cache of its own (SQLite's default, 2 MiB, made
        // the pool 32 MiB once the database outgrew it, as the soak showed); the kernel's page
        // cache holds the file already, so 512 KiB per reader bounds them at 8 MiB.
        conn.pragma_update(None, "cache_size", -512)?;
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
        let readers = r2d2::Pool::builder()
            .max_size(MAX_READERS)
            .min_idle(Some(1))
            .idle_timeout(Some(std::time::Duration::from_secs(600)))
            // Nothing to check: a file connection does not break like a socket.
            .test_on_check_out(false)
            // A reader waits for a free connection as long as a writer waits for the lock.
            .connection_timeout(std::time::Duration::from_secs(30))
            .thread_pool(super::sql::pool_threads())
            .build(Readers(path.to_owned()))
            .map_err(|e| Error::Unavailable(format!("cannot open the database: {e}")))?;
        Ok(Sqlite {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    /// Runs `f` on a pooled read connection. Reads see the last committed state.
    pub(super) fn read<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        let conn = self
            .readers
            .get()
            .map_err(|e| Error::Unavailable(format!("no database reader free: {e}")))?;
        f(Conn::Sqlite(&conn))
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
