//! S3-compatible blob storage (AWS S3, Garage, MinIO, Ceph RGW, …) through `object_store`.
//! Layout in the bucket, under an optional prefix:
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable
//! uploads/<uuid>/blob                       the whole blob, staged before it is placed
//! uploads/<uuid>/tail-<offset, 20 digits>   bytes of a session too few for a part yet
//! ```
//!
//! Nodes share nothing but the bucket and the database. An upload session is one multipart
//! upload of its staged object: each chunk, on whichever node receives it, adds parts of 5–10
//! MiB, and the bytes too few for a part wait in a tail object; the multipart id, the parts'
//! ETags, the tail and the SHA-256 state live in the session's row (`PartsState`), so
//! finishing reads nothing back but a tail. A monolithic push streams into the staged object
//! directly (one PUT to the blob's key when it fits a part). The blob's own key is written only
//! whole — by a server-side copy of the complete staged object, or that one PUT — after the
//! digest is verified, under the digest's lock, and only if no row already names the blob;
//! never in pieces (a delete of that key by garbage collection could otherwise cancel a
//! multipart upload in flight, as Garage does).
//!
//! Every call runs on a small runtime of this store's own, so the blocking callers (garbage
//! collection, commits on the blocking pool) and the async ones (request handlers) drive the
//! same HTTP client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};

use super::error::{Error, Result};

/// A blob's GET is let go when its reader has taken nothing for this long (`S3Store::stream`).
const PAUSE: Duration = Duration::from_secs(2);
use crate::types::Digest;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Longest one request may take (a stalled store's requests are given up after it).
    pub timeout: Duration,
}

/// Bytes per part of a multipart upload (S3 needs ≥ 5 MiB for every part but the last).
pub const PART: usize = 5 * 1024 * 1024;
/// Parts in flight per multipart upload: with `PART`, at most ~20 MiB per upload in memory.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<AmazonS3>,
    prefix: Option<String>,
    describe: String,
    /// The runtime every call runs on; shut down in the background when the store goes.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.inner.describe)
    }
}

