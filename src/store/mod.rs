//! The metadata store: repositories, blob links, manifests, tags, upload sessions, identity.
//!
//! `MetadataStore` is the concrete handle the rest of the program holds, over one of two engines:
//! SQLite in the data directory (`sqlite.rs`, the default) or PostgreSQL (`postgres.rs`, for
//! several nodes). The queries are written once (`registry.rs`, `iam.rs`) through `sql.rs`.
//! No SQL or driver type leaves this module, and nothing here knows about HTTP.
//!
//! Invariant: every write runs in one transaction (`MetadataStore::write`), so a crash leaves
//! either all of a write or none of it, and write transactions run one at a time (SQLite's
//! `BEGIN IMMEDIATE`; PostgreSQL's write advisory lock).

mod copy;
mod iam;
mod postgres;
mod registry;
pub(crate) mod sql;
mod sqlite;

use std::sync::Arc;

pub use copy::CopyReport;
pub use iam::{binding_key, generation_key, member_key, role_key};
pub use postgres::PgOptions;

use crate::types::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata store: {0}")]
    Sqlite(rusqlite::Error),
    #[error("metadata store: {0}")]
    Postgres(::postgres::Error),
    /// The database cannot be reached (down, restarting, every connection busy): a retry may
    /// succeed, and the server answers 503 (`UNAVAILABLE` starts this error's text).
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule refused the write (the thing already exists).
    #[error("already exists")]
    Conflict,
    /// What the write would derive from has ended (a deleted or rotated credential, an ended
    /// session, trust or robot): nothing may be made from it, whatever a node remembers.
    #[error("the credential or session this request came from has ended")]
    SourceEnded,
    #[error("metadata store: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("metadata store: corrupt row: {0}")]
    Corrupt(String),
    #[error("metadata store: {0}")]
    Config(String),
    #[error("metadata store: schema version {found} is newer than this berth knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
}

/// How the text of `Error::Unavailable` starts (see `http::InternalError::unavailable`).
pub const UNAVAILABLE: &str = "metadata store unavailable";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The threads that open and retire pooled connections (`r2d2`'s helpers), shared by every pool
/// of the process.
fn pool_threads() -> std::sync::Arc<scheduled_thread_pool::ScheduledThreadPool> {
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

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => Error::Conflict,
            _ => Error::Sqlite(e),
        }
    }
}

impl From<::postgres::Error> for Error {
    fn from(e: ::postgres::Error) -> Self {
        use ::postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => Error::Conflict,
            // Class 08 (connection), 57 (operator intervention: shutdown, cancelled by the
            // statement timeout), 53 (insufficient resources).
            Some(c) if ["08", "57", "53"].iter().any(|k| c.code().starts_with(k)) => {
                Error::Unavailable(e.to_string())
            }
            Some(_) => Error::Postgres(e),
            None if e.is_closed()
                || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) =>
            {
                Error::Unavailable(e.to_string())
            }
            None if e.to_string().contains("timed out") || e.to_string().contains("connect") => {
                Error::Unavailable(e.to_string())
            }
            None => Error::Postgres(e),
        }
    }
}

impl Error {
    /// Whether a retry later may succeed (the engine is down or overloaded).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

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

pub use postgres::PgLock;

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

/// Read queries; also available inside a write transaction through `Writer::reader`.
/// The queries live beside their tables: `registry.rs` and `iam.rs`.
pub struct Reader<'a> {
    conn: sql::Conn<'a>,
}

/// Writes inside one transaction.
pub struct Writer<'a> {
    conn: sql::Conn<'a>,
}

impl Writer<'_> {
    pub fn reader(&self) -> Reader<'_> {
        Reader { conn: self.conn }
    }
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

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub content: bytes::Bytes,
}

/// A repository as the console and `GET /orgs/{org}/repositories` list it.
#[derive(Debug, Clone)]
pub struct RepoSummary {
    pub name: String,
    pub tags: u64,
    /// Bytes of the blobs linked in the repository (shared blobs count in each).
    pub bytes: u64,
    pub pushed_at: Option<i64>,
}

/// A tag and the manifest it points at.
#[derive(Debug, Clone)]
pub struct TagDetail {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: u64,
    /// JSON object text, as pushed; `None` when absent or too long to show.
    pub annotations: Option<String>,
    /// How long the stored annotations are (0: none).
    pub annotations_len: u64,
    /// When the tag was last pointed here.
    pub pushed_at: i64,
    /// The manifest and everything it references directly (from the stored references).
    pub total_size: u64,
}

/// A manifest that names a subject, as the referrers API lists it.
#[derive(Debug, Clone)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// How long its annotations are (0: none); they are read one at a time.
    pub annotations_len: u64,
}

