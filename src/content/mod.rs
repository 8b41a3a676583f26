//! OCI content rules: blobs, upload sessions, manifests, tags, referrers and garbage collection.
//!
//! `ContentService` owns the metadata store and the blob store and is the only code that changes
//! either. It takes validated values (`RepositoryName`, `Digest`, `Reference`) and byte streams;
//! it knows nothing of HTTP.
//!
//! Invariants:
//! * A repository serves a blob only if it is linked to it (pushed or mounted there).
//! * A blob is committed by: verify digest → take the digest's lock → rename the file into place
//!   and fsync it and its directory (if not already stored) → insert and link it in one metadata
//!   transaction → release the lock. Only a row makes a blob file readable. Garbage collection
//!   removes a file only under the same lock after seeing no metadata row, so the two never race.
//! * Nothing becomes visible before it is durable: blob files are fsync'd before the row that
//!   names them is written, SQLite commits with `synchronous=FULL`.

mod budget;
mod error;
mod fair;
pub mod gc;
mod lock;
pub mod manifest;

pub use error::{Error, Result};
pub(crate) use lock::lock_digest;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::task::AbortOnDropHandle;

pub use crate::types::{
    Algorithm, Digest, DigestError, Hasher, NameError, Reference, ReferenceError, RepositoryName,
    Tag, TagError,
};

use crate::blob::{BlobStore, Engine};
use crate::store::{self, ManifestRow, MetadataStore, NewManifest, ReferrerRow};

/// What the server keeps in memory about an upload session between requests: how far it got and
/// the SHA-256 state of those bytes. Lost on restart, in which case the file is hashed again at
/// the end.
struct Session {
    offset: u64,
    hasher: Option<Hasher>,
}

/// A session's entry: `None` while a request is writing to it, with the token of that request's
/// `Hold`.
type Sessions = HashMap<uuid::Uuid, (u64, Option<Session>)>;

/// A request's hold on a session it took (`take_session`). Put back with `put_session`; dropped
/// without (the request was cancelled: a reset HTTP/2 stream, a connection that went away), the
/// node forgets the session, so the next request resumes from the stored bytes instead of being
/// told, until the upload expires, that another request is writing to it.
struct Hold {
    inner: Arc<Inner>,
    id: uuid::Uuid,
    token: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut map = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if matches!(map.get(&self.id), Some((t, None)) if *t == self.token) {
            map.remove(&self.id);
        }
    }
}

/// An upload file of a request still streaming; removed if the request is dropped meanwhile,
/// and not created if it is dropped before the (blocking) creation runs: both sides decide
/// under `file`'s lock.
struct Orphan {
    blobs: BlobStore,
    id: Option<uuid::Uuid>,
    file: Arc<Mutex<OrphanFile>>,
}

#[derive(Default)]
struct OrphanFile {
    created: bool,
    cancelled: bool,
}

impl Orphan {
    /// Creates the upload file, unless the request is gone already.
    fn create(file: &Mutex<OrphanFile>, fs: &crate::blob::FsStore, id: &uuid::Uuid) -> Result<()> {
        let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
        if f.cancelled {
            return Err(Error::Task("the request was cancelled".into()));
        }
        fs.create_upload(id)?;
        f.created = true;
        Ok(())
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let mut f = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        f.cancelled = true;
        if f.created
            && let Err(e) = self.blobs.remove_upload(&id)
        {
            tracing::warn!(upload = %id, error = %e, "removing a cancelled upload's file");
        }
    }
}

/// Tokens of `Hold`s.
static HOLDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Clone)]
pub struct ContentService {
    inner: Arc<Inner>,
}

struct Inner {
    meta: MetadataStore,
    blobs: BlobStore,
    sessions: Mutex<Sessions>,
    uploads_active: AtomicI64,
    /// Memory for upload bodies in flight (`--upload-memory`): a request reserves what its
    /// body can hold in memory before it reads a byte, and waits, unread (the client held back
    /// by TCP), while the rest is taken.
    upload_memory: Arc<budget::Budget>,
    /// Memory for answers' chunks not yet written (`--download-memory`).
    download_memory: Arc<budget::Budget>,
    /// Turns to read a small blob's bytes from its row (`ROW_READS`).
    row_reads: Arc<tokio::sync::Semaphore>,
}

/// Reads of small blobs' rows at once per node: a quarter of the database pool's default
/// (16), so pulls of small blobs, however many, leave the pool to everything else.
const ROW_READS: usize = 4;

/// How long an upload request waits for upload memory before it is told to retry (429 with
/// `Retry-After`), well inside the idle timeout that would otherwise end its connection.
const UPLOAD_MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// On S3, a blob of at most this many bytes (image configs, small layers) is kept in its metadata
/// row, written in the transaction that links it: its push costs no PUT to the bucket and no digest
/// lock, and its pull no GET. Pushed before, or through an upload of several requests, a small
/// blob is in the bucket as any other; its link (`store::BlobLink::in_row`) says which.
pub const INLINE_MAX: u64 = 16 * 1024;

/// The default of `--upload-memory`.
const UPLOAD_MEMORY_DEFAULT: u64 = 256 << 20;

/// An upload request's body, taking upload memory as it arrives (`ContentService::metered`).
pub type UploadBody<S> = budget::Metered<S>;

/// A blob opened for reading.
pub struct BlobReader {
    source: Source,
    pub size: u64,
    /// Where the size came from, to forget if the bytes turn out gone (see `bytes_gone`).
    meta: MetadataStore,
    repo: RepositoryName,
    /// The node's download memory, and the client it is reserved for.
    memory: Arc<budget::Budget>,
    client: Client,
}

/// Who an answer's download memory is held for: the client's address (for its share), what
/// closes its connection (to take the memory back if it stops reading; see
/// `budget::Budget::reserve_or_reclaim`), and when the answer last wrote a chunk.
#[derive(Clone)]
pub struct Client {
    peer: Option<std::net::IpAddr>,
    hangup: Option<crate::types::Hangup>,
    written: Arc<budget::Progress>,
}

impl Client {
    pub fn new(peer: Option<std::net::IpAddr>, hangup: Option<crate::types::Hangup>) -> Client {
        Client {
            peer,
            hangup,
            written: budget::Progress::new(),
        }
    }

    pub fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer
    }
}

/// Memory for blob bytes read for answers and not yet written to their sockets, shared by every
/// pull of the node (`--download-memory`, this by default): each chunk takes its share before
/// it is read (from a file) or handed on (from a bucket) and gives it back when the connection
/// has written it, so clients that stop reading (an HTTP/2 stream whose window never opens, a
/// socket never read) hold at most this between them, one address at most a quarter.
const DOWNLOAD_MEMORY_DEFAULT: u64 = 256 << 20;

/// How long a chunk waits for download memory before its answer is broken off (the client
/// retries; admission lets newcomers take the places of the slow connections that hold it).
const DOWNLOAD_MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes `bytes` of download memory for `client`, waiting at most `DOWNLOAD_MEMORY_WAIT`.
async fn download_memory(
    memory: &budget::Budget,
    bytes: usize,
    client: &Client,
) -> std::io::Result<budget::Reservation> {
    let reserved = match &client.hangup {
        Some(hangup) => {
            memory
                .reserve_or_reclaim(
                    bytes as u64,
                    client.peer,
                    DOWNLOAD_MEMORY_WAIT,
                    (hangup, &client.written),
                )
                .await
        }
        None => {
            memory
                .reserve(bytes as u64, client.peer, DOWNLOAD_MEMORY_WAIT)
                .await
        }
    };
    reserved.ok_or_else(|| {
        std::io::Error::other("the registry's download memory is held by clients that do not read")
    })
}

