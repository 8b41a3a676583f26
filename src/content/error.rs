//! What a content operation can fail with; `http::oci::error` maps each to a status and an OCI
//! error code.

use super::manifest;
use crate::store;
use crate::types::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("upload unknown to registry")]
    UploadUnknown,
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends; `offset` is the upload's length.
    #[error("chunk does not start at the end of the upload (offset {offset})")]
    RangeMismatch { offset: u64 },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest is larger than {} bytes", manifest::MAX_MANIFEST_BYTES)]
    ManifestTooLarge,
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("reading the request body: {0}")]
    Body(String),
    /// The node cannot take this now; the client should retry shortly.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Blob(#[from] crate::blob::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