/// Everything needed to record a pushed manifest.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<&'a str>,
    pub content: &'a [u8],
    pub blob_refs: &'a [Digest],
    pub manifest_refs: &'a [Digest],
}

/// An upload session as stored.
#[derive(Debug, Clone)]
pub struct UploadRow {
    pub repository: String,
    pub created_at: i64,
    /// Bytes committed so far (chunks whose request succeeded).
    pub size: u64,
    /// With S3: where the session stands in the bucket (`blob::PartsState` as JSON).
    pub s3_state: Option<String>,
}

/// What a garbage collection pass removed from the metadata (files are removed by the caller).
#[derive(Debug, Default, Clone)]
pub struct GcPlan {
    pub manifests: Vec<(String, Digest)>,
    pub links: u64,
    pub blobs: Vec<(Digest, u64)>,
    pub uploads: Vec<uuid::Uuid>,
}

/// The revocation key of one generation of a namespace (its owner's id and creation time tell
/// a namespace from a later one of the same name). Bearer tokens that grant access in it name
/// it; deleting the namespace revokes it.
pub fn namespace_key(name: &str, org_id: i64, created_at: i64) -> String {
    format!("ns:{name}@{org_id}.{created_at}")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: Option<String>,
    pub admin: bool,
    pub created_at: i64,
    /// Bumped by every password change; sessions opened with an older epoch are revoked.
    pub password_epoch: i64,
}

#[derive(Debug, Clone)]
pub struct OrgRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NamespaceRow {
    pub name: String,
    pub org_id: i64,
    pub org: String,
    pub public: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct RobotRow {
    pub id: i64,
    pub org_id: i64,
    pub org: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
}

/// When a credential expires, with whose it is (for `/metrics`). `org` is empty for a user's
/// own API key; `owner` is the robot's or user's name (empty for a registry token).
#[derive(Debug, Clone)]
pub struct CredentialExpiry {
    pub org: String,
    pub kind: String,
    pub owner: String,
    pub name: String,
    pub expires_at: i64,
}

/// A workload trust of a robot: who may act as it by presenting a token of an OpenID issuer.
#[derive(Debug, Clone)]
pub struct TrustRow {
    pub id: i64,
    pub robot_id: i64,
    /// The robot's organization and name.
    pub org: String,
    pub robot: String,
    pub name: String,
    pub issuer: String,
    /// `sub` exactly, or a pattern with `*` globs.
    pub subject: String,
    pub audience: Option<String>,
    /// A JSON object: claim path (dots for nesting) → the exact string it must hold.
    pub claims: String,
    /// The issuer's JSON Web Key Set, when given at creation (else OpenID discovery).
    pub jwks: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A long-lived credential; `kind` is one of `robot_token`, `api_key`, `registry_token`,
/// `refresh_token`.
#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    pub user_id: Option<i64>,
    pub robot_id: Option<i64>,
    pub org_id: Option<i64>,
    pub secret_hash: Vec<u8>,
    pub readwrite: bool,
    pub description: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_addr: Option<String>,
    pub last_used_agent: Option<String>,
    /// Where it came from, for display: the first revocation key of its creator (`cred:<id>`,
    /// `pw:<uid>:<epoch>`). Every key it depends on is in the `lineage` table.
    pub source: Option<String>,
    /// Refresh tokens of one login share a family.
    pub family: Option<String>,
    /// `robot:<id>` when a robot created it: it ends with the robot.
    pub creator: Option<String>,
    /// The secret before the last rotation, accepted until `previous_until`.
    pub previous_hash: Option<Vec<u8>>,
    pub previous_until: Option<i64>,
    /// Rotations so far: logins with the current secret name `gen:<id>:<generation>`, with the
    /// previous one `gen:<id>:<generation - 1>`.
    pub generation: i64,
}

/// A binding with its organization's name.
#[derive(Debug, Clone)]
pub struct BindingRow {
    pub org_id: i64,
    pub org: String,
    pub name: String,
    pub role: String,
    pub subject_kind: String,
    pub subject_id: i64,
    pub scope_kind: String,
    pub scope: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RoleRow {
    pub org_id: i64,
    pub name: String,
    /// JSON array of rules.
    pub rules: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub outcome: String,
    pub target: Option<String>,
    pub client_addr: Option<String>,
    pub detail: Option<String>,
    /// The user name typed at a failed login (never an identity).
    pub attempted: Option<String>,
    /// How many events of one window this row stands for.
    pub count: i64,
}

/// Filters for listing audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<i64>,
    /// Only events before this time (Unix seconds).
    pub until: Option<i64>,
    /// Return events with an id below this (pagination, newest first).
    pub before_id: Option<i64>,
    pub limit: u64,
}