/// The memory for the next chunk of a file's answer (`n` bytes, or what it can have, and no
/// more than about two seconds of what its client drains, `budget::Progress::drain_size`): the
/// memory of the chunk before, once that is written (`after`), made to fit without waiting
/// (`budget::Budget::refit`), so an answer that has begun never queues behind others for
/// memory again. Reading ahead (once `AHEAD_AFTER` is written), it takes fresh memory if that
/// comes first.
async fn next_memory(
    memory: &budget::Budget,
    n: u64,
    client: &Client,
    after: Option<tokio::sync::oneshot::Receiver<budget::Reservation>>,
) -> std::io::Result<budget::Reservation> {
    let fit = || {
        client
            .written
            .drain_size(PIECE as u64)
            .map_or(n, |most| n.min(most))
    };
    let carried = match after {
        Some(after) if client.written.bytes() < AHEAD_AFTER => after.await.ok(),
        Some(mut after) => {
            let fresh = download_memory(memory, fit() as usize, client);
            tokio::pin!(fresh);
            tokio::select! {
                carried = &mut after => match carried {
                    Ok(carried) => Some(carried),
                    Err(_) => return fresh.await,
                },
                fresh = &mut fresh => return fresh,
            }
        }
        None => None,
    };
    match carried {
        Some(mut r) => {
            memory.refit(&mut r, fit());
            Ok(r)
        }
        None => download_memory(memory, fit() as usize, client).await,
    }
}

/// Download memory taken for one chunk of `len` bytes of an answer: when the chunk is dropped
/// (written out), its rate is noted in the answer's progress, and its memory is handed to the
/// answer's next read (`next`) or given back — given back too when others wait who are owed
/// it (`budget::Reservation::owed_to_waiters`; a chunk drained under `SLOW_RATE` is slow).
struct ChunkMemory {
    reservation: Option<budget::Reservation>,
    next: Option<tokio::sync::oneshot::Sender<budget::Reservation>>,
    len: u64,
    written: Arc<budget::Progress>,
    /// When it was made (`budget::clock_ms`).
    made: u64,
}

/// A chunk drained slower than this (bytes/s) was drained slowly.
const SLOW_RATE: u64 = 64 * 1024;

impl ChunkMemory {
    fn new(
        reservation: budget::Reservation,
        len: u64,
        client: &Client,
        next: Option<tokio::sync::oneshot::Sender<budget::Reservation>>,
    ) -> ChunkMemory {
        ChunkMemory {
            reservation: Some(reservation),
            next,
            len,
            written: Arc::clone(&client.written),
            made: budget::clock_ms(),
        }
    }
}

impl Drop for ChunkMemory {
    fn drop(&mut self) {
        let rate = self.written.chunk_written(self.len, self.made);
        if let (Some(r), Some(next)) = (self.reservation.take(), self.next.take())
            && !r.owed_to_waiters(rate < SLOW_RATE)
        {
            let _ = next.send(r);
        }
    }
}

/// A chunk goes to the connection in pieces of this size, each stamping the answer's progress
/// when it is written: a client reading slowly but steadily shows it (`budget`'s staleness).
const PIECE: usize = 16 * 1024;

/// A piece of a chunk (which holds the chunk's memory until its last piece is dropped).
struct Piece {
    bytes: Bytes,
    written: Arc<budget::Progress>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.written.touch(self.bytes.len() as u64);
    }
}

/// `chunk` in pieces of `PIECE` for `client`'s answer.
fn in_pieces(
    chunk: std::io::Result<Bytes>,
    client: &Client,
) -> futures_util::stream::Iter<std::vec::IntoIter<std::io::Result<Bytes>>> {
    let pieces = match chunk {
        Ok(chunk) => (0..chunk.len())
            .step_by(PIECE)
            .map(|at| {
                Ok(Bytes::from_owner(Piece {
                    bytes: chunk.slice(at..(at + PIECE).min(chunk.len())),
                    written: Arc::clone(&client.written),
                }))
            })
            .collect(),
        Err(e) => vec![Err(e)],
    };
    futures_util::stream::iter(pieces)
}

/// The first chunk of a blob answer read from a file (one piece); each next one twice the
/// last, up to `READ_CHUNK`. And until this much is written, a chunk is read only once the one
/// before is written: an answer whose client does not read (a stream whose window never opens)
/// holds one piece, not two large chunks. And the node takes no more connections than the
/// download memory holds such first chunks twice over (`connections_download_memory_fits`):
/// clients that open one such stream from each of many addresses (each then holding nothing
/// while it waits, as a newcomer does) can take at most half of it (helper-25, helper-26).
const FIRST_CHUNK: u64 = PIECE as u64;
const AHEAD_AFTER: u64 = 1 << 20;

/// `chunk`, which holds `permit` (its download memory) until the connection has written it.
fn holding(chunk: Bytes, permit: budget::Reservation, client: &Client) -> Bytes {
    let len = chunk.len() as u64;
    Bytes::from_owner(Counted {
        bytes: chunk,
        _permit: ChunkMemory::new(permit, len, client, None),
    })
}

/// A chunk of an answer that gives its download memory back when dropped (written out).
struct Counted<B> {
    bytes: B,
    _permit: ChunkMemory,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Counted<B> {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

enum Source {
    /// A blob's file, opened by the answer's first read (once it has memory).
    File(std::path::PathBuf),
    S3(crate::blob::S3Store, Digest),
    /// A small blob kept in its row (`INLINE_MAX`); from the bucket if the row holds none.
    Row(crate::blob::S3Store, Digest, Arc<tokio::sync::Semaphore>),
}

/// Bytes per read when streaming a blob out.
const READ_CHUNK: usize = 256 * 1024;

impl BlobReader {
    /// The bytes `start..start + len` as a stream of chunks. From a file, each chunk is read on
    /// the blocking pool straight into its own buffer (no copy through an intermediate one),
    /// 16 KiB first and twice the last after (up to 256 KiB), but no more than about two
    /// seconds of what the client drained the chunk before (at least 16 KiB), so a slow reader
    /// holds little and never holds a chunk long (`budget`'s `HOLD_LIMIT`); until the answer
    /// has written 1 MiB a chunk is read only once the one before is written, and after that
    /// as soon as it is handed over, so disk reads overlap socket writes while at most two
    /// chunks per stream are in memory, and an answer whose client never reads holds one piece.
    /// A file
    /// shorter than `len` ends the stream with an error, never with a short body.
    ///
    /// From a bucket, the object's GET is answered before the stream is returned: a bucket that
    /// cannot serve it is an error here, before any byte of the answer.
    pub async fn stream(
        self,
        start: u64,
        len: u64,
    ) -> Result<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>> {
        let (memory, client) = (self.memory, self.client);
        let pieces = {
            let client = client.clone();
            move |chunk| in_pieces(chunk, &client)
        };
        let (s3, d) = match self.source {
            Source::File(path) => {
                return Ok(Self::stream_file(path, start, len, memory, client)
                    .flat_map(pieces)
                    .boxed());
            }
            Source::S3(s3, d) => (s3, d),
            Source::Row(s3, d, row_reads) => {
                // The answer's memory first, then the read, so a client that never reads holds
                // the bytes only inside its share; and a few row reads at a time per node
                // (`ROW_READS`), so pulls of small blobs never take the database's connections
                // from writes.
                let permit = match len {
                    0 => None,
                    n => Some(
                        download_memory(&memory, n as usize, &client)
                            .await
                            .map_err(|e| Error::Busy(e.to_string()))?,
                    ),
                };
                let turn = row_reads
                    .acquire_owned()
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?;
                let (meta, digest) = (self.meta.clone(), d.clone());
                let kept = tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    meta.read(|r| r.inline_blob(&digest))
                })
                .await
                .map_err(|e| Error::Task(e.to_string()))??;
                // None: the row was taken by garbage collection, or made again for bytes in
                // the bucket, since the node cached it.
                if let Some(bytes) = kept {
                    // The range lies in the recorded size (the caller's check).
                    let chunk = (bytes.len() as u64 == self.size)
                        .then(|| bytes.get(start as usize..(start + len) as usize))
                        .flatten()
                        .ok_or_else(|| {
                            Error::Task(format!(
                                "blob {d} kept in its row is not its recorded size"
                            ))
                        })?;
                    let chunk = Bytes::copy_from_slice(chunk);
                    let chunks = permit.map(|permit| Ok(holding(chunk, permit, &client)));
                    return Ok(futures_util::stream::iter(chunks).flat_map(pieces).boxed());
                }
                (s3, d)
            }
        };
        match s3.stream(&d, start, len).await {
            Err(e) if e.is_not_found() => Err(bytes_gone(&self.meta, &self.repo)),
            Err(e) => Err(e.into()),
            Ok(chunks) => Ok(chunks
                .then(move |chunk| {
                    let (memory, client) = (Arc::clone(&memory), client.clone());
                    async move {
                        let chunk = chunk?;
                        let permit = download_memory(&memory, chunk.len(), &client).await?;
                        Ok(holding(chunk, permit, &client))
                    }
                })
                .flat_map(pieces)
                .boxed()),
        }
    }