fn unavailable(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error {
        // Displayed as `blob store: unavailable: …` (`super::error::UNAVAILABLE`).
        context: format!("unavailable: {what}"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Maps an `object_store` error: a missing object is `NotFound`, anything else means the bucket
/// cannot be used right now (answered 503).
fn s3_err(what: impl std::fmt::Display) -> impl FnOnce(object_store::Error) -> Error {
    move |e| match e {
        object_store::Error::NotFound { .. } => Error {
            context: what.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
        },
        e => unavailable(what, e),
    }
}

/// `[default]` credentials of `~/.aws/credentials`, when the environment has none.
fn shared_credentials() -> Option<(String, String, Option<String>)> {
    let home = std::env::var_os("HOME")?;
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(&home).join(".aws/credentials"));
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut in_profile = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
        } else if in_profile && let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

impl S3Store {
    pub fn open(options: &S3Options) -> Result<S3Store> {
        let invalid = |m: String| Error {
            context: "storage".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, m),
        };
        let rest = options
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid(format!("{:?} is not s3://BUCKET[/PREFIX]", options.url)))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (
                b,
                Some(p.trim_matches('/').to_owned()).filter(|p| !p.is_empty()),
            ),
            None => (rest, None),
        };
        if bucket.is_empty() {
            return Err(invalid(format!("{:?} names no bucket", options.url)));
        }
        // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, …
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let Some((id, secret, token)) = shared_credentials()
        {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(t) = token {
                b = b.with_token(t);
            }
        }
        if let Some(region) = &options.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &options.endpoint {
            b = b.with_endpoint(endpoint);
        }
        let allow_http = options
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        b = b
            .with_virtual_hosted_style_request(!options.path_style)
            // Fail in seconds, not minutes, when the store is down: the request gets 503.
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                backoff: object_store::BackoffConfig::default(),
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(options.timeout),
            );
        let store = b.build().map_err(|e| invalid(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-s3")
            .enable_all()
            .build()
            .map_err(|source| Error {
                context: "starting the S3 client's runtime".into(),
                source,
            })?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                prefix,
                describe: options.url.clone(),
                runtime: Some(runtime),
            }),
        })
    }

    pub fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.inner.runtime {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }

    /// Runs `fut` on the store's runtime and waits for it, from blocking code.
    fn block<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let handle = self.handle();
        let run = move || {
            handle
                .block_on(handle.spawn(fut))
                .map_err(|e| unavailable("S3 task", e))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }

    /// Runs `fut` on the store's runtime, from async code.
    async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        self.handle()
            .spawn(fut)
            .await
            .map_err(|e| unavailable("S3 task", e))
    }

    fn path(&self, key: &str) -> Path {
        match &self.inner.prefix {
            Some(p) => Path::from(format!("{p}/{key}")),
            None => Path::from(key),
        }
    }

    fn blob_path(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.path(&format!(
            "blobs/{}/{}/{hex}",
            d.algorithm().as_str(),
            &hex[..2]
        ))
    }

    fn upload_dir(&self, id: &uuid::Uuid) -> Path {
        self.path(&format!("uploads/{id}"))
    }

    /// A round trip to the bucket, for readiness probes.
    pub async fn ping(&self) -> Result<()> {
        let store = self.inner.store.clone();
        let probe = self.path("blobs/.ready");
        self.run(async move {
            match store.head(&probe).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(unavailable("bucket", e)),
            }
        })
        .await?
    }

    /// Bytes `start..start + len` of blob `d`, streamed. The object's GET has been answered when
    /// this returns, so a bucket that cannot serve it is an error here (the client gets a 503
    /// before any byte), not a body that breaks at its first byte.
    ///
    /// A reader that stops taking the bytes for `PAUSE` lets the GET go (its connection to the
    /// bucket closes) and, when it reads again, the rest comes from a new ranged GET: clients
    /// that never read hold no connection to the bucket.
    pub async fn stream(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> Result<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>> {
        if len == 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        let (store, path, what) = (self.inner.store.clone(), self.blob_path(d), d.to_string());
        let get = move |from: u64| {
            let (store, path) = (store.clone(), path.clone());
            let opts = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(from..start + len)),
                ..Default::default()
            };
            async move { store.get_opts(&path, opts).await }
        };
        let opened = self
            .handle()
            .spawn(get(start))
            .await
            .map_err(|e| unavailable(format!("reading blob {what}"), e))?;
        let mut body = Some(
            opened
                .map_err(s3_err(format!("reading blob {what}")))?
                .into_stream(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
        self.handle().spawn(async move {
            let mut sent = 0u64;
            let broken =
                |e: object_store::Error| std::io::Error::other(format!("blob {what}: {e}"));
            loop {
                // The reader's room first: a reader gone ends this, one that does not read for
                // `PAUSE` has its GET let go until it does.
                let room = match tokio::time::timeout(PAUSE, tx.reserve()).await {
                    Ok(Ok(room)) => room,
                    Ok(Err(_)) => return,
                    Err(_) => {
                        body = None;
                        match tx.reserve().await {
                            Ok(room) => room,
                            Err(_) => return,
                        }
                    }
                };
                let stream = match &mut body {
                    Some(b) => b,
                    None => match get(start + sent).await {
                        Ok(r) => body.insert(r.into_stream()),
                        Err(e) => return room.send(Err(broken(e))),
                    },
                };
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        sent += chunk.len() as u64;
                        room.send(Ok(chunk));
                    }
                    Some(Err(e)) => return room.send(Err(broken(e))),
                    None => {
                        if sent < len {
                            room.send(Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "blob object is shorter than its recorded size",
                            )));
                        }
                        return;
                    }
                }
            }
        });
        Ok(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
        )
        .boxed())
    }

    /// Starts writing object `path`; feed it with `Sink::put` and end with `Sink::finish`.
    /// Nothing reaches the bucket until the object outgrows one part: a small object is one PUT.
    fn sink(&self, path: Path) -> Sink {
        Sink {
            store: self.clone(),
            path,
            state: State::Buffered(Vec::new(), 0),
        }
    }

    /// A sink for the staged whole blob of upload (or push) `id`.
    pub fn staging_sink(&self, id: &uuid::Uuid) -> Sink {
        self.sink(self.staged_path(id))
    }

    fn staged_path(&self, id: &uuid::Uuid) -> Path {
        self.path(&format!("uploads/{id}/blob"))
    }

    /// Places the verified bytes of `sink` (the staged blob of `id`) as blob `d`. A blob that
    /// fits in one part is written to its key by one PUT; a larger one is completed as the
    /// staged object, copied server-side to its key, and the staged object goes. Either way the
    /// key is written whole, never in pieces. Call under the digest's lock, and write the
    /// metadata row only after this returns.
    pub fn place(&self, mut sink: Sink, id: &uuid::Uuid, d: &Digest) -> Result<()> {
        let to = self.blob_path(d);
        let what = format!("placing blob {d}");
        if let Some(payload) = sink.take_small() {
            let store = self.inner.store.clone();
            return self
                .block(async move { store.put(&to, payload).await })?
                .map(drop)
                .map_err(s3_err(what));
        }
        sink.finish()?;
        self.place_staged(id, d)
    }

    fn tail_path(&self, id: &uuid::Uuid, start: u64) -> Path {
        self.path(&format!("uploads/{id}/tail-{start:020}"))
    }

    /// Starts the staged object's multipart upload of session `id`, unless it has one.
    pub async fn start_parts(&self, id: &uuid::Uuid, state: &mut PartsState) -> Result<()> {
        if state.upload.is_some() {
            return Ok(());
        }
        let (store, path) = (self.inner.store.clone(), self.staged_path(id));
        let upload = self
            .run(async move { store.create_multipart(&path).await })
            .await?
            .map_err(s3_err(format!("starting upload {id}")))?;
        state.upload = Some(upload);
        Ok(())
    }

    /// Writes the parts of session `id` that follow `state`'s (one in flight while the next
    /// gathers).
    pub fn part_writer(&self, id: &uuid::Uuid, state: &PartsState) -> Result<PartWriter> {
        let upload = state.upload.clone().ok_or_else(|| Error {
            context: format!("upload {id}"),
            source: std::io::Error::other("no multipart upload started"),
        })?;
        Ok(PartWriter {
            store: self.clone(),
            path: self.staged_path(id),
            upload,
            next: state.parts.len(),
            in_flight: None,
            done: Vec::new(),
        })
    }

    /// The bytes of session `id` not yet in a part (`state.tail`).
    pub async fn read_tail(&self, id: &uuid::Uuid, state: &PartsState) -> Result<Bytes> {
        let Some((start, len)) = state.tail else {
            return Ok(Bytes::new());
        };
        let (store, path) = (self.inner.store.clone(), self.tail_path(id, start));
        let bytes = self
            .run(async move { store.get(&path).await?.bytes().await })
            .await?
            .map_err(s3_err(format!("reading upload {id}")))?;
        if bytes.len() as u64 != len {
            return Err(Error {
                context: format!("upload {id}"),
                source: std::io::Error::other(format!(
                    "the tail at {start} holds {} bytes, not {len}",
                    bytes.len()
                )),
            });
        }
        Ok(bytes)
    }

    /// Writes the bytes of session `id` from `start` that are too few for a part (one PUT, under a
    /// key of that offset, so that a failed request never overwrites a committed tail).
    pub async fn write_tail(&self, id: &uuid::Uuid, start: u64, bytes: Bytes) -> Result<()> {
        let (store, path) = (self.inner.store.clone(), self.tail_path(id, start));
        self.run(async move { store.put(&path, bytes.into()).await })
            .await?
            .map(drop)
            .map_err(s3_err(format!("writing upload {id}")))
    }

    /// Removes a tail that a newer committed state replaced (best effort).
    pub fn drop_tail(&self, id: &uuid::Uuid, start: u64) {
        let (store, path) = (self.inner.store.clone(), self.tail_path(id, start));
        drop(
            self.handle()
                .spawn(async move { store.delete(&path).await }),
        );
    }

    /// Completes the staged object of session `id` from its parts.
    pub fn complete_parts(&self, id: &uuid::Uuid, state: &PartsState) -> Result<()> {
        let (store, path) = (self.inner.store.clone(), self.staged_path(id));
        let upload = state.upload.clone().unwrap_or_default();
        let parts: Vec<PartId> = state
            .parts
            .iter()
            .map(|e| PartId {
                content_id: e.clone(),
            })
            .collect();
        self.block(async move { store.complete_multipart(&path, &upload, parts).await })?
            .map(drop)
            .map_err(s3_err(format!("completing upload {id}")))
    }

    /// Abandons the multipart upload of session `id`, if it has one (best effort).
    pub fn abort_parts(&self, id: &uuid::Uuid, state: &PartsState) {
        if let Some(upload) = state.upload.clone() {
            let (store, path) = (self.inner.store.clone(), self.staged_path(id));
            drop(
                self.handle()
                    .spawn(async move { store.abort_multipart(&path, &upload).await }),
            );
        }
    }

    /// Hashes the staged object of session `id` (a digest of another algorithm than the one
    /// hashed on the way in).
    pub fn hash_staged(
        &self,
        id: &uuid::Uuid,
        mut hasher: crate::types::Hasher,
    ) -> Result<crate::types::Digest> {
        let (store, path) = (self.inner.store.clone(), self.staged_path(id));
        let id = *id;
        self.block(async move {
            let mut body = store
                .get(&path)
                .await
                .map_err(s3_err(format!("reading upload {id}")))?
                .into_stream();
            while let Some(chunk) = body.next().await {
                hasher.update(&chunk.map_err(s3_err(format!("reading upload {id}")))?);
            }
            Ok::<_, Error>(hasher.finish())
        })?
    }

    /// Places the complete staged object of session `id` as blob `d`: a server-side copy to
    /// the blob's key, then the staged object goes. Under the digest's lock, before its row.
    pub fn place_staged(&self, id: &uuid::Uuid, d: &Digest) -> Result<()> {
        let store = self.inner.store.clone();
        let (from, to) = (self.staged_path(id), self.blob_path(d));
        let what = format!("placing blob {d}");
        self.block(async move {
            store.copy(&from, &to).await.map_err(s3_err(what.clone()))?;
            match store.delete(&from).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_err(what)(e)),
            }
        })?
    }

    /// Aborts the multipart upload that session `id`'s state (`PartsState` as text) names, and
    /// removes its objects. A multipart upload the bucket no longer knows is already gone; one
    /// the bucket would not abort is said in the log (its parts wait for the bucket's own
    /// clean-up) and the objects go anyway.
    pub fn discard_upload(&self, id: &uuid::Uuid, state: Option<&str>) -> Result<()> {
        let upload = state
            .and_then(|t| serde_json::from_str::<PartsState>(t).ok())
            .and_then(|s| s.upload);
        if let Some(upload) = upload {
            let (store, path) = (self.inner.store.clone(), self.staged_path(id));
            match self.block(async move { store.abort_multipart(&path, &upload).await })? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "aborting an expired upload's multipart upload")
                }
            }
        }
        self.remove_upload(id)
    }

    /// Removes every object of upload `id` (tails, the staged object).
    pub fn remove_upload(&self, id: &uuid::Uuid) -> Result<()> {
        let (store, dir) = (self.inner.store.clone(), self.upload_dir(id));
        let id = *id;
        self.block(async move {
            let listed: Vec<object_store::ObjectMeta> = store
                .list(Some(&dir))
                .try_collect()
                .await
                .map_err(s3_err(format!("listing upload {id}")))?;
            for m in listed {
                match store.delete(&m.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(s3_err(format!("removing upload {id}"))(e)),
                }
            }
            Ok(())
        })?
    }

    pub fn blob_exists(&self, d: &Digest) -> Result<bool> {
        let (store, path) = (self.inner.store.clone(), self.blob_path(d));
        match self.block(async move { store.head(&path).await })? {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(unavailable(format!("blob {d}"), e)),
        }
    }

    /// Removes blob `d`'s object. Call only under the digest's lock after checking that no
    /// metadata row names it.
    pub fn remove_blob(&self, d: &Digest) -> Result<()> {
        let (store, path) = (self.inner.store.clone(), self.blob_path(d));
        match self.block(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(format!("removing blob {d}"), e)),
        }
    }

    /// Every blob object, for the orphan sweep of garbage collection.
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        let (store, dir) = (self.inner.store.clone(), self.path("blobs"));
        let listed: Vec<object_store::ObjectMeta> = self
            .block(async move { store.list(Some(&dir)).try_collect().await })?
            .map_err(s3_err("listing blobs"))?;
        Ok(listed
            .iter()
            .filter_map(|m| {
                let parts: Vec<String> =
                    m.location.parts().map(|p| p.as_ref().to_owned()).collect();
                match parts.as_slice() {
                    [.., alg, _, hex] => format!("{alg}:{hex}").parse().ok(),
                    _ => None,
                }
            })
            .collect())
    }

    /// Upload sessions with chunks in the bucket and the age of their newest chunk, in seconds.
    pub fn list_uploads(&self) -> Result<Vec<(uuid::Uuid, u64)>> {
        let (store, dir) = (self.inner.store.clone(), self.path("uploads"));
        let listed: Vec<object_store::ObjectMeta> = self
            .block(async move { store.list(Some(&dir)).try_collect().await })?
            .map_err(s3_err("listing uploads"))?;
        let now = chrono_now();
        let mut ages: std::collections::HashMap<uuid::Uuid, u64> = std::collections::HashMap::new();
        for m in &listed {
            let parts: Vec<_> = m.location.parts().collect();
            let Some(id) = parts
                .len()
                .checked_sub(2)
                .and_then(|i| uuid::Uuid::parse_str(parts[i].as_ref()).ok())
            else {
                continue;
            };
            let age = u64::try_from(now - m.last_modified.timestamp()).unwrap_or(0);
            let e = ages.entry(id).or_insert(age);
            *e = (*e).min(age);
        }
        Ok(ages.into_iter().collect())
    }
}

