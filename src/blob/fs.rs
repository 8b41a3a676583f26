//! Filesystem blob storage. Layout under the data directory:
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable
//! uploads/<uuid>                            upload sessions being written
//! locks/<first two hex of digest>.lock      256 lock stripes (flock), see `FsStore::lock`
//! ```
//!
//! Uploads and blobs share one filesystem, so committing an upload is a `rename`.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::{Context as _, Result};
use crate::types::Digest;

#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

/// An exclusive lock on one stripe of digests, held across processes (the server and `berth gc`)
/// while a blob's file and its metadata row change together. Released on drop.
pub struct BlobLock {
    file: File,
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first just makes it prompt.
        let _ = self.file.unlock();
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FsStore {
    /// Opens the store under `data_dir`, creating its directories.
    pub fn open(data_dir: &Path) -> Result<FsStore> {
        for sub in ["blobs/sha256", "blobs/sha512", "uploads", "locks"] {
            let p = data_dir.join(sub);
            fs::create_dir_all(&p).context(|| format!("creating {}", p.display()))?;
        }
        Ok(FsStore {
            root: data_dir.to_owned(),
        })
    }

    /// Only the lock stripes under `data_dir` (the blobs live elsewhere).
    pub fn open_locks(data_dir: &Path) -> Result<FsStore> {
        let p = data_dir.join("locks");
        fs::create_dir_all(&p).context(|| format!("creating {}", p.display()))?;
        Ok(FsStore {
            root: data_dir.to_owned(),
        })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &uuid::Uuid) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    /// Takes the lock stripe for `d`. Blocking: call from a blocking context.
    pub fn lock(&self, d: &Digest) -> Result<BlobLock> {
        let path = self
            .root
            .join("locks")
            .join(format!("{}.lock", &d.hex()[..2]));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .context(|| format!("opening lock {}", path.display()))?;
        file.lock()
            .context(|| format!("locking {}", path.display()))?;
        Ok(BlobLock { file })
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).context(|| format!("opening blob {d}"))
    }

    /// The path of a committed blob's file, if it is there (no descriptor held).
    pub fn blob_file(&self, d: &Digest) -> Result<PathBuf> {
        let p = self.blob_path(d);
        fs::metadata(&p).context(|| format!("opening blob {d}"))?;
        Ok(p)
    }

    pub fn blob_file_exists(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Removes a committed blob's file. Call only under `lock(d)` after checking that no metadata
    /// row names it.
    pub fn remove_blob(&self, d: &Digest) -> Result<()> {
        match fs::remove_file(self.blob_path(d)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.context(|| format!("removing blob {d}")),
        }
    }

    /// Creates the empty file of a new upload session.
    pub fn create_upload(&self, id: &uuid::Uuid) -> Result<()> {
        File::create_new(self.upload_path(id)).context(|| format!("creating upload {id}"))?;
        Ok(())
    }

    /// Opens an upload's file for appending, after cutting it back to `len` (dropping the bytes
    /// of a request that failed half-way).
    pub fn open_upload(&self, id: &uuid::Uuid, len: u64) -> Result<File> {
        let path = self.upload_path(id);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .context(|| format!("opening upload {id}"))?;
        f.set_len(len)
            .context(|| format!("truncating upload {id}"))?;
        let mut f = f;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len))
            .context(|| format!("seeking upload {id}"))?;
        Ok(f)
    }

    pub fn open_upload_read(&self, id: &uuid::Uuid) -> Result<File> {
        File::open(self.upload_path(id)).context(|| format!("reading upload {id}"))
    }

    /// Length of an upload's file, `None` if it is gone.
    pub fn upload_len(&self, id: &uuid::Uuid) -> Result<Option<u64>> {
        match fs::metadata(self.upload_path(id)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context(|| format!("reading upload {id}")),
        }
    }

    pub fn remove_upload(&self, id: &uuid::Uuid) -> Result<()> {
        match fs::remove_file(self.upload_path(id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.context(|| format!("removing upload {id}")),
        }
    }

    /// Makes a finished upload the blob `d`: rename it into place, then fsync the file and its
    /// directory. Call under `lock(d)`, and write the metadata row only after this returns.
    ///
    /// Renaming before the data fsync is safe because nothing reads a blob file that no row
    /// names: after a power cut between the rename and the fsyncs, the file is an orphan (its
    /// bytes perhaps incomplete) that a later push of the same digest replaces and garbage
    /// collection removes. The order pays off on journalling filesystems such as ext4: the
    /// file's fsync commits the rename in the same journal transaction, so the directory's
    /// fsync finds nothing left to write and one journal commit covers both.
    pub fn commit_upload(&self, id: &uuid::Uuid, d: &Digest) -> Result<()> {
        let src = self.upload_path(id);
        let dst = self.blob_path(d);
        let dir = dst.parent().unwrap_or(&self.root).to_owned();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).context(|| format!("syncing {}", parent.display()))?;
            }
        }
        fs::rename(&src, &dst).context(|| format!("committing blob {d}"))?;
        File::open(&dst)
            .and_then(|f| f.sync_all())
            .context(|| format!("syncing blob {d}"))?;
        sync_dir(&dir).context(|| format!("syncing {}", dir.display()))
    }

    /// Every committed blob file, for the orphan sweep of garbage collection.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let base = self.root.join("blobs").join(alg);
            for shard in fs::read_dir(&base).context(|| format!("listing {}", base.display()))? {
                let shard = shard
                    .context(|| format!("listing {}", base.display()))?
                    .path();
                if !shard.is_dir() {
                    continue;
                }
                for f in fs::read_dir(&shard).context(|| format!("listing {}", shard.display()))? {
                    let name = f
                        .context(|| format!("listing {}", shard.display()))?
                        .file_name();
                    // Anything that is not a well-formed digest is not ours; leave it alone.
                    if let Some(d) = name
                        .to_str()
                        .and_then(|n| format!("{alg}:{n}").parse().ok())
                    {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Upload files and their ages in seconds, for the orphan sweep of garbage collection.
    pub fn list_uploads(&self) -> Result<Vec<(uuid::Uuid, u64)>> {
        let base = self.root.join("uploads");
        let mut out = Vec::new();
        for f in fs::read_dir(&base).context(|| format!("listing {}", base.display()))? {
            let f = f.context(|| format!("listing {}", base.display()))?;
            let Some(id) = f
                .file_name()
                .to_str()
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
            else {
                continue;
            };
            let age = f
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .map_or(0, |e| e.as_secs());
            out.push((id, age));
        }
        Ok(out)
    }
}
