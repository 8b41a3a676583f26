//! What a server's blob store holds, whichever engine it is on: files under its data directory,
//! or objects under its prefix of a bucket (read with `object_store`, as berth writes them).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use object_store::ObjectStore as _;
use object_store::path::Path as Key;

use super::Server;

pub enum Storage {
    Files(PathBuf),
    S3 {
        store: Arc<object_store::aws::AmazonS3>,
        prefix: String,
        /// Where the small blobs kept in their rows are (`content::INLINE_MAX`).
        rows: Rows,
    },
}

/// The metadata database of a server on S3.
pub enum Rows {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Rows {
    /// The blobs kept in their rows: (digest, bytes).
    fn inline_blobs(&self) -> Vec<(String, Vec<u8>)> {
        const SQL: &str = "SELECT digest, data FROM blobs WHERE data IS NOT NULL";
        match self {
            Rows::Postgres(url) => {
                let url = url.clone();
                // The synchronous client runs a runtime of its own: not on a runtime's thread.
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    c.query(SQL, &[])
                        .unwrap()
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect()
                })
                .join()
                .unwrap()
            }
            Rows::Sqlite(path) => {
                let c = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                let mut q = c.prepare(SQL).unwrap();
                q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
        }
    }
}

/// Runs `fut` on a runtime of its own on a thread of its own (callers may be inside a runtime).
fn block<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
    .join()
    .unwrap()
}

impl Server {
    /// The blob store this server writes to.
    pub fn storage(&self) -> Storage {
        let var = |k: &str| self.env_var(k);
        match var("BERTH_STORAGE") {
            None => Storage::Files(self.data_dir.clone()),
            Some(url) => {
                let rest = url.strip_prefix("s3://").unwrap();
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let store = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_endpoint(var("BERTH_S3_ENDPOINT").unwrap())
                    .with_region(var("BERTH_S3_REGION").unwrap())
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(false)
                    .with_access_key_id(var("AWS_ACCESS_KEY_ID").unwrap())
                    .with_secret_access_key(var("AWS_SECRET_ACCESS_KEY").unwrap())
                    .build()
                    .unwrap();
                Storage::S3 {
                    store: Arc::new(store),
                    prefix: prefix.to_owned(),
                    rows: match self.database_url() {
                        Some(url) => Rows::Postgres(url),
                        None => Rows::Sqlite(self.data_dir.join("berth.db")),
                    },
                }
            }
        }
    }
}

impl Storage {
    fn key(prefix: &str, rest: &str) -> Key {
        if prefix.is_empty() {
            Key::from(rest)
        } else {
            Key::from(format!("{prefix}/{rest}"))
        }
    }

    /// Every stored blob: (its name as a digest, its bytes), in the blob store or (on S3) kept
    /// in its row.
    pub fn blobs(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = self.objects();
        if let Storage::S3 { rows, .. } = self {
            out.extend(rows.inline_blobs());
        }
        out
    }

    /// The blobs in the blob store: (name, bytes).
    pub fn objects(&self) -> Vec<(String, Vec<u8>)> {
        match self {
            Storage::Files(dir) => {
                let mut out = Vec::new();
                for alg in ["sha256", "sha512"] {
                    let base = dir.join("blobs").join(alg);
                    let Ok(shards) = std::fs::read_dir(&base) else {
                        continue;
                    };
                    for shard in shards {
                        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                            let f = f.unwrap();
                            out.push((
                                format!("{alg}:{}", f.file_name().to_str().unwrap()),
                                std::fs::read(f.path()).unwrap(),
                            ));
                        }
                    }
                }
                out
            }
            Storage::S3 { store, prefix, .. } => {
                let (store, dir) = (store.clone(), Storage::key(prefix, "blobs"));
                block(async move {
                    let listed: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap();
                    let mut out = Vec::new();
                    for m in listed {
                        let parts: Vec<String> =
                            m.location.parts().map(|p| p.as_ref().to_owned()).collect();
                        let [.., alg, _, hex] = parts.as_slice() else {
                            continue;
                        };
                        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
                        out.push((format!("{alg}:{hex}"), bytes.to_vec()));
                    }
                    out
                })
            }
        }
    }

    /// How many blobs are stored.
    pub fn blob_count(&self) -> usize {
        self.blobs().len()
    }

    /// How many upload sessions have bytes stored.
    pub fn upload_count(&self) -> usize {
        match self {
            Storage::Files(dir) => {
                std::fs::read_dir(dir.join("uploads")).map_or(0, Iterator::count)
            }
            Storage::S3 { store, prefix, .. } => {
                let (store, dir) = (store.clone(), Storage::key(prefix, "uploads"));
                block(async move {
                    let listed: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap();
                    let mut ids: Vec<String> = listed
                        .iter()
                        .filter_map(|m| {
                            let parts: Vec<String> =
                                m.location.parts().map(|p| p.as_ref().to_owned()).collect();
                            parts.len().checked_sub(2).map(|i| parts[i].clone())
                        })
                        .collect();
                    ids.sort();
                    ids.dedup();
                    ids.len()
                })
            }
        }
    }

    /// Writes bytes where blob `digest` would be, with no metadata row (as a crash can leave).
    pub fn plant_blob(&self, digest: &str, bytes: &[u8]) {
        let (alg, hex) = digest.split_once(':').unwrap();
        match self {
            Storage::Files(dir) => {
                let d = dir.join("blobs").join(alg).join(&hex[..2]);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(hex), bytes).unwrap();
            }
            Storage::S3 { store, prefix, .. } => {
                let key = Storage::key(prefix, &format!("blobs/{alg}/{}/{hex}", &hex[..2]));
                let (store, bytes) = (store.clone(), bytes.to_vec());
                block(async move { store.put(&key, bytes.into()).await.unwrap() });
            }
        }
    }
}