fn chrono_now() -> i64 {
    crate::store::now()
}

/// Where an upload session stands in the bucket, kept in its database row so that any node
/// takes the next request: the staged object's multipart upload and its parts' ETags, the
/// bytes too few for a part (a tail object from offset `tail.0`, `tail.1` bytes), and the
/// SHA-256 state of everything so far (`types::ResumableSha256` as text).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PartsState {
    pub upload: Option<String>,
    pub parts: Vec<String>,
    pub tail: Option<(u64, u64)>,
    pub hash: String,
}

/// Writes parts of a session's multipart upload, one in flight while the next is gathered.
pub struct PartWriter {
    store: S3Store,
    path: Path,
    upload: String,
    next: usize,
    in_flight: Option<tokio::task::JoinHandle<object_store::Result<PartId>>>,
    done: Vec<String>,
}

impl PartWriter {
    pub async fn put(&mut self, data: Bytes) -> Result<()> {
        self.settle().await?;
        let (store, path, upload, idx) = (
            self.store.inner.store.clone(),
            self.path.clone(),
            self.upload.clone(),
            self.next,
        );
        self.next += 1;
        self.in_flight = Some(
            self.store
                .handle()
                .spawn(async move { store.put_part(&path, &upload, idx, data.into()).await }),
        );
        Ok(())
    }

