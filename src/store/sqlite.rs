//! SQLite implementation of the metadata store: WAL mode, one writer connection, a pool of
//! readers (the shape Trow uses). Writes take `BEGIN IMMEDIATE`, so they serialize with other
//! processes on the same file too (`berth gc` beside a running server), and `synchronous=FULL`
//! makes every commit durable before it returns.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use super::{Error, GcPlan, ManifestRow, NewManifest, ReferrerRow, Result, UploadRow, now};
use crate::content::{Digest, Reference};

/// The migrations, in order. `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/sqlite/0001_init.sql")];

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
        self.transact(true, f)
    }

    /// Like `write`, but always rolls back: for dry runs that must see what a write would do.
    pub fn write_dry_run<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(false, f)
    }

    fn transact<T, E: From<Error>>(
        &self,
        commit: bool,
        f: impl FnOnce(&Writer<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)?;
        let out = f(&Writer { tx: &tx })?;
        if commit {
            tx.commit().map_err(Error::from)?;
        }
        Ok(out)
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

fn digest_col(s: String) -> Result<Digest> {
    s.parse()
        .map_err(|_| Error::Corrupt(format!("bad digest {s:?}")))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Read queries; also available inside a write transaction through `Writer::reader`.
pub struct Reader<'a> {
    conn: &'a Connection,
}

impl Reader<'_> {
    pub fn repo_id(&self, name: &str) -> Result<Option<i64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?;
        Ok(st.query_row([name], |r| r.get(0)).optional()?)
    }

    /// The size of `digest` if the repository holds it.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT b.size FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ?1 AND rb.digest = ?2",
        )?;
        Ok(st
            .query_row(params![repo, digest.to_string()], |r| r.get::<_, i64>(0))
            .optional()?
            .map(to_u64))
    }

    /// The size of `digest` if it is stored at all.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?;
        Ok(st
            .query_row([digest.to_string()], |r| r.get::<_, i64>(0))
            .optional()?
            .map(to_u64))
    }

    pub fn manifest(&self, repo: &str, reference: &Reference) -> Result<Option<ManifestRow>> {
        let row = match reference {
            Reference::Digest(d) => {
                let mut st = self.conn.prepare_cached(
                    "SELECT m.digest, m.media_type, m.content FROM repositories r
                     JOIN manifests m ON m.repo_id = r.id
                     WHERE r.name = ?1 AND m.digest = ?2",
                )?;
                st.query_row(params![repo, d.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?
            }
            Reference::Tag(t) => {
                let mut st = self.conn.prepare_cached(
                    "SELECT m.digest, m.media_type, m.content FROM repositories r
                     JOIN tags t ON t.repo_id = r.id
                     JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
                     WHERE r.name = ?1 AND t.name = ?2",
                )?;
                st.query_row(params![repo, t.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?
            }
        };
        row.map(|(digest, media_type, content): (String, String, Vec<u8>)| {
            Ok(ManifestRow {
                digest: digest_col(digest)?,
                media_type,
                content: content.into(),
            })
        })
        .transpose()
    }

    /// Tags of `repo` after `last`, sorted, at most `limit`; `None` if the repository is unknown.
    pub fn tags(&self, repo: &str, last: Option<&str>, limit: u64) -> Result<Option<Vec<String>>> {
        let Some(repo_id) = self.repo_id(repo)? else {
            return Ok(None);
        };
        let mut st = self.conn.prepare_cached(
            "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
        )?;
        let rows = st.query_map(params![repo_id, last.unwrap_or(""), to_i64(limit)], |r| {
            r.get(0)
        })?;
        Ok(Some(rows.collect::<Result<_, _>>()?))
    }

    /// Repositories that hold at least one manifest, sorted, after `last`, at most `limit`.
    pub fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Vec<String>> {
        let mut st = self.conn.prepare_cached(
            "SELECT name FROM repositories r WHERE name > ?1
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
             ORDER BY name LIMIT ?2",
        )?;
        let rows = st.query_map(params![last.unwrap_or(""), to_i64(limit)], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
             FROM repositories r JOIN manifests m ON m.repo_id = r.id
             WHERE r.name = ?1 AND m.subject = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
             ORDER BY m.digest",
        )?;
        let rows = st.query_map(params![repo, subject.to_string(), artifact_type], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (digest, media_type, size, artifact_type, annotations) = row?;
            Ok(ReferrerRow {
                digest: digest_col(digest)?,
                media_type,
                size: to_u64(size),
                artifact_type,
                annotations,
            })
        })
        .collect()
    }

    pub fn upload(&self, id: &uuid::Uuid) -> Result<Option<UploadRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT r.name, u.created_at FROM uploads u JOIN repositories r ON r.id = u.repo_id WHERE u.id = ?1",
        )?;
        Ok(st
            .query_row([id.to_string()], |r| {
                Ok(UploadRow {
                    repository: r.get(0)?,
                    created_at: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Number of stored blobs and their total size.
    pub fn blob_stats(&self) -> Result<(u64, u64)> {
        let mut st = self
            .conn
            .prepare_cached("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs")?;
        Ok(st.query_row([], |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?))))?)
    }

    /// A constant-time round trip, for readiness probes.
    pub fn ping(&self) -> Result<()> {
        self.conn
            .prepare_cached("SELECT 1")?
            .query_row([], |_| Ok(()))?;
        Ok(())
    }
}

/// Writes inside one `BEGIN IMMEDIATE` transaction.
pub struct Writer<'a> {
    tx: &'a Transaction<'a>,
}

impl Writer<'_> {
    pub fn reader(&self) -> Reader<'_> {
        Reader { conn: self.tx }
    }

    pub fn ensure_repo(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.reader().repo_id(name)? {
            return Ok(id);
        }
        let mut st = self
            .tx
            .prepare_cached("INSERT INTO repositories (name, created_at) VALUES (?1, ?2)")?;
        st.execute(params![name, now()])?;
        Ok(self.tx.last_insert_rowid())
    }

    pub fn insert_blob(&self, digest: &Digest, size: u64) -> Result<()> {
        let mut st = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)",
        )?;
        st.execute(params![digest.to_string(), to_i64(size), now()])?;
        Ok(())
    }

    /// Links a stored blob into a repository, refreshing the link time if it is already there.
    pub fn link_blob(&self, repo_id: i64, digest: &Digest) -> Result<()> {
        let mut st = self.tx.prepare_cached(
            "INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )?;
        st.execute(params![repo_id, digest.to_string(), now()])?;
        Ok(())
    }

    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let mut st = self.tx.prepare_cached(
            "DELETE FROM repo_blobs WHERE digest = ?2 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
        )?;
        Ok(st.execute(params![repo, digest.to_string()])? > 0)
    }

    /// The first reference of `m` that the repository does not hold, if any.
    pub fn missing_ref(&self, repo_id: i64, m: &NewManifest<'_>) -> Result<Option<Digest>> {
        let mut blob = self
            .tx
            .prepare_cached("SELECT 1 FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2")?;
        for d in m.blob_refs {
            if !blob.exists(params![repo_id, d.to_string()])? {
                return Ok(Some(d.clone()));
            }
        }
        let mut man = self
            .tx
            .prepare_cached("SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2")?;
        for d in m.manifest_refs {
            if !man.exists(params![repo_id, d.to_string()])? {
                return Ok(Some(d.clone()));
            }
        }
        Ok(None)
    }

    pub fn put_manifest(&self, repo_id: i64, m: &NewManifest<'_>, tag: Option<&str>) -> Result<()> {
        let now = now();
        let digest = m.digest.to_string();
        self.tx
            .prepare_cached(
                "INSERT INTO manifests
                 (repo_id, digest, media_type, artifact_type, subject, annotations, size, content, pushed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (repo_id, digest) DO UPDATE SET pushed_at = excluded.pushed_at",
            )?
            .execute(params![
                repo_id,
                digest,
                m.media_type,
                m.artifact_type,
                m.subject.map(ToString::to_string),
                m.annotations,
                to_i64(m.content.len() as u64),
                m.content,
                now
            ])?;
        let mut refs = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for d in m.blob_refs {
            refs.execute(params![repo_id, digest, d.to_string(), 0])?;
        }
        for d in m.manifest_refs {
            refs.execute(params![repo_id, digest, d.to_string(), 1])?;
        }
        if let Some(tag) = tag {
            self.tx
                .prepare_cached(
                    "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                )?
                .execute(params![repo_id, tag, digest, now])?;
        }
        Ok(())
    }

    /// Deletes a manifest, its references and every tag that points at it.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let Some(repo_id) = self.reader().repo_id(repo)? else {
            return Ok(false);
        };
        self.delete_manifest_in(repo_id, &digest.to_string())
    }

    fn delete_manifest_in(&self, repo_id: i64, digest: &str) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
            .execute(params![repo_id, digest])?;
        self.tx
            .prepare_cached(
                "DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2",
            )?
            .execute(params![repo_id, digest])?;
        self.tx
            .prepare_cached("DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2")?
            .execute(params![repo_id, digest])?;
        Ok(n > 0)
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        let mut st = self.tx.prepare_cached(
            "DELETE FROM tags WHERE name = ?2 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
        )?;
        Ok(st.execute(params![repo, tag])? > 0)
    }

    pub fn create_upload(&self, id: &uuid::Uuid, repo_id: i64) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO uploads (id, repo_id, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![id.to_string(), repo_id, now()])?;
        Ok(())
    }

    pub fn delete_upload(&self, id: &uuid::Uuid) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("DELETE FROM uploads WHERE id = ?1")?
            .execute([id.to_string()])?
            > 0)
    }

    /// Deletes the upload sessions created before `cutoff` and returns their ids.
    pub fn expire_uploads(&self, cutoff: i64) -> Result<Vec<uuid::Uuid>> {
        let mut ids = Vec::new();
        let mut st = self
            .tx
            .prepare_cached("SELECT id FROM uploads WHERE created_at < ?1")?;
        for id in st.query_map([cutoff], |r| r.get::<_, String>(0))? {
            let id = id?;
            ids.push(
                uuid::Uuid::parse_str(&id)
                    .map_err(|_| Error::Corrupt(format!("upload id {id:?}")))?,
            );
        }
        self.tx
            .prepare_cached("DELETE FROM uploads WHERE created_at < ?1")?
            .execute([cutoff])?;
        Ok(ids)
    }

    /// Removes from the metadata everything garbage collection may remove, and says what it was.
    ///
    /// * upload sessions created before `upload_cutoff`;
    /// * with `untagged`, manifests pushed before `cutoff` that no tag, no index in the same
    ///   repository and no present subject keeps (repeated until nothing more goes, so an index's
    ///   children go after the index);
    /// * blob links made before `cutoff` that no manifest of that repository references;
    /// * blobs that no repository links and no manifest references.
    ///
    /// The caller deletes the files, each under that blob's lock (see `content::gc`).
    pub fn collect_garbage(
        &self,
        cutoff: i64,
        upload_cutoff: i64,
        untagged: bool,
    ) -> Result<GcPlan> {
        let mut plan = GcPlan {
            uploads: self.expire_uploads(upload_cutoff)?,
            ..GcPlan::default()
        };
        if untagged {
            loop {
                let victims: Vec<(i64, String, String)> = {
                    let mut st = self.tx.prepare(
                        "SELECT m.repo_id, m.digest, r.name FROM manifests m JOIN repositories r ON r.id = m.repo_id
                         WHERE m.pushed_at < ?1
                         AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
                         AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                         WHERE mr.repo_id = m.repo_id AND mr.ref_digest = m.digest AND mr.kind = 1)
                         AND NOT (m.subject IS NOT NULL AND EXISTS
                                  (SELECT 1 FROM manifests s WHERE s.repo_id = m.repo_id AND s.digest = m.subject))",
                    )?;
                    st.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?
                };
                if victims.is_empty() {
                    break;
                }
                for (repo_id, digest, repo) in victims {
                    self.delete_manifest_in(repo_id, &digest)?;
                    plan.manifests.push((repo, digest_col(digest)?));
                }
            }
        }
        plan.links = to_u64(i64::try_from(self.tx.execute(
            "DELETE FROM repo_blobs WHERE linked_at < ?1 AND NOT EXISTS
             (SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = repo_blobs.repo_id AND mr.ref_digest = repo_blobs.digest)",
            [cutoff],
        )?).unwrap_or(0));
        {
            let mut st = self.tx.prepare(
                "SELECT digest, size FROM blobs b
                 WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.ref_digest = b.digest)",
            )?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (d, size) = row?;
                plan.blobs.push((digest_col(d)?, to_u64(size)));
            }
        }
        let mut del = self
            .tx
            .prepare_cached("DELETE FROM blobs WHERE digest = ?1")?;
        for (d, _) in &plan.blobs {
            del.execute([d.to_string()])?;
        }
        Ok(plan)
    }
}
