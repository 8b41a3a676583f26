//! PostgreSQL implementation of the metadata store: two bounded `r2d2` pools of connections (the
//! `postgres` crate's synchronous client, called from `spawn_blocking` like SQLite), migrations
//! applied at start under an advisory lock, and a statement timeout on every connection.
//!
//! Every write transaction first takes one transaction-scoped advisory lock, `WRITE_LOCK`:
//! exclusively (`Lane::Exclusive`, every write but content's), so that it runs alone among the
//! writes of all nodes and its reads see a stable state, as with SQLite's one writer; or shared
//! (`Lane::Content`: uploads, blob links, manifests and tags), so that content writes of all
//! nodes run side by side, never beside an exclusive one (garbage collection, repository
//! deletion, identity and access). Among content writes, what two of them could both change is
//! locked by key: a repository's manifests, tags and links by the repository's lock
//! (`REPO_LOCKS`, taken by `Writer::lock_repo`), the revocation log by `LOG_LOCK`, taken before a
//! content write adds to it and held until it commits, so that revocation sequence numbers are
//! committed in order (a node that has read up to `seq` never misses a smaller one committed
//! later) — exclusive writes add to the log with no content write beside them.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::error::{Error, Result};
use super::sql::{Conn, Lane, PgConn, PgHandle};

/// The migrations, in order; `berth_schema.version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_trusts.sql"),
    include_str!("../../migrations/postgres/0003_upload_parts.sql"),
    include_str!("../../migrations/postgres/0004_lineage.sql"),
    include_str!("../../migrations/postgres/0005_audit_org.sql"),
    include_str!("../../migrations/postgres/0006_tags_by_push.sql"),
    include_str!("../../migrations/postgres/0007_sso.sql"),
    include_str!("../../migrations/postgres/0008_public_periods.sql"),
    include_str!("../../migrations/postgres/0009_inline_blobs.sql"),
];

/// Advisory lock keys (arbitrary constants, ASCII "berthmig" and "berthwrt").
const MIGRATION_LOCK: i64 = 0x6265_7274_686d_6967;
const WRITE_LOCK: i64 = 0x6265_7274_6877_7274;
/// Classes of the two-key advisory locks (`Conn::lock_key`; PostgreSQL keeps them apart from the
/// one-key locks above): a repository's content, keyed by its name; the revocation log.
pub(super) const REPO_LOCKS: i32 = 0x6272_6570; // "brep"
pub(super) const LOG_LOCK: i32 = 0x626c_6f67; // "blog"

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://USER:PASS@HOST:PORT/DB[?sslmode=…]`.
    pub url: String,
    /// Connections kept at most (per node).
    pub pool_size: usize,
    /// Longest a statement may run; also how long a caller waits for a free connection.
    pub statement_timeout: Duration,
}

pub(super) struct Postgres {
    describe: String,
    /// Both pools; `None` only inside `drop`.
    pools: Option<Pools>,
    /// Bumped when a connection breaks (see `Manager::epoch`).
    epoch: Arc<AtomicU64>,
}

struct Pools {
    /// Connections for queries and transactions.
    queries: Pool,
    /// Connections that hold digest locks (session advisory locks) while a blob is placed; apart
    /// from `queries`, so that holders of locks never wait for a connection to finish.
    locks: Pool,
}

type Pool = r2d2::Pool<Manager>;
pub(super) type Pooled = r2d2::PooledConnection<Manager>;

/// Opens connections for `r2d2` and tells it which ones to throw away.
#[derive(Debug)]
pub(super) struct Manager {
    config: postgres::Config,
    statement_timeout: Duration,
    /// A broken connection usually means the server restarted or went away, so every
    /// connection opened before it is as dead: a connection is kept only while the epoch it was
    /// opened in is current, and the next caller connects afresh (no round trip per checkout).
    epoch: Arc<AtomicU64>,
}

/// A connection and the epoch it was opened in.
pub(super) struct Opened {
    conn: PgConn,
    epoch: u64,
}

impl std::ops::Deref for Opened {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        &self.conn
    }
}

impl std::ops::DerefMut for Opened {
    fn deref_mut(&mut self) -> &mut PgConn {
        &mut self.conn
    }
}

impl PgHandle for Pooled {
    fn pg(&mut self) -> &mut PgConn {
        &mut self.conn
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Opened;
    type Error = Error;

    fn connect(&self) -> Result<Opened> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut client = connect_with_tls(&self.config)?;
        let ms = self.statement_timeout.as_millis();
        client.batch_execute(&format!(
            "SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}"
        ))?;
        Ok(Opened {
            conn: PgConn::new(client),
            epoch,
        })
    }

