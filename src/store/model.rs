//! The row types: what the queries of `registry.rs` and `iam.rs` read and write. They stay inside
//! `store` and the services over it (`iam`, `content`), which turn them into their own types.

use crate::types::Digest;

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

/// How a page of tags sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOrder {
    Name,
    PushedNewest,
}

/// Which page of a repository's tags to read.
#[derive(Debug, Clone, Copy)]
pub struct TagQuery<'a> {
    /// A case-insensitive substring of the tag ("" for every tag).
    pub filter: &'a str,
    pub order: TagOrder,
    pub offset: u64,
    pub limit: u64,
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
    pub blobs: Vec<StoredBlob>,
    pub uploads: Vec<ExpiredUpload>,
}

/// A blob a repository links, as a pull needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLink {
    pub size: u64,
    /// Its bytes are kept in its row (a small blob on S3), not in the blob store.
    pub in_row: bool,
}

/// A blob's row: every stored blob (`berth migrate`), or one garbage collection removed.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// Its bytes are (or were, with the row) kept in its row, not in the blob store.
    pub in_row: bool,
}

/// An upload session removed from the metadata, with what its bytes need to go too: its S3
/// state (the multipart upload to abort), if any.
#[derive(Debug, Clone)]
pub struct ExpiredUpload {
    pub id: uuid::Uuid,
    pub s3_state: Option<String>,
}

/// The revocation key of one generation of a namespace (its owner's id and creation time tell
/// a namespace from a later one of the same name). Bearer tokens that grant access in it name
/// it; deleting the namespace revokes it.
pub fn namespace_key(name: &str, org_id: i64, created_at: i64) -> String {
    format!("ns:{name}@{org_id}.{created_at}")
}

/// The revocation key of one public period of a namespace generation (`public_gen` counts the
/// times it turned public). Bearer tokens whose pull comes only from publicness name it; turning
/// the namespace private revokes it, and a later public period has another key.
pub fn public_key(name: &str, org_id: i64, created_at: i64, public_gen: i64) -> String {
    format!("pub:{name}@{org_id}.{created_at}.{public_gen}")
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
    /// How many times the namespace turned public (`public_key`).
    pub public_gen: i64,
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

/// A user made by an OpenID provider, linked by the provider's issuer and subject.
#[derive(Debug, Clone)]
pub struct SsoLinkRow {
    pub issuer: String,
    pub subject: String,
    /// The provider's name in the configuration.
    pub provider: String,
    pub user_id: i64,
    /// Moves when the provider refuses the user: `sso:<user_id>:<epoch>` ends with it.
    pub epoch: i64,
    pub groups_read_at: i64,
}

/// A session opened through a provider, with the provider's refresh token (sealed).
#[derive(Debug, Clone)]
pub struct SsoSessionRow {
    pub family: String,
    pub user_id: i64,
    pub provider: String,
    pub refresh_sealed: Option<Vec<u8>>,
    pub read_at: i64,
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
    /// The organization the event happened in, if any.
    pub org: Option<String>,
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
    /// Only events of this organization.
    pub org: Option<String>,
    pub limit: u64,
}
