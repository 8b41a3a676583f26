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
    Sqlite(#[from] rusqlite::Error),
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

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
