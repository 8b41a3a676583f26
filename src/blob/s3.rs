//! S3-compatible blob storage (AWS S3, Garage, MinIO, Ceph RGW, …) through `object_store`.
//! Layout in the bucket, under an optional prefix:
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable
//! uploads/<uuid>/<offset, 20 digits>        one object per chunk an upload session received
//! uploads/<uuid>/blob                       the whole blob, staged before it is placed
//! ```
//!
//! Nodes share nothing but the bucket and the database: a chunk is its own object, written by
//! whichever node received it (a multipart upload, so any chunk size works and memory stays
//! bounded), and the upload's committed size lives in the session's row. Finishing an upload
//! reads the chunks in order, hashing them, into the staged object; a monolithic push streams
//! into it directly. The blob's own key is written only by a server-side copy of the staged
//! object, after the digest is verified, under the digest's lock, and only if no row already
//! names the blob; nothing is ever written to a blob's key in pieces (a delete of that key by
//! garbage collection could otherwise cancel a multipart upload in flight, as Garage does).
//!
//! Every call runs on a small runtime of this store's own, so the blocking callers (garbage
//! collection, commits on the blocking pool) and the async ones (request handlers) drive the
//! same HTTP client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};

use super::{Error, Result};
use crate::types::Digest;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
}

/// Bytes per part of a multipart upload (S3 needs ≥ 5 MiB for every part but the last).
const PART: usize = 5 * 1024 * 1024;
/// Parts in flight per multipart upload: with `PART`, at most ~20 MiB per upload in memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes gathered before they go to a sink.
const GATHER: usize = 1024 * 1024;

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
        // Displayed as `blob store: unavailable: …` (`super::UNAVAILABLE`).
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
            Some((b, p)) => (b, Some(p.trim_matches('/').to_owned()).filter(|p| !p.is_empty())),
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
                    .with_timeout(Duration::from_secs(120)),
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
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
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
        self.path(&format!("blobs/{}/{}/{hex}", d.algorithm().as_str(), &hex[..2]))
    }

    fn upload_dir(&self, id: &uuid::Uuid) -> Path {
        self.path(&format!("uploads/{id}"))
    }

    fn chunk_path(&self, id: &uuid::Uuid, offset: u64) -> Path {
        self.path(&format!("uploads/{id}/{offset:020}"))
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

    /// Bytes `start..start + len` of blob `d`, streamed.
    pub fn stream(
        &self,
        d: &Digest,
        start: u64,
        len: u64,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
        let (store, path, what) = (self.inner.store.clone(), self.blob_path(d), d.to_string());
        if len > 0 {
            self.handle().spawn(async move {
                let opts = object_store::GetOptions {
                    range: Some(object_store::GetRange::Bounded(start..start + len)),
                    ..Default::default()
                };
                let mut body = match store.get_opts(&path, opts).await {
                    Ok(r) => r.into_stream(),
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(format!("blob {what}: {e}")))).await;
                        return;
                    }
                };
                let mut sent = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| std::io::Error::other(format!("blob {what}: {e}")));
                    if let Ok(c) = &chunk {
                        sent += c.len() as u64;
                    }
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                if sent < len {
                    let _ = tx
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "blob object is shorter than its recorded size",
                        )))
                        .await;
                }
            });
        }
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
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

    /// A sink for the chunk of upload `id` that starts at `offset`.
    pub fn chunk_sink(&self, id: &uuid::Uuid, offset: u64) -> Sink {
        self.sink(self.chunk_path(id, offset))
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
        let store = self.inner.store.clone();
        let from = self.staged_path(id);
        self.block(async move {
            store.copy(&from, &to).await.map_err(s3_err(what.clone()))?;
            match store.delete(&from).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(s3_err(what)(e)),
            }
        })?
    }

    /// The chunks of upload `id` that make up its first `size` bytes, in order: `(offset, len)`.
    /// Objects of chunks whose request failed after they were written are skipped (a later
    /// chunk at the same offset replaced them, or the committed size ends before them).
    pub fn chunks(&self, id: &uuid::Uuid, size: u64) -> Result<Vec<(u64, u64)>> {
        let (store, dir) = (self.inner.store.clone(), self.upload_dir(id));
        let listed: Vec<object_store::ObjectMeta> = self
            .block(async move { store.list(Some(&dir)).try_collect().await })?
            .map_err(s3_err(format!("listing upload {id}")))?;
        let mut by_offset = std::collections::BTreeMap::new();
        for m in listed {
            if let Some(off) = m.location.filename().and_then(|n| n.parse::<u64>().ok()) {
                by_offset.insert(off, m.size);
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < size {
            let Some(&len) = by_offset.get(&at) else {
                return Err(Error {
                    context: format!("upload {id}"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no chunk at offset {at}"),
                    ),
                });
            };
            if len == 0 || at + len > size {
                return Err(Error {
                    context: format!("upload {id}"),
                    source: std::io::Error::other(format!(
                        "chunk at {at} ({len} bytes) does not end within the committed {size} bytes"
                    )),
                });
            }
            out.push((at, len));
            at += len;
        }
        Ok(out)
    }

    /// Streams the chunks of upload `id` in order into `hasher` and, if given, `sink`.
    pub fn copy_chunks(
        &self,
        id: &uuid::Uuid,
        chunks: &[(u64, u64)],
        mut hasher: crate::types::Hasher,
        mut sink: Option<Sink>,
    ) -> Result<(crate::types::Hasher, Option<Sink>)> {
        let store = self.inner.store.clone();
        let paths: Vec<Path> = chunks.iter().map(|(o, _)| self.chunk_path(id, *o)).collect();
        let id = *id;
        self.block(async move {
            // The HTTP client hands out small slices of larger read buffers; they are gathered
            // into buffers of our own, so that a part in flight pins only its own bytes.
            let mut gathered = bytes::BytesMut::with_capacity(GATHER);
            for path in paths {
                let mut body = store
                    .get(&path)
                    .await
                    .map_err(s3_err(format!("reading upload {id}")))?
                    .into_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(s3_err(format!("reading upload {id}")))?;
                    hasher.update(&chunk);
                    if let Some(s) = &mut sink {
                        gathered.extend_from_slice(&chunk);
                        if gathered.len() >= GATHER {
                            s.put(gathered.split().freeze()).await?;
                            gathered.reserve(GATHER);
                        }
                    }
                }
            }
            if let Some(s) = &mut sink
                && !gathered.is_empty()
            {
                s.put(gathered.split().freeze()).await?;
            }
            Ok::<_, Error>((hasher, sink))
        })?
    }

    /// Removes every chunk of upload `id`.
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
                let parts: Vec<String> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
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
                (None, State::Streaming(w)) => {
                    w.finish().await.map(drop).map_err(s3_err("completing an object"))
                }
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