    async fn settle(&mut self) -> Result<()> {
        if let Some(h) = self.in_flight.take() {
            let part = h
                .await
                .map_err(|e| unavailable("S3 task", e))?
                .map_err(s3_err("writing a part"))?;
            self.done.push(part.content_id);
        }
        Ok(())
    }

    /// The ETags of the parts written, in order, once all are stored.
    pub async fn finish(mut self) -> Result<Vec<String>> {
        self.settle().await?;
        Ok(std::mem::take(&mut self.done))
    }
}

/// An object being written; invisible until `finish`.
pub struct Sink {
    store: S3Store,
    path: Path,
    state: State,
}

enum State {
    /// Up to one part, in memory: the bytes and their count.
    Buffered(Vec<Bytes>, usize),
    /// A multipart upload under way.
    Streaming(WriteMultipart),
    Done,
}

impl Sink {
    /// Adds bytes; waits while too many parts are in flight (bounded memory).
    pub async fn put(&mut self, bytes: Bytes) -> Result<()> {
        if let State::Buffered(parts, len) = &mut self.state {
            if *len + bytes.len() <= PART {
                *len += bytes.len();
                parts.push(bytes);
                return Ok(());
            }
            // Outgrew one part: a multipart upload takes what was buffered, then the rest.
            let (store, path) = (self.store.inner.store.clone(), self.path.clone());
            let what = path.to_string();
            let upload = self
                .store
                .run(async move { store.put_multipart(&path).await })
                .await?
                .map_err(s3_err(what))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            for b in parts.drain(..) {
                w.put(b);
            }
            self.state = State::Streaming(w);
        }
        let State::Streaming(w) = &mut self.state else {
            return Ok(());
        };
        w.wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(s3_err("writing to the bucket"))?;
        w.put(bytes);
        Ok(())
    }