    fn stream_file(
        path: std::path::PathBuf,
        start: u64,
        len: u64,
        memory: Arc<budget::Budget>,
        client: Client,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let path = Arc::new(path);
        // Reads the `n` bytes at `pos` (or what memory it has, `next_memory`) with the memory of
        // the chunk before (`after`) once that is written, if the answer has not yet shown
        // that it drains (`AHEAD_AFTER`); the chunk hands its memory to the next read. The file
        // is opened once the memory is there, and kept for the next read only by an answer
        // that drains: one whose client does not read holds no open file, nor does one that
        // waits for memory.
        let read =
            |file: Option<Kept>,
             path: Arc<std::path::PathBuf>,
             pos: u64,
             n: u64,
             memory: Arc<budget::Budget>,
             client: Client,
             after: Option<tokio::sync::oneshot::Receiver<budget::Reservation>>| async move {
                let reservation = next_memory(&memory, n, &client, after).await?;
                let n = n.min(reservation.bytes());
                let (done, next) = tokio::sync::oneshot::channel();
                let permit = ChunkMemory::new(reservation, n, &client, Some(done));
                let (file, chunk) =
                    tokio::task::spawn_blocking(move || read_chunk(file, &path, pos, n, permit))
                        .await
                        .map_err(std::io::Error::other)??;
                // Kept for the next read only by an answer that drains, and while a slot is free.
                let slot = file.slot.or_else(|| {
                    (client.written.bytes() >= AHEAD_AFTER)
                        .then(KeptSlot::take)
                        .flatten()
                });
                let keep = slot.map(|slot| Kept {
                    file: file.file,
                    slot: Some(slot),
                });
                Ok::<_, std::io::Error>((keep, chunk, next))
            };
        // The reads ahead are the stream's own: dropped with it (a reset stream, a connection
        // gone), they stop, not wait on for memory.
        let first = AbortOnDropHandle::new(tokio::spawn(read(
            None,
            Arc::clone(&path),
            start,
            len.min(FIRST_CHUNK),
            Arc::clone(&memory),
            client.clone(),
            None,
        )));
        let state = (len > 0).then_some((first, len, FIRST_CHUNK));
        futures_util::stream::unfold(state, move |state| {
            let (memory, client, path) = (Arc::clone(&memory), client.clone(), Arc::clone(&path));
            async move {
                let (pending, left, size) = state?;
                let (file, chunk, written) = match pending.await.map_err(std::io::Error::other) {
                    Ok(Ok(read)) => read,
                    Ok(Err(e)) | Err(e) => return Some((Err(e), None)),
                };
                if chunk.is_empty() {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than its recorded size",
                    );
                    return Some((Err(e), None));
                }
                let left = left - chunk.len() as u64;
                let size = (size * 2).min(READ_CHUNK as u64);
                let next = (left > 0).then(|| {
                    let (n, pos) = (left.min(size), start + (len - left));
                    let task = read(file, path, pos, n, memory, client, Some(written));
                    (AbortOnDropHandle::new(tokio::spawn(task)), left, size)
                });
                Some((Ok(chunk), next))
            }
        })
    }
}

/// A blob whose bytes are gone although the node's cache still linked it (garbage collection on
/// another node or by `berth gc`, within the cache's bound): the cache forgets the repository and
/// the blob is unknown, as it is in the database.
fn bytes_gone(meta: &MetadataStore, repo: &RepositoryName) -> Error {
    meta.forget_cached(repo.as_str());
    Error::BlobUnknown
}

/// A blob file an answer keeps open between its reads: only while it holds one of
/// `KEPT_FILES` slots (`KeptSlot`) does it stay open past a read.
struct Kept {
    file: std::fs::File,
    slot: Option<KeptSlot>,
}

/// How many blob files answers keep open between reads, node-wide: past it, an answer opens
/// its file for each read, so however many answers drain at once, they hold few descriptors.
const KEPT_FILES: usize = 256;
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// One of the `KEPT_FILES` places, given back when dropped.
struct KeptSlot;

impl KeptSlot {
    fn take() -> Option<KeptSlot> {
        KEPT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < KEPT_FILES).then_some(n + 1)
        })
        .ok()
        .map(|_| KeptSlot)
    }
}

impl Drop for KeptSlot {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads up to `n` bytes from `file` (or from `path` opened at `pos`), into a chunk that holds
/// `permit` (download memory) until it is dropped; the file is handed back for the next read.
fn read_chunk(
    file: Option<Kept>,
    path: &std::path::Path,
    pos: u64,
    n: u64,
    permit: ChunkMemory,
) -> std::io::Result<(Kept, Bytes)> {
    use std::io::{Read as _, Seek as _};
    let mut file = match file {
        Some(kept) => kept,
        None => {
            let mut file = std::fs::File::open(path)?;
            file.seek(std::io::SeekFrom::Start(pos))?;
            Kept { file, slot: None }
        }
    };
    let mut buf = Vec::with_capacity(usize::try_from(n).unwrap_or(READ_CHUNK));
    (&mut file.file).take(n).read_to_end(&mut buf)?;
    Ok((
        file,
        Bytes::from_owner(Counted {
            bytes: buf,
            _permit: permit,
        }),
    ))
}

/// The result of a manifest push.
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// How many bytes go to the writer thread at once; frames from the socket are gathered up to this.
const WRITE_CHUNK: usize = 256 * 1024;
/// Chunks in flight between the socket and the writer and hasher: bounds memory per upload.
const PIPELINE_DEPTH: usize = 8;

impl ContentService {
    pub fn new(meta: MetadataStore, blobs: BlobStore) -> ContentService {
        ContentService {
            inner: Arc::new(Inner {
                meta,
                blobs,
                sessions: Mutex::default(),
                uploads_active: AtomicI64::new(0),
                upload_memory: Arc::new(budget::Budget::new(UPLOAD_MEMORY_DEFAULT)),
                download_memory: Arc::new(budget::Budget::new(DOWNLOAD_MEMORY_DEFAULT)),
                row_reads: Arc::new(tokio::sync::Semaphore::new(ROW_READS)),
            }),
        }
    }