    fn is_valid(&self, c: &mut Opened) -> Result<()> {
        if self.has_broken(c) {
            return Err(Error::Unavailable("connection closed".into()));
        }
        Ok(())
    }

    fn has_broken(&self, c: &mut Opened) -> bool {
        c.conn.client.is_closed() || c.epoch != self.epoch.load(Ordering::Acquire)
    }
}

impl Postgres {
    pub(super) fn open(options: &PgOptions) -> Result<Postgres> {
        let mut config: postgres::Config = options
            .url
            .parse()
            .map_err(|e| Error::Config(format!("database URL: {e}")))?;
        let describe = describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives(true);
        let epoch = Arc::new(AtomicU64::new(0));
        let pool = || {
            r2d2::Pool::builder()
                .max_size(u32::try_from(options.pool_size.max(1)).unwrap_or(u32::MAX))
                .min_idle(Some(0))
                // How long a caller waits for a free connection: the statement timeout.
                .connection_timeout(options.statement_timeout)
                // Checked without a round trip (`Manager::is_valid`).
                .test_on_check_out(true)
                .idle_timeout(Some(Duration::from_secs(600)))
                .error_handler(Box::new(r2d2::NopErrorHandler))
                .thread_pool(super::sql::pool_threads())
                .build_unchecked(Manager {
                    config: config.clone(),
                    statement_timeout: options.statement_timeout,
                    epoch: epoch.clone(),
                })
        };
        let pg = Postgres {
            describe,
            pools: Some(Pools {
                queries: pool(),
                locks: pool(),
            }),
            epoch,
        };
        let mut conn = pg.take(Which::Queries)?;
        migrate(&mut conn.conn)?;
        Ok(pg)
    }

    pub(super) fn describe(&self) -> String {
        self.describe.clone()
    }

    fn pool(&self, which: Which) -> Result<&Pool> {
        let pools = self
            .pools
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is closing".into()))?;
        Ok(match which {
            Which::Queries => &pools.queries,
            Which::Locks => &pools.locks,
        })
    }

    /// A connection from the pool, a new one, or an error once the statement timeout has passed
    /// with every connection lent out (or the database unreachable).
    fn take(&self, which: Which) -> Result<Pooled> {
        let pool = self.pool(which)?;
        pool.get().map_err(|e| {
            let state = pool.state();
            if state.connections >= pool.max_size() && state.idle_connections == 0 {
                Error::Unavailable("every database connection is busy".into())
            } else {
                Error::Unavailable(format!("cannot connect to PostgreSQL: {e}"))
            }
        })
    }

    /// Ends a connection's use: a broken one (or one whose transaction failed) is closed, and
    /// with it every connection opened before (`Manager::epoch`).
    fn give_back(&self, conn: Pooled, healthy: bool) {
        if !healthy || conn.conn.client.is_closed() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        drop(conn);
    }

    /// Takes the session advisory lock `key` if no session holds it; `None` if one does.
    pub(super) fn try_lock(self: &Arc<Self>, key: i64) -> Result<Option<PgLock>> {
        off_the_runtime(|| {
            let mut conn = self.take(Which::Locks)?;
            match conn
                .conn
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .and_then(|row| row.try_get::<_, bool>(0))
            {
                Ok(true) => Ok(Some(PgLock {
                    pg: self.clone(),
                    conn: Some(conn),
                    key,
                })),
                Ok(false) => {
                    self.give_back(conn, true);
                    Ok(None)
                }
                Err(e) => {
                    self.give_back(conn, false);
                    Err(e.into())
                }
            }
        })
    }

    /// Takes the session advisory lock `key` on a connection of the lock pool; released (and
    /// the connection returned) when the guard drops. A connection that breaks releases its
    /// locks with it.
    pub(super) fn lock(self: &Arc<Self>, key: i64) -> Result<PgLock> {
        off_the_runtime(|| {
            // A second try on a fresh connection when the first one was dead (a restart).
            let mut last = None;
            for _ in 0..2 {
                let mut conn = self.take(Which::Locks)?;
                match conn
                    .conn
                    .client
                    .execute("SELECT pg_advisory_lock($1)", &[&key])
                {
                    Ok(_) => {
                        return Ok(PgLock {
                            pg: self.clone(),
                            conn: Some(conn),
                            key,
                        });
                    }
                    Err(e) => {
                        self.give_back(conn, false);
                        let e = Error::from(e);
                        if !e.is_unavailable() {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                }
            }
            Err(last.unwrap_or_else(|| Error::Unavailable("digest lock".into())))
        })
    }

    pub(super) fn read<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        off_the_runtime(|| self.read_blocking(f))
    }

    fn read_blocking<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        let cell = RefCell::new(self.take(Which::Queries)?);
        let out = f(Conn::Pg(&cell));
        let healthy = !matches!(&out, Err(Error::Unavailable(_) | Error::Postgres(_)));
        self.give_back(cell.into_inner(), healthy);
        out
    }

