//! Registry queries: repositories, blob links, manifests, tags, uploads, garbage collection.
//! Written once for both engines (see `sql.rs`).

use super::cache::{ANY_REPO, CONTENT_KEY};
use super::error::{Error, Result};
use super::model::{
    BlobLink, ExpiredUpload, GcPlan, ManifestRow, NewManifest, ReferrerRow, RepoSummary,
    StoredBlob, TagDetail, TagOrder, TagQuery, UploadRow, now,
};
use super::postgres::{LOG_LOCK, REPO_LOCKS};
use super::sql::p;
use super::sql::{Lane, Param, Reader, Writer, digest_col, to_i64, to_u64};
use crate::types::{Digest, Reference};

impl Reader<'_> {
    pub fn repo_id(&self, name: &str) -> Result<Option<i64>> {
        self.conn.query_opt(
            "SELECT id FROM repositories WHERE name = ?1",
            p![name],
            |r| r.get(0),
        )
    }

    /// Blob `digest` if the repository holds it.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<BlobLink>> {
        self.conn.query_opt(
            "SELECT b.size, b.data IS NOT NULL FROM repositories r
             JOIN repo_blobs rb ON rb.repo_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = ?1 AND rb.digest = ?2",
            p![repo, digest.to_string()],
            |r| {
                Ok(BlobLink {
                    size: to_u64(r.get(0)?),
                    in_row: r.get(1)?,
                })
            },
        )
    }

    /// The size of `digest` if it is stored at all.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_opt(
                "SELECT size FROM blobs WHERE digest = ?1",
                p![digest.to_string()],
                |r| r.get::<i64>(0),
            )?
            .map(to_u64))
    }

    /// The bytes of `digest` if they are kept in its row (a small blob on S3).
    pub fn inline_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_opt(
                "SELECT data FROM blobs WHERE digest = ?1",
                p![digest.to_string()],
                |r| r.get::<Option<Vec<u8>>>(0),
            )?
            .flatten())
    }

    pub fn manifest(&self, repo: &str, reference: &Reference) -> Result<Option<ManifestRow>> {
        let row = |r: &super::sql::Row<'_>| {
            Ok(ManifestRow {
                digest: digest_col(r.get(0)?)?,
                media_type: r.get(1)?,
                content: r.get::<Vec<u8>>(2)?.into(),
            })
        };
        match reference {
            Reference::Digest(d) => self.conn.query_opt(
                "SELECT m.digest, m.media_type, m.content FROM repositories r
                 JOIN manifests m ON m.repo_id = r.id
                 WHERE r.name = ?1 AND m.digest = ?2",
                p![repo, d.to_string()],
                row,
            ),
            Reference::Tag(t) => self.conn.query_opt(
                "SELECT m.digest, m.media_type, m.content FROM repositories r
                 JOIN tags t ON t.repo_id = r.id
                 JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
                 WHERE r.name = ?1 AND t.name = ?2",
                p![repo, t.as_str()],
                row,
            ),
        }
    }

    /// Tags of `repo` after `last`, sorted, at most `limit`; `None` if the repository is unknown.
    pub fn tags(&self, repo: &str, last: Option<&str>, limit: u64) -> Result<Option<Vec<String>>> {
        let Some(repo_id) = self.repo_id(repo)? else {
            return Ok(None);
        };
        self.conn
            .query(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                p![repo_id, last.unwrap_or(""), to_i64(limit)],
                |r| r.get(0),
            )
            .map(Some)
    }

    /// Repositories that hold at least one manifest, sorted, after `last`, at most `limit`.
    pub fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Vec<String>> {
        self.conn.query(
            "SELECT name FROM repositories r WHERE name > ?1
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
             ORDER BY name LIMIT ?2",
            p![last.unwrap_or(""), to_i64(limit)],
            |r| r.get(0),
        )
    }

    /// One page of the manifests of `repo` whose subject is `subject` (optionally of one
    /// artifact type), after digest `after`, at most `limit`, by digest. Annotations are not
    /// read here (`annotations_len` says how long they are; `manifest_annotations` reads them),
    /// so a page's memory does not depend on what was pushed.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<ReferrerRow>> {
        self.conn.query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, CAST(COALESCE(length(m.annotations), 0) AS BIGINT)
             FROM repositories r JOIN manifests m ON m.repo_id = r.id
             WHERE r.name = ?1 AND m.subject = ?2 AND (CAST(?3 AS TEXT) IS NULL OR m.artifact_type = ?3)
               AND (CAST(?4 AS TEXT) IS NULL OR m.digest > CAST(?4 AS TEXT))
             ORDER BY m.digest LIMIT ?5",
            p![repo, subject.to_string(), artifact_type, after, to_i64(limit)],
            |r| {
                Ok(ReferrerRow {
                    digest: digest_col(r.get(0)?)?,
                    media_type: r.get(1)?,
                    size: to_u64(r.get(2)?),
                    artifact_type: r.get(3)?,
                    annotations_len: to_u64(r.get(4)?),
                })
            },
        )
    }

    /// The annotations (JSON object text) of manifest `digest` of `repo`, if at most `max`
    /// bytes long; `None` when absent or longer.
    pub fn manifest_annotations(
        &self,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_opt(
                "SELECT m.annotations FROM repositories r JOIN manifests m ON m.repo_id = r.id
                 WHERE r.name = ?1 AND m.digest = ?2 AND length(m.annotations) <= CAST(?3 AS BIGINT)",
                p![repo, digest.to_string(), to_i64(max)],
                |r| r.get::<Option<String>>(0),
            )?
            .flatten())
    }

    /// The content of manifest `digest` of `repo`.
    pub fn manifest_content(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<u8>>> {
        self.conn.query_opt(
            "SELECT m.content FROM repositories r JOIN manifests m ON m.repo_id = r.id
             WHERE r.name = ?1 AND m.digest = ?2",
            p![repo, digest.to_string()],
            |r| r.get(0),
        )
    }

    pub fn upload(&self, id: &uuid::Uuid) -> Result<Option<UploadRow>> {
        self.conn.query_opt(
            "SELECT r.name, u.created_at, u.size, u.s3_state FROM uploads u JOIN repositories r ON r.id = u.repo_id WHERE u.id = ?1",
            p![id.to_string()],
            |r| {
                Ok(UploadRow {
                    repository: r.get(0)?,
                    created_at: r.get(1)?,
                    size: to_u64(r.get(2)?),
                    s3_state: r.get(3)?,
                })
            },
        )
    }

    /// Every stored blob (`berth migrate`).
    pub fn all_blobs(&self) -> Result<Vec<StoredBlob>> {
        self.conn.query(
            "SELECT digest, size, data IS NOT NULL FROM blobs ORDER BY digest",
            p![],
            stored_blob,
        )
    }

    /// Number of stored blobs and their total size.
    pub fn blob_stats(&self) -> Result<(u64, u64)> {
        Ok(self
            .conn
            .query_opt(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs",
                p![],
                |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?))),
            )?
            .unwrap_or((0, 0)))
    }

    /// Repositories of namespace `ns` that hold a manifest, sorted, at most `limit`: tag count,
    /// bytes of the blobs linked there and the newest push.
    /// Up to `limit` repositories of namespace `ns` whose name holds `filter` (any case), by name.
    pub fn repositories_in(&self, ns: &str, filter: &str, limit: u64) -> Result<Vec<RepoSummary>> {
        self.conn.query(
            "SELECT r.name,
               (SELECT COUNT(*) FROM tags t WHERE t.repo_id = r.id),
               (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repo_blobs rb
                  JOIN blobs b ON b.digest = rb.digest WHERE rb.repo_id = r.id)
               + (SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) FROM manifests m WHERE m.repo_id = r.id),
               (SELECT MAX(m.pushed_at) FROM manifests m WHERE m.repo_id = r.id)
             FROM repositories r
             WHERE substr(r.name, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT)
             AND lower(r.name) LIKE ?3 ESCAPE '!'
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
             ORDER BY r.name LIMIT ?2",
            p![format!("{ns}/"), to_i64(limit), like_pattern(filter)],
            |r| {
                Ok(RepoSummary {
                    name: r.get(0)?,
                    tags: to_u64(r.get(1)?),
                    bytes: to_u64(r.get(2)?),
                    pushed_at: r.get(3)?,
                })
            },
        )
    }

    /// Storage of namespace `ns`: repositories, and bytes of its distinct blobs and manifests.
    pub fn namespace_usage(&self, ns: &str) -> Result<(u64, u64)> {
        let prefix = format!("{ns}/");
        let repos: i64 = self.conn.value(
            "SELECT COUNT(*) FROM repositories r
             WHERE substr(r.name, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT)",
            p![prefix.as_str()],
        )?;
        let bytes: i64 = self.conn.value(
            "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b WHERE b.digest IN
               (SELECT rb.digest FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id
                WHERE substr(r.name, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT))",
            p![prefix.as_str()],
        )?;
        let manifests: i64 = self.conn.value(
            "SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) FROM manifests m
             JOIN repositories r ON r.id = m.repo_id
             WHERE substr(r.name, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT)",
            p![prefix.as_str()],
        )?;
        Ok((
            to_u64(repos),
            to_u64(bytes).saturating_add(to_u64(manifests)),
        ))
    }

    /// The tags of `repo` with their manifests, sorted by tag, at most `limit`.
    /// One page of `repo`'s tags after `after` (by name), at most `limit`: each with its
    /// manifest's row and total size (the manifest and everything it references, from the
    /// stored references, never by reading manifests). Annotations longer than
    /// `annotations_max` bytes are left out (`annotations_len` tells).
    /// One page of a repository's tags with their manifests: `filter` is a case-insensitive
    /// substring of the tag, `order` says how they sort, `offset` and `limit` pick the page.
    pub fn tag_details(
        &self,
        repo: &str,
        q: &TagQuery<'_>,
        annotations_max: u64,
    ) -> Result<Vec<TagDetail>> {
        let order = match q.order {
            TagOrder::Name => "t.name",
            TagOrder::PushedNewest => "t.updated_at DESC, t.name",
        };
        // The page of tags first (an index holds them in push order), then the sizes of those
        // few: the cost is the page's, whatever the repository holds.
        self.conn.query(
            &format!(
                "SELECT t.name, m.digest, m.media_type, m.artifact_type, m.size,
                    CASE WHEN length(m.annotations) <= CAST(?4 AS BIGINT) THEN m.annotations END,
                    CAST(COALESCE(length(m.annotations), 0) AS BIGINT), t.updated_at,
                    CAST(m.size
                    + (SELECT COALESCE(SUM(b.size), 0) FROM manifest_refs mr JOIN blobs b ON b.digest = mr.ref_digest
                       WHERE mr.repo_id = t.repo_id AND mr.manifest_digest = m.digest AND mr.kind = 0)
                    + (SELECT COALESCE(SUM(m2.size), 0) FROM manifest_refs mr
                       JOIN manifests m2 ON m2.repo_id = t.repo_id AND m2.digest = mr.ref_digest
                       WHERE mr.repo_id = t.repo_id AND mr.manifest_digest = m.digest AND mr.kind = 1)
                    + (SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN
                       (SELECT mr2.ref_digest FROM manifest_refs mr
                        JOIN manifest_refs mr2 ON mr2.repo_id = t.repo_id AND mr2.manifest_digest = mr.ref_digest AND mr2.kind = 0
                        WHERE mr.repo_id = t.repo_id AND mr.manifest_digest = m.digest AND mr.kind = 1)) AS BIGINT)
             FROM (SELECT t.repo_id, t.name, t.digest, t.updated_at
                   FROM repositories r JOIN tags t ON t.repo_id = r.id
                   WHERE r.name = ?1 AND lower(t.name) LIKE ?2 ESCAPE '!'
                   ORDER BY {order} LIMIT ?3 OFFSET ?5) t
             JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
             ORDER BY {order}"
            ),
            p![
                repo,
                like_pattern(q.filter),
                to_i64(q.limit),
                to_i64(annotations_max),
                to_i64(q.offset)
            ],
            |r| {
                Ok(TagDetail {
                    tag: r.get(0)?,
                    digest: digest_col(r.get(1)?)?,
                    media_type: r.get(2)?,
                    artifact_type: r.get(3)?,
                    size: to_u64(r.get(4)?),
                    annotations: r.get(5)?,
                    annotations_len: to_u64(r.get(6)?),
                    pushed_at: r.get(7)?,
                    total_size: to_u64(r.get(8)?),
                })
            },
        )
    }

    /// How many of a repository's tags hold `filter` (as `tag_details` reads it).
    pub fn tag_count(&self, repo: &str, filter: &str) -> Result<u64> {
        self.conn
            .value::<i64>(
                "SELECT COUNT(*) FROM repositories r JOIN tags t ON t.repo_id = r.id
                 WHERE r.name = ?1 AND lower(t.name) LIKE ?2 ESCAPE '!'",
                p![repo, like_pattern(filter)],
            )
            .map(to_u64)
    }

    /// The manifests an index names, each with its size and its blobs' (an image's size per
    /// platform).
    pub fn index_children(&self, repo: &str, index: &Digest) -> Result<Vec<(Digest, u64)>> {
        self.conn.query(
            "SELECT m2.digest, CAST(m2.size + (SELECT COALESCE(SUM(b.size), 0) FROM manifest_refs mr2
                 JOIN blobs b ON b.digest = mr2.ref_digest
                 WHERE mr2.repo_id = r.id AND mr2.manifest_digest = m2.digest AND mr2.kind = 0) AS BIGINT)
             FROM repositories r JOIN manifest_refs mr ON mr.repo_id = r.id
             JOIN manifests m2 ON m2.repo_id = r.id AND m2.digest = mr.ref_digest
             WHERE r.name = ?1 AND mr.manifest_digest = ?2 AND mr.kind = 1",
            p![repo, index.to_string()],
            |r| Ok((digest_col(r.get(0)?)?, to_u64(r.get(1)?))),
        )
    }

    /// A constant-time round trip, for readiness probes.
    pub fn ping(&self) -> Result<()> {
        self.conn.exists("SELECT 1", p![]).map(drop)
    }
}