    pub fn meta(&self) -> &MetadataStore {
        &self.inner.meta
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The lease of periodic job `job`, if no other node holds it (see `MetadataStore::try_lease`).
    pub async fn lease(&self, job: &'static str) -> Result<Option<store::Lease>> {
        self.blocking(move |s| Ok(s.meta.try_lease(job)?)).await
    }

    /// Sets the memory shared by upload requests (`--upload-memory`); before serving.
    pub fn set_upload_memory(&self, bytes: u64) {
        self.inner.upload_memory.set(bytes);
    }

    /// What an upload request's body can hold in memory at once: the pipeline to the writer
    /// and hasher, and on S3 the parts being gathered and written; less for a body announced
    /// smaller (`len`, its Content-Length).
    pub fn upload_footprint(&self, len: Option<u64>) -> u64 {
        use crate::blob::PART;
        let pipeline = ((PIPELINE_DEPTH + 1) * WRITE_CHUNK) as u64;
        let worst = match self.inner.blobs.engine() {
            Engine::Fs(_) => pipeline,
            // A session's parts (two gathered, one in flight), or a whole blob's sink (one
            // buffered, two in flight) after the pipeline.
            Engine::S3(_) => pipeline + 3 * PART as u64,
        };
        len.map_or(worst, |l| worst.min(l.saturating_mul(2) + 64 * 1024))
    }

    /// An upload request's `body` (announced `len`) from `peer`, taking upload memory as its
    /// bytes arrive (`budget::Metered`), up to `upload_footprint(len)`: from the address's
    /// share, then from the whole, waiting unread while either is taken; ended with
    /// `Error::Busy` (retry) after `UPLOAD_MEMORY_WAIT`.
    pub fn metered<S>(
        &self,
        body: S,
        len: Option<u64>,
        peer: Option<std::net::IpAddr>,
    ) -> UploadBody<S> {
        // Files: the writer takes each chunk as it is gathered, so what a body holds is its
        // gathering and what came lately. S3: parts gather in memory until whole.
        let floor = match self.inner.blobs.engine() {
            Engine::Fs(_) => Some((WRITE_CHUNK + 64 * 1024) as u64),
            Engine::S3(_) => None,
        };
        budget::Metered::new(
            body,
            Arc::clone(&self.inner.upload_memory),
            (self.upload_footprint(len), floor),
            peer,
            UPLOAD_MEMORY_WAIT,
        )
    }

    /// Sets the memory shared by pulls (`--download-memory`); before serving.
    pub fn set_download_memory(&self, bytes: u64) {
        self.inner.download_memory.set(bytes);
    }

    /// How many connections the download memory serves: each one's first chunk
    /// (`FIRST_CHUNK`) twice over, so stalled first chunks take at most half of it.
    pub fn connections_download_memory_fits(&self) -> usize {
        usize::try_from(self.inner.download_memory.capacity() / (2 * FIRST_CHUNK))
            .unwrap_or(usize::MAX)
    }

    /// Download memory not taken now, in bytes.
    pub fn download_memory_free(&self) -> u64 {
        self.inner.download_memory.free()
    }

    /// Connections closed because they held download memory they did not use while others
    /// waited for it.
    pub fn download_memory_reclaimed(&self) -> u64 {
        self.inner.download_memory.reclaimed()
    }

    /// Upload memory not reserved now, in bytes.
    pub fn upload_memory_free(&self) -> u64 {
        self.inner.upload_memory.free()
    }

    /// Requests currently streaming upload bytes.
    pub fn uploads_active(&self) -> i64 {
        self.inner.uploads_active.load(Ordering::Relaxed)
    }

    /// Runs blocking work (fsync, SQLite writes, hashing a file) off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // ----- blobs -----

    /// Size of `digest` in `repo`.
    pub fn blob_size(&self, repo: &RepositoryName, digest: &Digest) -> Result<u64> {
        self.inner
            .meta
            .blob_in_repo(repo.as_str(), digest)?
            .map(|link| link.size)
            .ok_or(Error::BlobUnknown)
    }

    /// `client`: who the answer's download memory is held for.
    pub fn open_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        client: Client,
    ) -> Result<BlobReader> {
        let link = self
            .inner
            .meta
            .blob_in_repo(repo.as_str(), digest)?
            .ok_or(Error::BlobUnknown)?;
        let source = match self.inner.blobs.engine() {
            Engine::Fs(f) => match f.blob_file(digest) {
                Ok(path) => Source::File(path),
                Err(e) if e.is_not_found() => return Err(bytes_gone(&self.inner.meta, repo)),
                Err(e) => return Err(e.into()),
            },
            Engine::S3(s) if link.in_row => {
                Source::Row(s.clone(), digest.clone(), Arc::clone(&self.inner.row_reads))
            }
            Engine::S3(s) => Source::S3(s.clone(), digest.clone()),
        };
        Ok(BlobReader {
            source,
            size: link.size,
            meta: self.inner.meta.clone(),
            repo: repo.clone(),
            memory: Arc::clone(&self.inner.download_memory),
            client,
        })
    }

    /// Unlinks a blob from a repository; its bytes go at the next garbage collection.
    pub async fn delete_blob(&self, repo: &RepositoryName, digest: &Digest) -> Result<()> {
        let (repo, digest) = (repo.clone(), digest.clone());
        let found = self
            .blocking(move |s| {
                Ok(s.meta
                    .write_content(|w| w.unlink_blob(repo.as_str(), &digest))?)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::BlobUnknown)
        }
    }