    /// The bytes of a sink that holds at most `max` of them, all in memory (nothing was sent to
    /// the bucket), which leaves it with nothing; otherwise `None`, and the sink as it was.
    pub fn take_bytes(&mut self, max: usize) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Buffered(parts, len) if len <= max => Some(parts.concat()),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The whole object, if it never outgrew one part.
    fn take_small(&mut self) -> Option<object_store::PutPayload> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Buffered(parts, _) => Some(parts.into_iter().collect()),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Completes the object: it is visible once this returns.
    pub fn finish(mut self) -> Result<()> {
        let store = self.store.clone();
        store.block(self.finish_async_inner())?
    }

    /// Like `finish`, from async code.
    pub async fn finish_async(mut self) -> Result<()> {
        let store = self.store.clone();
        store.run(self.finish_async_inner()).await?
    }

    fn finish_async_inner(&mut self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (store, path) = (self.store.inner.store.clone(), self.path.clone());
        let small = self.take_small();
        let state = std::mem::replace(&mut self.state, State::Done);
        async move {
            match (small, state) {
                (Some(payload), _) => store
                    .put(&path, payload)
                    .await
                    .map(drop)
                    .map_err(s3_err("writing an object")),
                (None, State::Streaming(w)) => w
                    .finish()
                    .await
                    .map(drop)
                    .map_err(s3_err("completing an object")),
                (None, _) => Ok(()),
            }
        }
    }

    /// Drops what was written; nothing becomes visible.
    pub fn abort(self) {
        drop(self);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let State::Streaming(w) = std::mem::replace(&mut self.state, State::Done) {
            drop(self.store.handle().spawn(async move { w.abort().await }));
        }
    }
}
