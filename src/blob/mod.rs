//! The blob store: the bytes of blobs and of in-progress uploads.
//!
//! `BlobStore` is the concrete handle, over the filesystem (`fs.rs`, the default) or an
//! S3-compatible bucket (`s3.rs`, for several nodes). It knows digests and upload ids, never
//! repository names, and never builds a path or key from anything but a validated `Digest` or a
//! `Uuid`. The two differ in how uploads are kept (one file; one object per chunk), so
//! `content` branches on `BlobStore::engine` where an upload is written, finished or read.
//!
//! Invariant: a blob appears at its final path or key only complete: an atomic rename of a
//! fsync'd file, or the completion of a multipart upload, so a reader never sees a partial blob.

mod error;
mod fs;
mod s3;

pub use error::{Error, Result, UNAVAILABLE};

pub use fs::{BlobLock, FsStore};
pub use s3::{PART, PartWriter, PartsState, S3Options, S3Store, Sink};

/// The handle: the engine and the lock stripes (files under the data directory, used when the
/// metadata store offers no lock of its own).
#[derive(Clone, Debug)]
pub struct BlobStore {
    engine: Engine,
    locks: FsStore,
}

#[derive(Clone, Debug)]
pub enum Engine {
    Fs(FsStore),
    S3(S3Store),
}

impl BlobStore {
    /// Files under `data_dir`.
    pub fn open(data_dir: &std::path::Path) -> Result<BlobStore> {
        let fs = FsStore::open(data_dir)?;
        Ok(BlobStore {
            engine: Engine::Fs(fs.clone()),
            locks: fs,
        })
    }

    /// A bucket; the lock files stay under `data_dir`.
    pub fn open_s3(options: &S3Options, data_dir: &std::path::Path) -> Result<BlobStore> {
        Ok(BlobStore {
            engine: Engine::S3(S3Store::open(options)?),
            locks: FsStore::open_locks(data_dir)?,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Fs(_) => "files".into(),
            Engine::S3(s) => s.describe(),
        }
    }

    /// Takes the lock stripe of `d` (an `flock`, across processes on this machine).
    pub fn lock(&self, d: &crate::types::Digest) -> Result<BlobLock> {
        self.locks.lock(d)
    }

    pub fn remove_upload(&self, id: &uuid::Uuid) -> Result<()> {
        match &self.engine {
            Engine::Fs(f) => f.remove_upload(id),
            Engine::S3(s) => s.remove_upload(id),
        }
    }

    /// Removes the bytes of an upload session whose row is gone (expired): its files, or its
    /// objects and the multipart upload its S3 state names (`s3_state`).
    pub fn discard_upload(&self, id: &uuid::Uuid, s3_state: Option<&str>) -> Result<()> {
        match &self.engine {
            Engine::Fs(f) => f.remove_upload(id),
            Engine::S3(s) => s.discard_upload(id, s3_state),
        }
    }

    pub fn blob_exists(&self, d: &crate::types::Digest) -> Result<bool> {
        match &self.engine {
            Engine::Fs(f) => Ok(f.blob_file_exists(d)),
            Engine::S3(s) => s.blob_exists(d),
        }
    }

    pub fn remove_blob(&self, d: &crate::types::Digest) -> Result<()> {
        match &self.engine {
            Engine::Fs(f) => f.remove_blob(d),
            Engine::S3(s) => s.remove_blob(d),
        }
    }

    pub fn list_blobs(&self) -> Result<Vec<crate::types::Digest>> {
        match &self.engine {
            Engine::Fs(f) => f.list_blobs(),
            Engine::S3(s) => s.list_blobs(),
        }
    }

    pub fn list_uploads(&self) -> Result<Vec<(uuid::Uuid, u64)>> {
        match &self.engine {
            Engine::Fs(f) => f.list_uploads(),
            Engine::S3(s) => s.list_uploads(),
        }
    }

    /// A round trip to the storage, for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        match &self.engine {
            Engine::Fs(_) => Ok(()),
            Engine::S3(s) => s.ping().await,
        }
    }
}