    /// Links `digest` into `repo` if `from` holds it. `false` means the caller should fall back to
    /// an ordinary upload.
    pub async fn mount(
        &self,
        repo: &RepositoryName,
        from: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool> {
        let (repo, from, digest) = (repo.clone(), from.clone(), digest.clone());
        self.blocking(move |s| {
            Ok(s.meta.write_content(|w| {
                if w.reader().blob_in_repo(from.as_str(), &digest)?.is_none() {
                    return Ok::<_, store::Error>(false);
                }
                w.link_blob(repo.as_str(), &digest)?;
                Ok(true)
            })?)
        })
        .await
    }

    // ----- uploads -----

    pub async fn start_upload(&self, repo: &RepositoryName) -> Result<uuid::Uuid> {
        let id = uuid::Uuid::new_v4();
        let repo = repo.clone();
        // The row goes first: garbage collection removes upload files that have no row.
        self.blocking(move |s| {
            // A session lost to a power cut only costs the client a retry: no fsync wait.
            s.meta
                .write_content_relaxed(|w| w.create_upload(&id, repo.as_str()))?;
            if let Engine::Fs(f) = s.blobs.engine() {
                f.create_upload(&id)?;
            }
            Ok(())
        })
        .await?;
        self.sessions().insert(
            id,
            (
                0,
                Some(Session {
                    offset: 0,
                    hasher: Some(Hasher::new(Algorithm::Sha256)),
                }),
            ),
        );
        Ok(id)
    }

    /// The upload's row, if it belongs to `repo`.
    fn check_upload(&self, repo: &RepositoryName, id: &uuid::Uuid) -> Result<store::UploadRow> {
        match self.inner.meta.read(|r| r.upload(id))? {
            Some(row) if row.repository == repo.as_str() => Ok(row),
            _ => {
                self.sessions().remove(id);
                Err(Error::UploadUnknown)
            }
        }
    }

    /// How many bytes the upload holds: the metadata store is the authority (another node may
    /// have taken a chunk since this one last saw the session).
    pub fn upload_offset(&self, repo: &RepositoryName, id: &uuid::Uuid) -> Result<u64> {
        Ok(self.check_upload(repo, id)?.size)
    }

    /// Takes a session for exclusive use by one request (on this node; the digest check at the
    /// end catches clients that write one upload through two nodes at once). `stored` is the
    /// committed size from the session's row.
    fn take_session(&self, id: &uuid::Uuid, stored: u64) -> Result<(Session, Hold)> {
        let token = HOLDS.fetch_add(1, Ordering::Relaxed);
        let hold = |this: &Self| Hold {
            inner: Arc::clone(&this.inner),
            id: *id,
            token,
        };
        let mut map = self.sessions();
        match map.get_mut(id) {
            Some((held_by, slot)) => {
                let mut s = slot.take().ok_or_else(|| {
                    Error::UploadInvalid("another request is writing to this upload".into())
                })?;
                *held_by = token;
                if s.offset != stored {
                    // Bytes arrived through another node: this node's hash state is stale, the
                    // bytes are hashed again at the end.
                    s = Session {
                        offset: stored,
                        hasher: None,
                    };
                }
                drop(map);
                Ok((s, hold(self)))
            }
            None => {
                // Not in memory (started on another node, or before a restart): resume from the
                // stored bytes, hash them again at the end.
                map.insert(*id, (token, None));
                drop(map);
                Ok((
                    Session {
                        offset: stored,
                        hasher: None,
                    },
                    hold(self),
                ))
            }
        }
    }

    fn put_session(&self, hold: Hold, s: Session) {
        if let Some((t, slot)) = self.sessions().get_mut(&hold.id)
            && *t == hold.token
        {
            *slot = Some(s);
        }
    }

    /// Appends a request body to an upload. `start` is the first byte's offset from
    /// `Content-Range`, if the client sent one; `len` is the length the client announced.
    pub async fn append<S>(
        &self,
        repo: &RepositoryName,
        id: &uuid::Uuid,
        start: Option<u64>,
        len: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        let row = self.check_upload(repo, id)?;
        let (mut session, hold) = self.take_session(id, row.size)?;
        if let Some(start) = start
            && start != session.offset
        {
            let offset = session.offset;
            self.put_session(hold, session);
            return Err(Error::RangeMismatch { offset });
        }
        if let Engine::S3(s3) = self.inner.blobs.engine().clone() {
            let result = self.append_parts(&s3, id, &row, len, body, false).await;
            if let Ok((offset, _)) = &result {
                session.offset = *offset;
            }
            session.hasher = None;
            self.put_session(hold, session);
            return result.map(|(offset, _)| offset);
        }
        let result = self
            .write_body(id, session.offset, session.hasher.take(), body)
            .await;
        match result {
            Ok((n, hasher)) if len.is_none_or(|l| l == n) => {
                let offset = session.offset + n;
                // The chunk counts once its size is committed; a crash before leaves the bytes
                // beyond the committed size, and the next chunk overwrites them.
                let id2 = *id;
                let committed = self
                    .blocking(move |s| {
                        Ok(s.meta
                            .write_content_relaxed(|w| w.set_upload_size(&id2, offset))?)
                    })
                    .await;
                match committed {
                    Ok(_) => {
                        session.offset = offset;
                        session.hasher = hasher;
                        self.put_session(hold, session);
                        Ok(offset)
                    }
                    Err(e) => {
                        session.hasher = None;
                        self.put_session(hold, session);
                        Err(e)
                    }
                }
            }
            Ok((n, _)) => {
                // The bytes that arrived are not what the client announced: drop them all. The
                // hasher has seen them, so the file is hashed again at the end.
                self.put_session(
                    hold,
                    Session {
                        offset: session.offset,
                        hasher: None,
                    },
                );
                Err(Error::SizeInvalid(format!(
                    "announced {} bytes, received {n}",
                    len.unwrap_or(0)
                )))
            }
            Err(e) => {
                self.put_session(
                    hold,
                    Session {
                        offset: session.offset,
                        hasher: None,
                    },
                );
                Err(e)
            }
        }
    }

    /// S3: streams `body` into session `id`'s multipart upload (`blob::PartsState`), hashing it
    /// into the stored SHA-256 state, and commits the new size and state. Parts are 5–10 MiB;
    /// bytes too few for a part wait in a tail object for the next request, except in the `last`
    /// request, where they are the last part. Nothing already stored is read back but the tail.
    async fn append_parts<S>(
        &self,
        s3: &crate::blob::S3Store,
        id: &uuid::Uuid,
        row: &store::UploadRow,
        len: Option<u64>,
        mut body: S,
        last: bool,
    ) -> Result<(u64, crate::blob::PartsState)>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        use crate::blob::PART;
        let mut state = parts_state(row)?;
        let mut hash = if state.hash.is_empty() {
            crate::types::ResumableSha256::default()
        } else {
            crate::types::ResumableSha256::from_text(&state.hash)
                .ok_or_else(|| Error::Task(format!("upload {id}: unreadable hash state")))?
        };
        let _active = ActiveUpload::new(&self.inner.uploads_active);
        s3.start_parts(id, &mut state).await?;
        let old_tail = state.tail;
        // Room for two parts up front: no regrowth (and copy) while a chunk arrives.
        let mut buf = bytes::BytesMut::with_capacity(2 * PART + 64 * 1024);
        buf.extend_from_slice(&s3.read_tail(id, &state).await?);
        let mut writer = s3.part_writer(id, &state)?;
        let mut n: u64 = 0;
        while let Some(frame) = body.next().await {
            let frame = frame?;
            n += frame.len() as u64;
            hash.update(&frame);
            buf.extend_from_slice(&frame);
            if buf.len() >= 2 * PART {
                writer.put(buf.split_to(PART).freeze()).await?;
            }
        }
        if let Some(l) = len
            && l != n
        {
            // Nothing is committed: the parts written are overwritten by the next request.
            return Err(Error::SizeInvalid(format!(
                "announced {l} bytes, received {n}"
            )));
        }
        let size = row.size + n;
        state.tail = None;
        if last || buf.len() >= PART {
            if !buf.is_empty() {
                writer.put(buf.split().freeze()).await?;
            }
        } else if !buf.is_empty() {
            let start = size - buf.len() as u64;
            let tail_len = buf.len() as u64;
            s3.write_tail(id, start, buf.split().freeze()).await?;
            state.tail = Some((start, tail_len));
        }
        state.parts.extend(writer.finish().await?);
        state.hash = hash.to_text();
        let text = serde_json::to_string(&state).map_err(|e| Error::Task(e.to_string()))?;
        let (id2, from) = (*id, row.size);
        let committed = self
            .blocking(move |s| {
                Ok(s.meta
                    .write_content_relaxed(|w| w.set_upload_state(&id2, from, size, &text))?)
            })
            .await?;
        if !committed {
            return Err(Error::UploadInvalid(
                "another request wrote to this upload at the same time".into(),
            ));
        }
        if let Some((start, _)) = old_tail
            && state.tail.map(|t| t.0) != Some(start)
        {
            s3.drop_tail(id, start);
        }
        Ok((size, state))
    }

    /// Streams `body` into the upload at `offset` (its file, or a new chunk object), hashing in
    /// parallel with writing. Returns the bytes written and the updated hasher. On error, the
    /// file is cut back by the next append (an unfinished chunk object never becomes visible).
    async fn write_body<S>(
        &self,
        id: &uuid::Uuid,
        offset: u64,
        hasher: Option<Hasher>,
        body: S,
    ) -> Result<(u64, Option<Hasher>)>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        // S3 sessions go through `append_parts`.
        let target = Target::File(*id, offset, true);
        let (n, hasher, _) = self.stream_into(target, hasher, body).await?;
        Ok((n, hasher))
    }

