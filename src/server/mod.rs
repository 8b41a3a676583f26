//! The server: the accept loop (plain TCP or rustls) with its admission of connections
//! (`admission`), graceful shutdown and the background tasks (upload expiry, scheduled garbage
//! collection).

mod admission;
mod counted;

use admission::clock_ms;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsFiles};
use crate::content::gc;
pub use crate::state::{AppState, ServerError, WebSettings, open_content, open_keys};

/// Builds the rustls acceptor from PEM files.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| {
            ServerError::Tls(format!("reading certificate {}: {e}", files.cert.display()))
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServerError::Tls(format!("reading key {}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = crate::http::router(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.web.header_read_timeout);
    // Each stream of a connection can hold an answer's chunks (`--download-memory`) and an
    // upload's: a connection is one admission slot, so it gets few streams.
    builder.http2().max_concurrent_streams(16);
    let max = effective_max_connections(state.web.max_connections);
    let fit = state.content.connections_download_memory_fits().max(16);
    if fit < max {
        tracing::warn!(
            configured = max,
            cap = fit,
            "max connections lowered to fit the download memory (twice each answer's first \
             16 KiB chunk per connection); raise --download-memory to take more"
        );
    }
    let max = max.min(fit);
    // One address's share is a quarter of what is served, unless set: of the lowered cap, so
    // that one address cannot take every slot of a node whose memory lowered it (helper-27).
    let per_address = state
        .web
        .max_connections_per_address
        .unwrap_or((max / 4).max(1));
    let admission = admission::Admission::new(max, per_address);
    let idle = state.web.idle_timeout;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Past the caps, a new connection takes a waiting one's place or is closed at once;
                // the requests being served go on.
                let slot = match admission.admit(peer.ip()) {
                    admission::Admitted::Yes(slot) => slot,
                    admission::Admitted::InPlaceOf(slot) => {
                        state.metrics.connection_evicted();
                        slot
                    }
                    admission::Admitted::No => {
                        state.metrics.connection_refused();
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // The kernel holds at most `admission::UNSENT` of an answer the client has not taken: a
                // client that stops reading cannot make the host keep megabytes for it (loopback
                // grows send buffers to 4 MiB), and what berth counts as written is what the
                // client is reading (helper-27).
                let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(admission::UNSENT);
                let traffic = slot.conn.traffic();
                let stream = Watched { inner: stream, traffic: Arc::clone(&traffic) };
                let (app, conn) = (app.clone(), Arc::clone(&slot.conn));
                let hangup = {
                    let conn = Arc::downgrade(&slot.conn);
                    crate::types::Hangup::new(move || if let Some(c) = conn.upgrade() { c.close() })
                };
                // The peer address goes on every request, for rate limits, audit and "last used";
                // the connection is busy until the response body is done.
                // Its bodies' bytes that moved are its progress: request bodies read (`Moving`),
                // answers' bodies handed (`Moving`) and written (`counted::Counted`).
                let svc = TowerToHyperService::new(tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    req.extensions_mut().insert(hangup.clone());
                    let (mut app, busy, traffic) = (app.clone(), conn.request(), conn.traffic());
                    let req = req.map(|body| Moving { body, traffic: Arc::clone(&traffic), busy: None });
                    async move {
                        let resp = tower::Service::call(&mut app, req).await?;
                        Ok::<_, std::convert::Infallible>(resp.map(|body| axum::body::Body::new(Moving { body, traffic, busy: Some(busy) })))
                    }
                }));
                let (builder, tls, mut stop) = (builder.clone(), tls.clone(), stop_rx.clone());
                conns.spawn(async move {
                    let watch = Watch { activity: &traffic.last, idle, conn: &slot.conn };
                    let handshake = async {
                        tokio::select! {
                            r = tokio::time::timeout(idle, acceptor_accept(tls.as_ref(), stream)) => r,
                            () = slot.conn.evicted() => Ok(Err(std::io::Error::other("evicted"))),
                        }
                    };
                    match handshake.await {
                        Ok(Ok(Either::Tls(s))) => {
                            let s = TokioIo::new(counted::Counted::new(s, Arc::clone(&traffic)));
                            drive(builder.serve_connection_with_upgrades(s, svc), &mut stop, &watch).await;
                        }
                        Ok(Ok(Either::Plain(s))) => {
                            let s = TokioIo::new(counted::Counted::new(s, Arc::clone(&traffic)));
                            drive(builder.serve_connection_with_upgrades(s, svc), &mut stop, &watch).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    state.shutting_down.store(true, Ordering::Relaxed);
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// The connection limit actually used: the configured one, lowered so that the server keeps
/// file descriptors for its database, blobs and uploads. The soft `RLIMIT_NOFILE` is first raised
/// to the hard one.
fn effective_max_connections(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum)
        && cur < max
    {
        lim.current = Some(max);
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim.current = Some(cur);
        }
    }
    let fds = lim
        .current
        .and_then(|c| usize::try_from(c).ok())
        .unwrap_or(usize::MAX);
    let cap = fds.saturating_sub(256).max(16);
    if configured > cap {
        tracing::warn!(
            configured,
            cap,
            "max connections lowered to fit the file descriptor limit"
        );
    }
    configured.min(cap)
}

/// A socket that stamps the time of its last successful read or write
/// (`admission::Traffic::last`: the idle timeout reads it).
struct Watched<S> {
    inner: S,
    traffic: Arc<admission::Traffic>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.traffic.seen();
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let after = buf.filled().len();
        if matches!(r, std::task::Poll::Ready(Ok(()))) && after > before {
            self.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP stream, or the TLS stream over it.
enum Either<T, P> {
    Tls(T),
    Plain(P),
}

/// The TLS handshake when there is an acceptor; the plain stream otherwise.
async fn acceptor_accept<S>(
    tls: Option<&TlsAcceptor>,
    stream: S,
) -> std::io::Result<Either<tokio_rustls::server::TlsStream<S>, S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tls {
        Some(acceptor) => acceptor.accept(stream).await.map(Either::Tls),
        None => Ok(Either::Plain(stream)),
    }
}

/// A request body whose data frames, as the handler reads them, count as its connection's
/// progress (`admission::Traffic::read`), or a response body whose data frames count as handed
/// (`admission::Traffic::handed`) and which keeps its connection busy (`admission::InFlight`)
/// until it is done.
struct Moving<B> {
    body: B,
    traffic: Arc<admission::Traffic>,
    busy: Option<admission::InFlight>,
}

impl<B: http_body::Body<Data = bytes::Bytes> + Unpin> http_body::Body for Moving<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && !data.is_empty()
        {
            match self.busy {
                Some(_) => self.traffic.handed(data.len()),
                None => self.traffic.read(data.len()),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What ends a connection besides itself: quiet for `idle`, or its place taken by a newcomer.
struct Watch<'a> {
    activity: &'a AtomicU64,
    idle: Duration,
    conn: &'a admission::Conn,
}

/// Resolves once `last` is older than `idle`.
async fn idle_for(last: &AtomicU64, idle: Duration) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        let quiet = clock_ms().saturating_sub(last.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}

/// Runs one connection. With no byte read or written for `idle`, it is closed (an idle
/// keep-alive connection, a stalled upload or a silent client alike), and so it is when a
/// newcomer takes its place while it waits for a request; on shutdown, it is asked to finish
/// its in-flight requests and close.
async fn drive<C>(conn: C, stop: &mut tokio::sync::watch::Receiver<bool>, watch: &Watch<'_>)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res { tracing::debug!(error = %e, "connection closed with error"); }
            return;
        }
        () = idle_for(watch.activity, watch.idle) => {
            tracing::debug!("connection idle; closed");
            return;
        }
        () = watch.conn.evicted() => {
            tracing::debug!("connection gave way to a newcomer, or gave back memory it held unused; closed");
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res { tracing::debug!(error = %e, "connection closed with error"); }
        }
        () = idle_for(watch.activity, watch.idle) => tracing::debug!("connection idle during shutdown; closed"),
    }
}

/// Starts the background tasks: upload expiry always, garbage collection when scheduled.
pub fn spawn_background(state: &AppState, config: &Config) -> std::io::Result<()> {
    let content = state.content.clone();
    let ttl = config.upload_ttl;
    // Check for expired uploads a few times per TTL, at most hourly and at least every second.
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            // One node at a time (a lease in the database); the others skip this round.
            let _lease = match content.lease("upload-expiry").await {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "upload expiry: taking the lease failed");
                    continue;
                }
            };
            match content.expire_uploads(ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired upload sessions"),
                Err(e) => tracing::error!(error = %e, "upload expiry failed"),
            }
        }
    });
    let auth = state.auth.clone();
    let runtime = tokio::runtime::Handle::current();
    // A thread of its own, not the blocking pool: whatever holds that pool, revocations made on
    // other nodes still arrive within the bound.
    let spawned = std::thread::Builder::new()
        .name("berth-log".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            // New revocations are read, audit events and "last used" of credentials are written
            // behind, every second (well inside `auth::revoked::REFRESH`); signing keys are re-read
            // so that `berth keys rotate` takes effect without a restart; with several nodes, the
            // keys that failed logins elsewhere are learnt.
            let mut next = std::time::Instant::now();
            loop {
                next += Duration::from_secs(1);
                let now = std::time::Instant::now();
                // Behind (a slow database): the next round starts at once, then keeps the beat.
                next = next.max(now);
                std::thread::sleep(next.saturating_duration_since(now));
                {
                    // Rotation overlaps that ended: the old generation and what it made end.
                    if let Err(e) = auth.iam().end_overlaps() {
                        tracing::error!(error = %e, "ending rotation overlaps failed");
                    }
                    if let Err(e) = auth.refresh_revocations() {
                        tracing::error!(error = %e, "reading revocations failed");
                    }
                    if let Err(e) = auth.flush_usage() {
                        tracing::error!(error = %e, "recording credential use failed");
                    }
                    if let Err(e) = auth.tokens().keys().reload() {
                        tracing::error!(error = %e, "reloading signing keys failed");
                    }
                    if let Err(e) = auth.refresh_shared_failures() {
                        tracing::error!(error = %e, "reading failed logins of other nodes failed");
                    }
                }
            }
        });
    // Without it no revocation would reach this node: better not to serve at all.
    spawned?;
    if state.auth.sso().is_some() {
        let auth = state.auth.clone();
        tokio::spawn(async move {
            // Single sign-on sessions: their groups are read again from the provider when due
            // (`--sso-refresh-interval`); refused users lose every session.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(sso) = auth.sso() {
                    sso.refresh_sessions().await;
                }
            }
        });
    }
    let (auth, retention) = (state.auth.clone(), state.web.revocation_retention);
    tokio::spawn(async move {
        // Revocation keys outlive every token that could name them, then go.
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let auth = auth.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let before = crate::store::now() - i64::try_from(retention.as_secs()).unwrap_or(0);
                if let Err(e) = auth.iam().meta().write(|w| w.prune_revocations(before)) {
                    tracing::error!(error = %e, "pruning revocations failed");
                }
            })
            .await;
        }
    });
    if let Some(interval) = config.gc_interval {
        let content = state.content.clone();
        let opts = gc::Options {
            grace: config.gc_grace,
            upload_ttl: ttl,
            untagged: config.gc_untagged,
            dry_run: false,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                // One node at a time (a lease in the database); the others skip this round.
                let _lease = match content.lease("gc").await {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        tracing::debug!("garbage collection: another node holds the lease");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "garbage collection: taking the lease failed");
                        continue;
                    }
                };
                match content.collect_garbage(opts.clone()).await {
                    Ok(report) => tracing::info!(%report, "garbage collection"),
                    Err(e) => tracing::error!(error = %e, "garbage collection failed"),
                }
            }
        });
    }
    Ok(())
}
