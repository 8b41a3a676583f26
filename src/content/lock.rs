//! Digest locks: one writer per digest while a blob is placed or removed, across nodes
//! (PostgreSQL's advisory locks) or processes (file locks).

use super::error::Result;
use crate::blob::BlobStore;
use crate::store::{self, MetadataStore};
use crate::types::Digest;

/// A digest's lock: the database's (every node) with PostgreSQL, else a file lock (every
/// process on this machine).
pub(crate) enum DigestLock {
    #[allow(dead_code)]
    Db(Box<store::PgLock>),
    #[allow(dead_code)]
    File(crate::blob::BlobLock),
}

pub(crate) fn lock_digest(
    meta: &MetadataStore,
    blobs: &BlobStore,
    d: &Digest,
) -> Result<DigestLock> {
    Ok(match meta.lock_digest(d)? {
        Some(l) => DigestLock::Db(Box::new(l)),
        None => DigestLock::File(blobs.lock(d)?),
    })
}