    /// Streams `body` into `target`, hashing in parallel with writing. A sink comes back
    /// unfinished: the caller makes it visible or drops it.
    async fn stream_into<S>(
        &self,
        target: Target,
        hasher: Option<Hasher>,
        mut body: S,
    ) -> Result<(u64, Option<Hasher>, Option<crate::blob::Sink>)>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        let _active = ActiveUpload::new(&self.inner.uploads_active);
        let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let writer: tokio::task::JoinHandle<Result<Option<crate::blob::Sink>>> = match target {
            Target::File(id, offset, sync) => {
                let Engine::Fs(fs) = self.inner.blobs.engine().clone() else {
                    return Err(Error::Task("file target without files".into()));
                };
                let file = tokio::task::spawn_blocking(move || fs.open_upload(&id, offset))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))??;
                // A blocking thread per chunk, never one parked waiting for the client's next
                // bytes: stalled uploads cannot hold the blocking pool that every other request
                // needs.
                tokio::spawn(async move {
                    let mut file = file;
                    let task = |e: tokio::task::JoinError| Error::Task(e.to_string());
                    while let Some(chunk) = wrx.recv().await {
                        file = tokio::task::spawn_blocking(move || {
                            use std::io::Write as _;
                            file.write_all(&chunk).map(|()| file)
                        })
                        .await
                        .map_err(task)?
                        .map_err(|source| crate::blob::Error {
                            context: format!("writing upload {id}"),
                            source,
                        })?;
                    }
                    // A session's chunk is on disk before its new length is recorded and
                    // answered (202): the recorded length never runs ahead of the bytes a power
                    // cut keeps. (A whole blob is synced when it is committed.)
                    if sync {
                        tokio::task::spawn_blocking(move || file.sync_data())
                            .await
                            .map_err(task)?
                            .map_err(|source| crate::blob::Error {
                                context: format!("syncing upload {id}"),
                                source,
                            })?;
                    }
                    Ok(None)
                })
            }
            Target::Sink(mut sink) => tokio::spawn(async move {
                while let Some(chunk) = wrx.recv().await {
                    sink.put(chunk).await?;
                }
                Ok(Some(sink))
            }),
        };
        let (htx, hasher_task) = match hasher {
            Some(h) => {
                let (htx, mut hrx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
                // As the writer: a blocking thread per chunk, none parked between chunks.
                let task = tokio::spawn(async move {
                    let mut h = h;
                    while let Some(chunk) = hrx.recv().await {
                        h = tokio::task::spawn_blocking(move || {
                            h.update(&chunk);
                            h
                        })
                        .await
                        .ok()?;
                    }
                    Some(h)
                });
                (Some(htx), Some(task))
            }
            None => (None, None),
        };
        let mut total: u64 = 0;
        let mut pending = bytes::BytesMut::new();
        let mut read_err = None;
        let send = async |chunk: Bytes| -> bool {
            if let Some(h) = &htx
                && h.send(chunk.clone()).await.is_err()
            {
                return false;
            }
            wtx.send(chunk).await.is_ok()
        };
        loop {
            match body.next().await {
                Some(Ok(frame)) => {
                    total += frame.len() as u64;
                    // Gather small frames so that the writer and hasher work on large slices.
                    if pending.is_empty() && frame.len() >= WRITE_CHUNK {
                        if !send(frame).await {
                            break;
                        }
                    } else {
                        pending.extend_from_slice(&frame);
                        if pending.len() >= WRITE_CHUNK && !send(pending.split().freeze()).await {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    read_err = Some(e);
                    break;
                }
                None => {
                    if !pending.is_empty() {
                        send(pending.split().freeze()).await;
                    }
                    break;
                }
            }
        }
        drop(wtx);
        drop(htx);
        let write_result = writer.await.map_err(|e| Error::Task(e.to_string()))?;
        let hasher = match hasher_task {
            Some(t) => Some(
                t.await
                    .map_err(|e| Error::Task(e.to_string()))?
                    .ok_or_else(|| Error::Task("hashing the upload failed".into()))?,
            ),
            None => None,
        };
        if let Some(e) = read_err {
            return Err(e);
        }
        let sink = write_result?;
        Ok((total, hasher, sink))
    }

    /// Completes an upload: optional last bytes, then digest check, then commit.
    pub async fn finish<S>(
        &self,
        repo: &RepositoryName,
        id: &uuid::Uuid,
        digest: &Digest,
        last: Option<S>,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        if let Some(body) = last {
            // S3, and the whole blob in this request: straight into its staged object (or one
            // PUT to its key), not through a chunk object read back at the end.
            if let Engine::S3(_) = self.inner.blobs.engine()
                && self.check_upload(repo, id)?.size == 0
            {
                // Marks the session busy on this node until the blob is committed.
                let _hold = self.take_session(id, 0)?.1;
                let result = self.store_whole(repo, digest, body, Some(*id)).await;
                self.sessions().remove(id);
                return result;
            }
            if let Engine::S3(s3) = self.inner.blobs.engine().clone() {
                return self.finish_parts(&s3, repo, id, digest, Some(body)).await;
            }
            self.append(repo, id, None, None, body).await?;
        } else if let Engine::S3(s3) = self.inner.blobs.engine().clone() {
            return self
                .finish_parts(
                    &s3,
                    repo,
                    id,
                    digest,
                    None::<futures_util::stream::Empty<Result<Bytes>>>,
                )
                .await;
        }
        let row = self.check_upload(repo, id)?;
        let (session, _hold) = self.take_session(id, row.size)?;
        let (repo, id, want) = (repo.clone(), *id, digest.clone());
        // Files: the upload's file is hashed unless its hash state is at hand.
        let result = self
            .blocking(move |s| {
                let bad_digest = |got: Digest| -> Result<()> {
                    s.meta.write_content(|w| w.delete_upload(&id))?;
                    s.blobs.remove_upload(&id)?;
                    Err(Error::DigestInvalid(format!(
                        "content digest is {got}, not {want}"
                    )))
                };
                match s.blobs.engine() {
                    Engine::Fs(fs) => {
                        // Drop bytes past the committed size (a chunk whose request failed
                        // half-way).
                        if fs.upload_len(&id)?.is_some_and(|n| n > session.offset) {
                            drop(fs.open_upload(&id, session.offset)?);
                        }
                        let got = match session.hasher {
                            Some(h) if want.algorithm() == Algorithm::Sha256 => h.finish(),
                            _ => hash_file(fs, &id, want.algorithm())?,
                        };
                        if got != want {
                            return bad_digest(got);
                        }
                        s.commit(&repo, &want, session.offset, Placement::File(id), Some(&id))
                    }
                    Engine::S3(_) => Err(Error::Task("an S3 upload on the files path".into())),
                }
            })
            .await;
        self.sessions().remove(&id);
        result
    }

    /// S3: completes session `id`: the last bytes (and the tail) become the last part, the
    /// staged object is completed, its digest is the stored hash state's (read back only for
    /// another algorithm than SHA-256), and it is placed under the digest's lock.
    async fn finish_parts<S>(
        &self,
        s3: &crate::blob::S3Store,
        repo: &RepositoryName,
        id: &uuid::Uuid,
        digest: &Digest,
        last: Option<S>,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        let row = self.check_upload(repo, id)?;
        if row.size == 0 {
            // The whole blob in this request (or an empty one): straight into its staged
            // object, or one PUT to its key when it fits a part.
            let _hold = self.take_session(id, 0)?.1;
            let result = match last {
                Some(body) => self.store_whole(repo, digest, body, Some(*id)).await,
                None => {
                    let empty = futures_util::stream::empty::<Result<Bytes>>();
                    self.store_whole(repo, digest, empty, Some(*id)).await
                }
            };
            self.sessions().remove(id);
            return result;
        }
        // Held (busy on this node) until the blob is committed.
        let _held = self.take_session(id, row.size)?;
        let result = async {
            let (size, state) = match last {
                Some(body) => self.append_parts(s3, id, &row, None, body, true).await?,
                None => {
                    // The tail of the last PATCH is the last part.
                    let mut state = parts_state(&row)?;
                    let tail = s3.read_tail(id, &state).await?;
                    if !tail.is_empty() {
                        let mut w = s3.part_writer(id, &state)?;
                        w.put(tail).await?;
                        state.parts.extend(w.finish().await?);
                        state.tail = None;
                    }
                    (row.size, state)
                }
            };
            let (repo, id, want, s3) = (repo.clone(), *id, digest.clone(), s3.clone());
            self.blocking(move |s| {
                s3.complete_parts(&id, &state)?;
                let got = match crate::types::ResumableSha256::from_text(&state.hash) {
                    Some(h) if want.algorithm() == Algorithm::Sha256 => h.finish(),
                    _ => s3.hash_staged(&id, Hasher::new(want.algorithm()))?,
                };
                if got != want {
                    s.meta.write_content(|w| w.delete_upload(&id))?;
                    s.blobs.remove_upload(&id)?;
                    return Err(Error::DigestInvalid(format!(
                        "content digest is {got}, not {want}"
                    )));
                }
                s.commit(&repo, &want, size, Placement::Staged(id), Some(&id))
            })
            .await
        }
        .await;
        self.sessions().remove(id);
        result
    }

    /// Stores a whole blob sent in one request (`POST ?digest=`), without an upload session.
    pub async fn push_blob<S>(&self, repo: &RepositoryName, digest: &Digest, body: S) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        self.store_whole(repo, digest, body, None).await
    }

    /// Stores a whole blob from one request body: for `push_blob`, or (S3) for the last request
    /// of an `upload` that holds no bytes yet, whose session goes with the commit.
    async fn store_whole<S>(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: S,
        upload: Option<uuid::Uuid>,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin + 'static,
    {
        // Files: a file with no metadata row; garbage collection leaves such files alone until
        // they are older than the upload expiry, so this one is safe while it is being written.
        // S3: into the staged object (in memory while it fits one part), invisible until placed.
        let id = upload.unwrap_or_else(uuid::Uuid::new_v4);
        // A request cancelled while its file is created or its body streams in (a reset HTTP/2
        // stream, a connection gone) leaves no file behind; from the commit on, the blocking
        // task cleans up.
        let mut orphan = Orphan {
            blobs: self.inner.blobs.clone(),
            id: None,
            file: Arc::default(),
        };
        let target = match self.inner.blobs.engine().clone() {
            Engine::Fs(fs) => {
                orphan.id = Some(id);
                let file = Arc::clone(&orphan.file);
                self.blocking(move |_| Orphan::create(&file, &fs, &id))
                    .await?;
                Target::File(id, 0, false)
            }
            Engine::S3(s3) => Target::Sink(s3.staging_sink(&id)),
        };
        let hasher = Some(Hasher::new(digest.algorithm()));
        let written = self.stream_into(target, hasher, body).await;
        orphan.id = None;
        let (repo, want) = (repo.clone(), digest.clone());
        self.blocking(move |s| {
            let discard = |sink: Option<crate::blob::Sink>| -> Result<()> {
                match sink {
                    Some(sink) => sink.abort(),
                    None => s.blobs.remove_upload(&id)?,
                }
                Ok(())
            };
            let (size, hasher, sink) = match written {
                Ok(w) => w,
                Err(e) => {
                    if matches!(s.blobs.engine(), Engine::Fs(_)) {
                        s.blobs.remove_upload(&id)?;
                    }
                    return Err(e);
                }
            };
            let got = match hasher {
                Some(h) => h.finish(),
                None => return Err(Error::Task("lost the hash of the body".into())),
            };
            if got != want {
                discard(sink)?;
                if let Some(u) = upload {
                    s.meta.write_content(|w| w.delete_upload(&u))?;
                    s.blobs.remove_upload(&u)?;
                }
                return Err(Error::DigestInvalid(format!(
                    "content digest is {got}, not {want}"
                )));
            }
            let placement = match sink {
                Some(mut sink) => match sink.take_bytes(INLINE_MAX as usize) {
                    Some(bytes) => Placement::Inline(bytes),
                    None => Placement::Object(sink, id),
                },
                None => Placement::File(id),
            };
            s.commit(&repo, &want, size, placement, upload.as_ref())
        })
        .await
    }

    pub async fn cancel_upload(&self, repo: &RepositoryName, id: &uuid::Uuid) -> Result<()> {
        let row = self.check_upload(repo, id)?;
        if let Engine::S3(s3) = self.inner.blobs.engine()
            && let Ok(state) = parts_state(&row)
        {
            s3.abort_parts(id, &state);
        }
        let id = *id;
        self.blocking(move |s| {
            s.meta.write_content(|w| w.delete_upload(&id))?;
            Ok(s.blobs.remove_upload(&id)?)
        })
        .await?;
        self.sessions().remove(&id);
        Ok(())
    }

    // ----- manifests -----

    pub fn get_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestRow> {
        self.inner
            .meta
            .manifest(repo.as_str(), reference)?
            .ok_or(Error::ManifestUnknown)
    }

    pub async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PushedManifest> {
        if body.len() > manifest::MAX_MANIFEST_BYTES {
            return Err(Error::ManifestTooLarge);
        }
        let digest = match reference {
            Reference::Digest(want) => {
                let got = Digest::of(want.algorithm(), &body);
                if &got != want {
                    return Err(Error::DigestInvalid(format!(
                        "manifest digest is {got}, not {want}"
                    )));
                }
                got
            }
            Reference::Tag(_) => Digest::sha256(&body),
        };
        let parsed = manifest::parse(content_type, &body).map_err(Error::ManifestInvalid)?;
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str().to_owned()),
            Reference::Digest(_) => None,
        };
        let (repo, out_digest, subject) = (repo.clone(), digest.clone(), parsed.subject.clone());
        self.blocking(move |s| {
            let m = NewManifest {
                digest: &digest,
                media_type: &parsed.media_type,
                artifact_type: parsed.artifact_type.as_deref(),
                subject: parsed.subject.as_ref(),
                annotations: parsed.annotations.as_deref(),
                content: &body,
                blob_refs: &parsed.blob_refs,
                manifest_refs: &parsed.manifest_refs,
            };
            match s
                .meta
                .write_content(|w| w.put_manifest(repo.as_str(), &m, tag.as_deref()))?
            {
                Some(missing) => Err(Error::ManifestBlobUnknown(missing)),
                None => Ok(()),
            }
        })
        .await?;
        Ok(PushedManifest {
            digest: out_digest,
            subject,
        })
    }

    /// Deletes a manifest by digest (with its tags), or only a tag.
    pub async fn delete_manifest(
        &self,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<()> {
        let (repo, reference) = (repo.clone(), reference.clone());
        let found = self
            .blocking(move |s| {
                Ok(s.meta.write_content(|w| match &reference {
                    Reference::Digest(d) => w.delete_manifest(repo.as_str(), d),
                    Reference::Tag(t) => w.delete_tag(repo.as_str(), t.as_str()),
                })?)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::ManifestUnknown)
        }
    }

    /// Deletes a repository with its tags and manifests; its blobs go with the next GC unless
    /// another repository links them. The number of tags it had.
    pub async fn delete_repository(&self, repo: &RepositoryName) -> Result<u64> {
        let repo = repo.clone();
        self.blocking(move |s| Ok(s.meta.write(|w| w.delete_repository(repo.as_str()))?))
            .await?
            .ok_or(Error::NameUnknown)
    }

    pub fn tags(
        &self,
        repo: &RepositoryName,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Vec<String>> {
        self.inner
            .meta
            .read(|r| r.tags(repo.as_str(), last, limit))?
            .ok_or(Error::NameUnknown)
    }

    pub fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Vec<String>> {
        Ok(self.inner.meta.read(|r| r.catalog(last, limit))?)
    }

    /// One page of the referrers of `subject` (see `store::Reader::referrers`).
    pub fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<ReferrerRow>> {
        Ok(self
            .inner
            .meta
            .read(|r| r.referrers(repo.as_str(), subject, artifact_type, after, limit))?)
    }

    /// The annotations of manifest `digest` when at most `max` bytes long.
    pub fn annotations(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<String>> {
        Ok(self
            .inner
            .meta
            .read(|r| r.manifest_annotations(repo.as_str(), digest, max))?)
    }

    /// Removes upload sessions older than `ttl` and their bytes; returns how many.
    pub async fn expire_uploads(&self, ttl: std::time::Duration) -> Result<usize> {
        let cutoff = store::now().saturating_sub(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let ids = self
            .blocking(move |s| {
                let expired = s.meta.write(|w| w.expire_uploads(cutoff))?;
                for u in &expired {
                    s.blobs.discard_upload(&u.id, u.s3_state.as_deref())?;
                }
                Ok(expired.into_iter().map(|u| u.id).collect::<Vec<_>>())
            })
            .await?;
        let mut sessions = self.sessions();
        for id in &ids {
            sessions.remove(id);
        }
        Ok(ids.len())
    }

    pub async fn collect_garbage(&self, opts: gc::Options) -> Result<gc::Report> {
        self.blocking(move |s| gc::run(&s.meta, &s.blobs, &opts))
            .await
    }
}

/// How a verified blob's bytes become its blob: renaming the upload's file, or completing the
/// staged object of an upload (or push) and copying it to the blob's key.
enum Placement {
    File(uuid::Uuid),
    Object(crate::blob::Sink, uuid::Uuid),
    /// A complete staged object (a session's multipart upload): copied to the blob's key.
    Staged(uuid::Uuid),
    /// The bytes of a small blob on S3 (`INLINE_MAX`), kept in its row.
    Inline(Vec<u8>),
}

impl Inner {
    /// Commits a verified blob `d` of `repo` (see the module invariants): under the digest's
    /// lock, places the bytes unless a row already names the blob, then writes the rows, and
    /// drops the bytes it did not need. `upload`: the session whose row goes with it.
    fn commit(
        &self,
        repo: &RepositoryName,
        d: &Digest,
        size: u64,
        placement: Placement,
        upload: Option<&uuid::Uuid>,
    ) -> Result<()> {
        if let Placement::Inline(bytes) = placement {
            // Nothing outside the transaction: no digest lock. A row already there (the bytes
            // in the bucket, or kept by an earlier push) stays as it is; garbage collection
            // decides in a transaction that excludes this one (`Lane`).
            return Ok(self.meta.write_content(|w| {
                w.insert_blob(d, size, Some(&bytes))?;
                w.link_blob(repo.as_str(), d)?;
                if let Some(id) = upload {
                    w.delete_upload(id)?;
                }
                Ok::<_, store::Error>(())
            })?);
        }
        let _lock = lock_digest(&self.meta, &self.blobs, d)?;
        let place = |p: Placement| -> Result<()> {
            match (p, self.blobs.engine()) {
                (Placement::File(id), Engine::Fs(fs)) => Ok(fs.commit_upload(&id, d)?),
                (Placement::Object(sink, id), Engine::S3(s3)) => Ok(s3.place(sink, &id, d)?),
                (Placement::Staged(id), Engine::S3(s3)) => Ok(s3.place_staged(&id, d)?),
                (Placement::Staged(_), Engine::Fs(_)) => {
                    Err(Error::Task("a staged-object placement on files".into()))
                }
                (Placement::Object(..), Engine::Fs(_)) => {
                    Err(Error::Task("an object placement on files".into()))
                }
                (Placement::File(_), Engine::S3(_)) => {
                    Err(Error::Task("a file placement on S3".into()))
                }
                (Placement::Inline(_), _) => Err(Error::Task("an inline blob placed".into())),
            }
        };
        // Files: the fsyncs run before the metadata transaction, not inside it, so that
        // concurrent pushes of different blobs sync in parallel instead of one by one under the
        // writer lock. The digest lock keeps garbage collection off the blob meanwhile.
        // A whole blob streamed to S3 (`store_whole`) leaves nothing under its session's prefix
        // once placed (one PUT to the blob's key, or its staged object copied and removed):
        // no listing of the prefix afterwards, which costs the bucket more than the PUT.
        let whole_object = matches!(placement, Placement::Object(..));
        let mut pending = Some(placement);
        let placed = self.meta.read(|r| r.blob_size(d))?.is_none();
        if placed && let Some(p) = pending.take() {
            place(p)?;
        }
        self.meta.write_content(|w| {
            // Placed above: the row goes in (nothing else writes it while the lock is held).
            // Not placed: the row was there; unless garbage collection took it since the read
            // above, when the bytes, still ours under the lock, are placed now.
            if pending.is_none() || w.reader().blob_size(d)?.is_none() {
                if let Some(p) = pending.take() {
                    place(p)?;
                }
                w.insert_blob(d, size, None)?;
            }
            w.link_blob(repo.as_str(), d)?;
            if let Some(id) = upload {
                w.delete_upload(id)?;
            }
            Ok::<_, Error>(())
        })?;
        // The bytes were not needed: the blob was already stored.
        match pending {
            Some(Placement::Object(sink, id)) => {
                sink.abort();
                self.blobs.remove_upload(&id)?;
            }
            Some(Placement::File(id) | Placement::Staged(id)) => self.blobs.remove_upload(&id)?,
            Some(Placement::Inline(_)) | None => {}
        }
        if let Some(id) = upload
            && !whole_object
        {
            self.blobs.remove_upload(id)?;
        }
        Ok(())
    }
}

/// The bucket state of an S3 upload session (a new session has none yet).
fn parts_state(row: &store::UploadRow) -> Result<crate::blob::PartsState> {
    match &row.s3_state {
        Some(t) => serde_json::from_str(t).map_err(|e| Error::Task(format!("upload state: {e}"))),
        None if row.size == 0 => Ok(crate::blob::PartsState::default()),
        None => Err(Error::UploadInvalid(
            "this upload was started by an older berth; start it again".into(),
        )),
    }
}

fn hash_file(blobs: &crate::blob::FsStore, id: &uuid::Uuid, alg: Algorithm) -> Result<Digest> {
    use std::io::Read as _;
    let mut f = blobs.open_upload_read(id)?;
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; WRITE_CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|source| crate::blob::Error {
            context: format!("hashing upload {id}"),
            source,
        })?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// Where upload bytes go.
enum Target {
    /// The upload's file, from this offset; `true`: synced when written (a session's chunk).
    File(uuid::Uuid, u64, bool),
    /// An object being written (a chunk, or a whole blob).
    Sink(crate::blob::Sink),
}

/// Counts a request that is streaming upload bytes, for the metrics.
struct ActiveUpload<'a>(&'a AtomicI64);

impl<'a> ActiveUpload<'a> {
    fn new(c: &'a AtomicI64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        ActiveUpload(c)
    }
}

impl Drop for ActiveUpload<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_goes_out_in_pieces_each_stamping_progress_when_written() {
        let client = Client::new(None, None);
        let chunk = Bytes::from(vec![7u8; 40 << 10]);
        let pieces = collect_now(in_pieces(Ok(chunk), &client));
        let lens: Vec<usize> = pieces.iter().map(|p| p.as_ref().unwrap().len()).collect();
        assert_eq!(lens, [16 << 10, 16 << 10, 8 << 10]);
        let mut pieces = pieces.into_iter();
        drop(pieces.next());
        assert_eq!(client.written.bytes(), 16 << 10);
        drop(pieces);
        assert_eq!(client.written.bytes(), 40 << 10);
    }

    #[tokio::test]
    async fn the_next_chunk_holds_two_seconds_of_what_the_client_drained() {
        let memory = budget::Budget::new(8 << 20);
        let client = Client::new(None, None);
        // Before any chunk is written: what was asked.
        let first = next_memory(&memory, 64 << 10, &client, None).await.unwrap();
        assert_eq!(first.bytes(), 64 << 10);
        drop(first);
        // A 20 KiB chunk drained in 2 s (10 KiB/s): the next holds 20 KiB, not the 128 asked,
        // whether carried from the chunk before or reserved anew.
        let made = budget::clock_ms();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        client.written.chunk_written(20 << 10, made);
        let fresh = next_memory(&memory, 128 << 10, &client, None)
            .await
            .unwrap();
        assert!(
            (20 << 10..=21 << 10).contains(&fresh.bytes()),
            "{}",
            fresh.bytes()
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(
            memory
                .reserve(64 << 10, None, std::time::Duration::ZERO)
                .await
                .unwrap(),
        )
        .ok()
        .unwrap();
        let carried = next_memory(&memory, 128 << 10, &client, Some(rx))
            .await
            .unwrap();
        assert!(
            (20 << 10..=21 << 10).contains(&carried.bytes()),
            "{}",
            carried.bytes()
        );
    }

    fn collect_now(
        s: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
    ) -> Vec<std::io::Result<Bytes>> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(s.collect())
    }
}
