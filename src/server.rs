//! The server: application state, the accept loop (plain TCP or rustls), graceful shutdown and
//! the background tasks (upload expiry, scheduled garbage collection).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::keys::Keys;
use crate::auth::{AuthService, TokenService};
use crate::blob::BlobStore;
use crate::config::{Config, TlsFiles};
use crate::content::{ContentService, gc};
use crate::http::Metrics;
use crate::iam::IamService;
use crate::store::MetadataStore;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Blob(#[from] crate::blob::Error),
    #[error("{0}")]
    Keys(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) content: ContentService,
    pub(crate) auth: AuthService,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) web: Arc<WebSettings>,
    shutting_down: Arc<AtomicBool>,
}

/// Settings the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub public_url: Option<String>,
    pub tls: bool,
    pub service: String,
    pub registry_token_ttl: Duration,
}

/// Opens the embedded stores under `data_dir` (SQLite database `berth.db`, blob files).
pub fn open_content(data_dir: &Path) -> Result<ContentService, ServerError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        context: format!("creating {}", data_dir.display()),
        source,
    })?;
    let meta = MetadataStore::open(&data_dir.join("berth.db"))?;
    let blobs = BlobStore::open(data_dir)?;
    Ok(ContentService::new(meta, blobs))
}

impl AppState {
    /// Opens the stores and the signing keys for `config`.
    pub fn open(config: &Config) -> Result<AppState, ServerError> {
        let content = open_content(&config.data_dir)?;
        let keys = match &config.token_signer {
            Some(files) => Keys::external(&files.key, &files.cert),
            None => Keys::open(&config.data_dir),
        }
        .map_err(|e| ServerError::Keys(e.to_string()))?;
        let tokens = TokenService::new(keys, config.token_issuer.clone(), config.token_ttl);
        let iam = IamService::new(content.meta().clone());
        Ok(AppState {
            content,
            auth: AuthService::new(iam, tokens),
            metrics: Arc::default(),
            web: Arc::new(WebSettings {
                public_url: config.public_url.clone(),
                tls: config.tls.is_some(),
                service: config.token_service.clone(),
                registry_token_ttl: config.registry_token_ttl,
            }),
            shutting_down: Arc::default(),
        })
    }

    pub fn auth(&self) -> &AuthService {
        &self.auth
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

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
    let builder = auto::Builder::new(TokioExecutor::new());
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
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                // The peer address goes on every request, for rate limits, audit and "last used".
                let svc = TowerToHyperService::new(tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    let mut app = app.clone();
                    async move { tower::Service::call(&mut app, req).await }
                }));
                let (builder, tls, mut stop) = (builder.clone(), tls.clone(), stop_rx.clone());
                conns.spawn(async move {
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => drive(builder.serve_connection_with_upgrades(TokioIo::new(s), svc), &mut stop).await,
                            Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                        },
                        None => drive(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc), &mut stop).await,
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

/// Runs one connection; on shutdown, asks it to finish its in-flight requests and close.
async fn drive<C>(conn: C, stop: &mut tokio::sync::watch::Receiver<bool>)
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
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection closed with error");
    }
}

/// Starts the background tasks: upload expiry always, garbage collection when scheduled.
pub fn spawn_background(state: &AppState, config: &Config) {
    let content = state.content.clone();
    let ttl = config.upload_ttl;
    // Check for expired uploads a few times per TTL, at most hourly and at least every second.
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match content.expire_uploads(ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired upload sessions"),
                Err(e) => tracing::error!(error = %e, "upload expiry failed"),
            }
        }
    });
    let auth = state.auth.clone();
    tokio::spawn(async move {
        // Audit events and "last used" of credentials are written behind, every second; signing keys are
        // re-read so that `berth keys rotate` takes effect without a restart.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let auth = auth.clone();
            let done = tokio::task::spawn_blocking(move || {
                if let Err(e) = auth.flush_usage() {
                    tracing::error!(error = %e, "recording credential use failed");
                }
                if let Err(e) = auth.tokens().keys().reload() {
                    tracing::error!(error = %e, "reloading signing keys failed");
                }
            });
            let _ = done.await;
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
                match content.collect_garbage(opts.clone()).await {
                    Ok(report) => tracing::info!(%report, "garbage collection"),
                    Err(e) => tracing::error!(error = %e, "garbage collection failed"),
                }
            }
        });
    }
}
