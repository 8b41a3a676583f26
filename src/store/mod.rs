//! The metadata store: repositories, blob links, manifests, tags and upload sessions.
//!
//! `MetadataStore` is the concrete handle the rest of the program holds. Today it wraps SQLite
//! (`sqlite.rs`); PostgreSQL comes later behind the same handle, with its own SQL and migrations.
//! No SQL or `rusqlite` type leaves this module, and nothing here knows about HTTP.
//!
//! Invariant: every write runs in one `BEGIN IMMEDIATE` transaction (`MetadataStore::write`), so
//! a crash leaves either all of a write or none of it.

mod sqlite;

pub use sqlite::{MetadataStore, Reader, Writer};

use crate::content::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metadata store: {0}")]
    Sqlite(rusqlite::Error),
    /// A uniqueness rule refused the write (the thing already exists).
    #[error("already exists")]
    Conflict,
    #[error("metadata store: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("metadata store: corrupt row: {0}")]
    Corrupt(String),
    #[error("metadata store: schema version {found} is newer than this berth knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => Error::Conflict,
            _ => Error::Sqlite(e),
        }
    }
}

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub content: bytes::Bytes,
}

/// A manifest that names a subject, as the referrers API lists it.
#[derive(Debug, Clone)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// JSON object text, as pushed.
    pub annotations: Option<String>,
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
    /// Lineage: the revocation key this credential came from (`cred:<id>`, `pw:<uid>:<epoch>`).
    pub source: Option<String>,
    /// Refresh tokens of one login share a family.
    pub family: Option<String>,
    /// `robot:<id>` when a robot created it: it ends with the robot.
    pub creator: Option<String>,
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
    /// Return events with an id below this (pagination, newest first).
    pub before_id: Option<i64>,
    pub limit: u64,
}