    /// Runs `f` in one transaction holding the write lock of `lane` (exclusive, or shared by
    /// content writes); commits if `commit` and `f` succeeds. `relaxed`: the commit does not wait
    /// for the WAL flush (`synchronous_commit = off` for this transaction): for state whose loss
    /// costs a client a retry.
    pub(super) fn transact<T, E: From<Error>>(
        &self,
        commit: bool,
        relaxed: bool,
        lane: Lane,
        f: impl FnOnce(Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        off_the_runtime(|| self.transact_blocking(commit, relaxed, lane, f))
    }

    fn transact_blocking<T, E: From<Error>>(
        &self,
        commit: bool,
        relaxed: bool,
        lane: Lane,
        f: impl FnOnce(Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut pooled = self.take(Which::Queries)?;
        let sync = if relaxed {
            "SET LOCAL synchronous_commit = off; "
        } else {
            ""
        };
        let lock = match lane {
            Lane::Exclusive => "pg_advisory_xact_lock",
            Lane::Content => "pg_advisory_xact_lock_shared",
        };
        // One round trip: the simple protocol runs the three in order.
        let begin = format!("BEGIN; {sync}SELECT {lock}({WRITE_LOCK})");
        let started = pooled
            .conn
            .client
            .batch_execute(&begin)
            .map_err(Error::from);
        if let Err(e) = started {
            self.give_back(pooled, false);
            return Err(e.into());
        }
        let cell = RefCell::new(pooled);
        let out = f(Conn::Pg(&cell));
        let mut pooled = cell.into_inner();
        let end = match (&out, commit) {
            (Ok(_), true) => "COMMIT",
            _ => "ROLLBACK",
        };
        match pooled.conn.client.batch_execute(end) {
            Ok(()) => {
                // A failed statement leaves PostgreSQL's transaction aborted; ROLLBACK ended it,
                // so the connection is fine unless it broke.
                self.give_back(pooled, true);
                out
            }
            Err(e) => {
                self.give_back(pooled, false);
                match out {
                    // The commit itself failed: nothing was written.
                    Ok(_) => Err(Error::from(e).into()),
                    Err(original) => Err(original),
                }
            }
        }
    }
}

/// Which of the two pools.
#[derive(Clone, Copy)]
enum Which {
    Queries,
    Locks,
}

impl Drop for Postgres {
    /// Each client owns a small runtime, which must not be dropped on a thread that drives
    /// tokio tasks (the last handle may go at the end of `serve`): they are closed on a thread
    /// of their own.
    fn drop(&mut self) {
        let pools = self.pools.take();
        let _ = std::thread::spawn(move || drop(pools)).join();
    }
}

/// A held digest lock (see `Postgres::lock`).
pub struct PgLock {
    pg: Arc<Postgres>,
    conn: Option<Pooled>,
    key: i64,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let key = self.key;
            off_the_runtime(|| {
                let ok = conn
                    .conn
                    .client
                    .execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .is_ok();
                self.pg.give_back(conn, ok);
            });
        }
    }
}
/// Runs `f`, which blocks on the PostgreSQL client, where blocking is allowed. The synchronous
/// client drives its own small runtime and cannot run on a thread that is driving tokio tasks;
/// most callers are already on the blocking pool (`spawn_blocking`), but a handler that does a
/// quick point read inline is on a worker: there `block_in_place` hands the worker's tasks to
/// another thread first. (SQLite calls need none of this; they only block.)
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Host, port and database, never the password.
fn describe(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{host}:{port}/{}",
        config.get_dbname().unwrap_or("")
    )
}

fn connect_with_tls(config: &postgres::Config) -> Result<postgres::Client> {
    match config.get_ssl_mode() {
        postgres::config::SslMode::Disable => Ok(config.connect(postgres::NoTls)?),
        _ => Ok(config.connect(tls_connector()?)?),
    }
}

/// TLS to PostgreSQL with the platform's trusted roots (`sslmode=require` in the URL).
fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn migrate(conn: &mut PgConn) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let mut tx = conn.client.transaction()?;
    // N nodes starting together: one migrates, the others wait here and then find it done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS berth_schema (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM berth_schema", &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO berth_schema (version) VALUES (0)", &[])?;
            0
        }
    };
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
        tx.batch_execute(sql)?;
    }
    tx.execute("UPDATE berth_schema SET version = $1", &[&known])?;
    tx.commit()?;
    Ok(())
}
