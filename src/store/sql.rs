//! One way to run a query on either engine. The queries (`registry.rs`, `iam.rs`) are written once
//! in the SQL both engines accept, with `?N` placeholders; for PostgreSQL they become `$N` when a
//! statement is first prepared on a connection. Values cross as types both drivers convert
//! (`i64`, `bool`, text, bytes and their `Option`s): integers are `BIGINT` in the PostgreSQL
//! schema, flags `BOOLEAN`.

use std::cell::RefCell;
use std::collections::HashMap;

use super::error::{Error, Result};
use crate::types::Digest;

/// A parameter either driver can bind.
pub(super) trait Param {
    fn sqlite(&self) -> &dyn rusqlite::ToSql;
    fn pg(&self) -> &(dyn postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + postgres::types::ToSql + Sync> Param for T {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        self
    }
    fn pg(&self) -> &(dyn postgres::types::ToSql + Sync) {
        self
    }
}

/// A column type either driver can read.
pub(super) trait Col:
    rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>
{
}
impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a>> Col for T {}

/// `p![a, b]`: a parameter list for `Conn` queries.
macro_rules! p {
    ($($x:expr),* $(,)?) => { &[$(&$x as &dyn $crate::store::sql::Param),*] };
}
pub(super) use p;

/// A PostgreSQL connection with its prepared statements (prepared once per connection).
/// A PostgreSQL connection as the queries borrow it (a pooled one, in `postgres.rs`).
pub(super) trait PgHandle {
    fn pg(&mut self) -> &mut PgConn;
}

pub(super) struct PgConn {
    pub(super) client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    pub(super) fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client,
            statements: HashMap::new(),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&dollar_placeholders(sql))?;
        if self.statements.len() >= 256 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

/// `?12` → `$12`, outside string literals.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// A connection (or the transaction open on it) of either engine.
#[derive(Clone, Copy)]
pub(super) enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(&'a RefCell<dyn PgHandle>),
}

/// One result row.
pub(super) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    pub(super) fn get<T: Col>(&self, i: usize) -> Result<T> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Pg(r) => Ok(r.try_get(i)?),
        }
    }
}

impl Conn<'_> {
    /// Calls `f` on the rows of `sql` in order until it returns `false`.
    fn each_row(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query(rusqlite::params_from_iter(
                    params.iter().map(|p| p.sqlite()),
                ))?;
                while let Some(r) = rows.next()? {
                    if !f(&Row::Sqlite(r))? {
                        break;
                    }
                }
            }
            Conn::Pg(c) => {
                let mut held = c.borrow_mut();
                let c = held.pg();
                let st = c.statement(sql)?;
                let args: Vec<_> = params.iter().map(|p| p.pg()).collect();
                for r in &c.client.query(&st, &args)? {
                    if !f(&Row::Pg(r))? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every row of `sql`, mapped by `f`.
    pub(super) fn query<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each_row(sql, params, |r| {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row of `sql`, if any, mapped by `f` (on both engines: PostgreSQL's own
    /// `query_opt` would refuse a second row).
    pub(super) fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut out = None;
        self.each_row(sql, params, |r| {
            out = Some(f(r)?);
            Ok(false)
        })?;
        Ok(out)
    }

    /// The one value of a query that returns one row (`COUNT(*)`, `RETURNING id`).
    pub(super) fn value<T: Col>(&self, sql: &str, params: &[&dyn Param]) -> Result<T> {
        self.query_opt(sql, params, |r| r.get(0))?
            .ok_or_else(|| Error::Corrupt(format!("no row from {sql:?}")))
    }

    /// Runs a statement; the number of rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64> {
        match self {
            Conn::Sqlite(c) => {
                let n = c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(
                    params.iter().map(|p| p.sqlite()),
                ))?;
                Ok(n as u64)
            }
            Conn::Pg(c) => {
                let mut held = c.borrow_mut();
                let c = held.pg();
                let st = c.statement(sql)?;
                let args: Vec<_> = params.iter().map(|p| p.pg()).collect();
                Ok(c.client.execute(&st, &args)?)
            }
        }
    }

    /// Whether `sql` returns a row.
    pub(super) fn exists(&self, sql: &str, params: &[&dyn Param]) -> Result<bool> {
        Ok(self.query_opt(sql, params, |_| Ok(()))?.is_some())
    }

    /// Takes the transaction-scoped lock on `key` of lock class `class` across every node,
    /// waiting for it (PostgreSQL's two-key advisory locks, apart from the one-key ones); on
    /// SQLite, which has one writer, there is nothing to take.
    pub(super) fn lock_key(&self, class: i32, key: &str) -> Result<()> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Pg(_) => self
                .execute(
                    "SELECT pg_advisory_xact_lock(?1, hashtext(?2))",
                    p![class, key],
                )
                .map(drop),
        }
    }
}

/// Read queries; also available inside a write transaction through `Writer::reader`.
/// The queries live beside their tables: `registry.rs` and `iam.rs`.
pub struct Reader<'a> {
    pub(super) conn: Conn<'a>,
}

/// How a write transaction shares the database with the writes of other nodes (PostgreSQL; on
/// SQLite every transaction is the one writer's). See `postgres` for the locks of each lane.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Lane {
    /// Alone: no other write transaction of any node runs meanwhile. Every write but content's.
    Exclusive,
    /// Beside other content writes (uploads, blob links, manifests, tags), never beside an
    /// exclusive one; what two content writes could both change is locked by key (the
    /// repository's lock, the revocation log's lock).
    Content,
}

/// Writes inside one transaction.
pub struct Writer<'a> {
    pub(super) conn: Conn<'a>,
    pub(super) lane: Lane,
    /// Repositories whose tags, manifests or blob links this transaction changed (see `cache`).
    pub(super) changed: &'a std::cell::RefCell<Vec<String>>,
}

impl Writer<'_> {
    pub fn reader(&self) -> Reader<'_> {
        Reader { conn: self.conn }
    }
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

/// The threads that open and retire pooled connections (`r2d2`'s helpers), shared by every pool
/// of the process.
pub(super) fn pool_threads() -> std::sync::Arc<scheduled_thread_pool::ScheduledThreadPool> {
    static THREADS: std::sync::OnceLock<
        std::sync::Arc<scheduled_thread_pool::ScheduledThreadPool>,
    > = std::sync::OnceLock::new();
    THREADS
        .get_or_init(|| {
            std::sync::Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(2)
                    .thread_name_pattern("berth-db-pool-{}")
                    .build(),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_become_dollars_outside_literals() {
        assert_eq!(
            dollar_placeholders("SELECT ?1, '?x' || ?12 WHERE a = ?2"),
            "SELECT $1, '?x' || $12 WHERE a = $2"
        );
    }
}