impl Writer<'_> {
    /// Marks `repo`'s tags, manifests or blob links changed (`ANY_REPO`: any repository's): a
    /// `content:` key in the revocation log, so that every node forgets what it cached of it within
    /// a read of the log, and this node once the transaction commits (see `cache`).
    fn content_changed(&self, repo: &str) -> Result<()> {
        if self.changed.borrow().iter().any(|r| r == repo) {
            return Ok(());
        }
        if self.lane == Lane::Content {
            // Content writes run side by side: the log's sequence numbers commit in order only
            // if each is taken under the log's lock, held until the commit.
            self.conn.lock_key(LOG_LOCK, "")?;
        }
        self.conn.execute(
            "INSERT INTO revocations (key, at) VALUES (?1, ?2)",
            p![format!("{CONTENT_KEY}{repo}"), now()],
        )?;
        self.changed.borrow_mut().push(repo.to_owned());
        Ok(())
    }

    /// Takes `repo`'s lock (content writes; see `Lane`): content writes of one repository that
    /// read what they change (a manifest's references, a tag's manifest, a link) run one at a
    /// time. An exclusive write runs alone already.
    pub fn lock_repo(&self, repo: &str) -> Result<()> {
        match self.lane {
            Lane::Content => self.conn.lock_key(REPO_LOCKS, repo),
            Lane::Exclusive => Ok(()),
        }
    }

    /// Deletes every repository of namespace `ns` (the repository `ns` itself and `ns/…`) with
    /// its tags, manifests, blob links and upload sessions. Blob files are left to GC, which
    /// removes those no repository links any more.
    pub fn delete_repositories_in(&self, ns: &str) -> Result<u64> {
        let prefix = format!("{ns}/");
        let ids: Vec<(i64, String)> = self.conn.query(
            "SELECT id, name FROM repositories WHERE name = ?1 OR substr(name, 1, length(?2)) = ?2",
            p![ns, prefix],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (id, name) in &ids {
            self.delete_repo_rows(*id, name)?;
        }
        Ok(ids.len() as u64)
    }

    /// Deletes repository `name` with its tags, manifests, blob links and upload sessions (blob
    /// files are left to GC); the number of tags it had, or `None` when there is no such
    /// repository.
    pub fn delete_repository(&self, name: &str) -> Result<Option<u64>> {
        let Some(id) = self.conn.query_opt(
            "SELECT id FROM repositories WHERE name = ?1",
            p![name],
            |r| r.get::<i64>(0),
        )?
        else {
            return Ok(None);
        };
        let tags: i64 = self
            .conn
            .value("SELECT COUNT(*) FROM tags WHERE repo_id = ?1", p![id])?;
        self.delete_repo_rows(id, name)?;
        Ok(Some(to_u64(tags)))
    }

    fn delete_repo_rows(&self, id: i64, name: &str) -> Result<()> {
        self.content_changed(name)?;
        for table in [
            "tags",
            "manifests",
            "manifest_refs",
            "repo_blobs",
            "uploads",
        ] {
            self.conn
                .execute(&format!("DELETE FROM {table} WHERE repo_id = ?1"), p![id])?;
        }
        self.conn
            .execute("DELETE FROM repositories WHERE id = ?1", p![id])?;
        Ok(())
    }

    pub fn ensure_repo(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.reader().repo_id(name)? {
            return Ok(id);
        }
        // A content write of another node may be creating it too: its insert wins, and ours,
        // having waited for it, reads its id.
        let id = self.conn.query_opt(
            "INSERT INTO repositories (name, created_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
            p![name, now()],
            |r| r.get(0),
        )?;
        match id {
            Some(id) => Ok(id),
            None => self
                .reader()
                .repo_id(name)?
                .ok_or_else(|| Error::Corrupt(format!("repository {name} neither new nor found"))),
        }
    }

    /// The row of a stored blob, unless one is there: `inline`, its bytes (a small blob kept in
    /// its row, see `content::INLINE_MAX`), or `None` when they are in the blob store.
    pub fn insert_blob(&self, digest: &Digest, size: u64, inline: Option<&[u8]>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO blobs (digest, size, created_at, data) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            p![digest.to_string(), to_i64(size), now(), inline],
        )?;
        Ok(())
    }

    /// Links a stored blob into repository `repo` (created if new), refreshing the link time if
    /// it is already there.
    pub fn link_blob(&self, repo: &str, digest: &Digest) -> Result<()> {
        self.insert_in_repo(
            repo,
            "INSERT INTO repo_blobs (repo_id, digest, linked_at)
             SELECT id, ?2, ?3 FROM repositories WHERE name = ?1
             ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = excluded.linked_at",
            p![repo, digest.to_string(), now()],
        )
    }

    /// Runs `insert`, which reads the id of repository `repo` by its name, once the repository
    /// exists: one statement when it does already, else the repository is made first.
    fn insert_in_repo(&self, repo: &str, insert: &str, params: &[&dyn Param]) -> Result<()> {
        if self.conn.execute(insert, params)? == 0 {
            self.ensure_repo(repo)?;
            self.conn.execute(insert, params)?;
        }
        Ok(())
    }

    pub fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.lock_repo(repo)?;
        self.content_changed(repo)?;
        Ok(self.conn.execute(
            "DELETE FROM repo_blobs WHERE digest = ?2 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
            p![repo, digest.to_string()],
        )? > 0)
    }

    /// The first reference of `m` that the repository does not hold, if any.
    fn missing_ref(&self, repo_id: i64, m: &NewManifest<'_>) -> Result<Option<Digest>> {
        for d in m.blob_refs {
            if !self.conn.exists(
                "SELECT 1 FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2",
                p![repo_id, d.to_string()],
            )? {
                return Ok(Some(d.clone()));
            }
        }
        for d in m.manifest_refs {
            if !self.conn.exists(
                "SELECT 1 FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                p![repo_id, d.to_string()],
            )? {
                return Ok(Some(d.clone()));
            }
        }
        Ok(None)
    }

    /// Stores manifest `m` in repository `repo` (created if new), tagging it `tag`, if the
    /// repository holds everything `m` references; otherwise writes nothing and returns the first
    /// reference it lacks. The references are checked and the tag read under the repository's
    /// lock (`lock_repo`).
    pub fn put_manifest(
        &self,
        repo: &str,
        m: &NewManifest<'_>,
        tag: Option<&str>,
    ) -> Result<Option<Digest>> {
        self.lock_repo(repo)?;
        let repo_id = self.ensure_repo(repo)?;
        if let Some(missing) = self.missing_ref(repo_id, m)? {
            return Ok(Some(missing));
        }
        let now = now();
        let digest = m.digest.to_string();
        self.conn.execute(
            "INSERT INTO manifests
             (repo_id, digest, media_type, artifact_type, subject, annotations, size, content, pushed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (repo_id, digest) DO UPDATE SET pushed_at = excluded.pushed_at",
            p![
                repo_id,
                digest,
                m.media_type,
                m.artifact_type,
                m.subject.map(ToString::to_string),
                m.annotations,
                to_i64(m.content.len() as u64),
                m.content,
                now
            ],
        )?;
        let refs = "INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) VALUES (?1, ?2, ?3, ?4)
                    ON CONFLICT DO NOTHING";
        for d in m.blob_refs {
            self.conn
                .execute(refs, p![repo_id, digest, d.to_string(), 0_i64])?;
        }
        for d in m.manifest_refs {
            self.conn
                .execute(refs, p![repo_id, digest, d.to_string(), 1_i64])?;
        }
        if let Some(tag) = tag {
            // A tag that named another manifest moves: nodes may hold the old one. A new tag
            // changes nothing a node holds (nothing absent is cached). The caller holds the
            // repository's lock, so the tag cannot change between this read and the write.
            let before: Option<String> = self.conn.query_opt(
                "SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2",
                p![repo_id, tag],
                |r| r.get(0),
            )?;
            if before.is_some_and(|b| b != digest) {
                self.content_changed(repo)?;
            }
            self.conn.execute(
                "INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                p![repo_id, tag, digest, now],
            )?;
        }
        Ok(None)
    }

    /// Deletes a manifest, its references and every tag that points at it.
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        self.lock_repo(repo)?;
        let Some(repo_id) = self.reader().repo_id(repo)? else {
            return Ok(false);
        };
        self.delete_manifest_in((repo_id, repo), &digest.to_string())
    }

    fn delete_manifest_in(&self, (repo_id, repo): (i64, &str), digest: &str) -> Result<bool> {
        self.content_changed(repo)?;
        let n = self.conn.execute(
            "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
            p![repo_id, digest],
        )?;
        self.conn.execute(
            "DELETE FROM manifest_refs WHERE repo_id = ?1 AND manifest_digest = ?2",
            p![repo_id, digest],
        )?;
        self.conn.execute(
            "DELETE FROM tags WHERE repo_id = ?1 AND digest = ?2",
            p![repo_id, digest],
        )?;
        Ok(n > 0)
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        self.lock_repo(repo)?;
        self.content_changed(repo)?;
        Ok(self.conn.execute(
            "DELETE FROM tags WHERE name = ?2 AND repo_id = (SELECT id FROM repositories WHERE name = ?1)",
            p![repo, tag],
        )? > 0)
    }

    /// Opens upload session `id` in repository `repo` (created if new).
    pub fn create_upload(&self, id: &uuid::Uuid, repo: &str) -> Result<()> {
        self.insert_in_repo(
            repo,
            "INSERT INTO uploads (id, repo_id, created_at)
             SELECT ?1, id, ?3 FROM repositories WHERE name = ?2",
            p![id.to_string(), repo, now()],
        )
    }

    /// Records how many bytes an upload holds after a chunk.
    pub fn set_upload_size(&self, id: &uuid::Uuid, size: u64) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE uploads SET size = ?2 WHERE id = ?1",
            p![id.to_string(), to_i64(size)],
        )? > 0)
    }

    /// Records the size and the bucket state of an upload after a chunk (S3), if the session is
    /// still at `from` bytes (another request that got there first wins; this one fails).
    pub fn set_upload_state(
        &self,
        id: &uuid::Uuid,
        from: u64,
        size: u64,
        state: &str,
    ) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE uploads SET size = ?3, s3_state = ?4 WHERE id = ?1 AND size = ?2",
            p![id.to_string(), to_i64(from), to_i64(size), state],
        )? > 0)
    }

    pub fn delete_upload(&self, id: &uuid::Uuid) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM uploads WHERE id = ?1", p![id.to_string()])?
            > 0)
    }

    /// Deletes the upload sessions created before `cutoff` and returns their ids.
    pub fn expire_uploads(&self, cutoff: i64) -> Result<Vec<ExpiredUpload>> {
        self.conn.query(
            "DELETE FROM uploads WHERE created_at < ?1 RETURNING id, s3_state",
            p![cutoff],
            |r| {
                let id: String = r.get(0)?;
                Ok(ExpiredUpload {
                    id: uuid::Uuid::parse_str(&id)
                        .map_err(|_| Error::Corrupt(format!("upload id {id:?}")))?,
                    s3_state: r.get(1)?,
                })
            },
        )
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
                let victims: Vec<(i64, String, String)> = self.conn.query(
                    "SELECT m.repo_id, m.digest, r.name FROM manifests m JOIN repositories r ON r.id = m.repo_id
                     WHERE m.pushed_at < ?1
                     AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest)
                     AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                     WHERE mr.repo_id = m.repo_id AND mr.ref_digest = m.digest AND mr.kind = 1)
                     AND NOT (m.subject IS NOT NULL AND EXISTS
                              (SELECT 1 FROM manifests s WHERE s.repo_id = m.repo_id AND s.digest = m.subject))",
                    p![cutoff],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                if victims.is_empty() {
                    break;
                }
                for (repo_id, digest, repo) in victims {
                    self.delete_manifest_in((repo_id, &repo), &digest)?;
                    plan.manifests.push((repo, digest_col(digest)?));
                }
            }
        }
        plan.links = self.conn.execute(
            "DELETE FROM repo_blobs WHERE linked_at < ?1 AND NOT EXISTS
             (SELECT 1 FROM manifest_refs mr WHERE mr.repo_id = repo_blobs.repo_id AND mr.ref_digest = repo_blobs.digest)",
            p![cutoff],
        )?;
        plan.blobs = self.conn.query(
            "DELETE FROM blobs AS b
             WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)
             AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.ref_digest = b.digest)
             RETURNING digest, size, data IS NOT NULL",
            p![],
            stored_blob,
        )?;
        if plan.links > 0 || !plan.blobs.is_empty() {
            self.content_changed(ANY_REPO)?;
        }
        Ok(plan)
    }
}

/// A blob's row read as `digest, size, data IS NOT NULL`.
fn stored_blob(r: &super::sql::Row<'_>) -> Result<StoredBlob> {
    Ok(StoredBlob {
        digest: digest_col(r.get(0)?)?,
        size: to_u64(r.get(1)?),
        in_row: r.get(2)?,
    })
}

/// A `LIKE` pattern (escape `!`) matching names that hold `filter`, case-insensitively.
fn like_pattern(filter: &str) -> String {
    let mut out = String::from("%");
    for c in filter.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}
