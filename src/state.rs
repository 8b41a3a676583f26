//! What every request handler shares (`AppState`: the content and auth services, metrics, the
//! web settings) and how it is opened from the configuration (the stores, the signing keys). Its
//! own module so that `http` and `server` both import it and not each other.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::auth::keys::Keys;
use crate::auth::{AuthService, TokenService};
use crate::blob::BlobStore;
use crate::config::Config;
use crate::content::ContentService;
use crate::iam::IamService;
use crate::metrics::Metrics;
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
    pub(crate) shutting_down: Arc<AtomicBool>,
}

/// Settings the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub public_url: Option<String>,
    pub tls: bool,
    pub service: String,
    pub registry_token_ttl: Duration,
    /// How recent a session's sign-in must be to create a credential that never expires.
    pub fresh_sign_in: Duration,
    /// Connection hygiene (see `serve`).
    pub max_connections: usize,
    pub max_connections_per_address: Option<usize>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long revocation keys are kept: longer than any bearer token lives.
    pub revocation_retention: Duration,
}

/// Opens the embedded stores under `data_dir` (SQLite database `berth.db`, blob files).
///
/// Invariant: the data directory is 0700 and every file berth creates is 0600 (the process
/// umask is 077), whatever the umask it was started with; files of older versions are tightened.
pub fn open_content(
    data_dir: &Path,
    database: Option<&crate::store::PgOptions>,
    storage: Option<&crate::blob::S3Options>,
) -> Result<ContentService, ServerError> {
    use std::os::unix::fs::PermissionsExt as _;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        context: format!("creating {}", data_dir.display()),
        source,
    })?;
    let private = |path: &Path, mode: u32| {
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
                |source| ServerError::Io {
                    context: format!("restricting {}", path.display()),
                    source,
                },
            )
        } else {
            Ok(())
        }
    };
    private(data_dir, 0o700)?;
    for f in ["berth.db", "berth.db-wal", "berth.db-shm"] {
        private(&data_dir.join(f), 0o600)?;
    }
    let meta = match database {
        Some(pg) => MetadataStore::open_postgres(pg)?,
        None => MetadataStore::open(&data_dir.join("berth.db"))?,
    };
    let blobs = match storage {
        Some(s3) => BlobStore::open_s3(s3, data_dir)?,
        None => BlobStore::open(data_dir)?,
    };
    Ok(ContentService::new(meta, blobs))
}

/// The token signing keys: operator-provided files, else in the database (shared by every node,
/// sealed with the secret key) with PostgreSQL, else in the data directory.
pub fn open_keys(
    config: &Config,
    content: &ContentService,
) -> Result<Keys, crate::auth::keys::KeyError> {
    match (&config.token_signer, &config.database, &config.secret_key) {
        (Some(files), _, _) => Keys::external(&files.key, &files.cert),
        (None, Some(_), Some(secret)) => Keys::in_store(content.meta().clone(), secret),
        (None, Some(_), None) => Err(crate::auth::keys::KeyError::Crypto(
            "with --database the token signing keys live in the database, sealed with a secret every node shares: \
             set BERTH_SECRET_KEY or --secret-key-file (or give --token-key)"
                .into(),
        )),
        (None, None, _) => Keys::open(&config.data_dir),
    }
}

impl AppState {
    /// Opens the stores and the signing keys for `config`.
    pub fn open(config: &Config) -> Result<AppState, ServerError> {
        let content = open_content(
            &config.data_dir,
            config.database.as_ref(),
            config.storage.as_ref(),
        )?;
        content.set_upload_memory(config.upload_memory);
        content.set_download_memory(config.download_memory);
        let keys = open_keys(config, &content).map_err(|e| ServerError::Keys(e.to_string()))?;
        let tokens = TokenService::new(keys, config.token_issuer.clone(), config.token_ttl);
        let iam = IamService::new(content.meta().clone());
        let sso = if config.oidc.is_empty() {
            None
        } else {
            Some(
                crate::auth::oidc::Sso::new(
                    config.oidc.clone(),
                    config.public_url.as_deref().unwrap_or_default(),
                    config.allow_private_issuers,
                    config.sso_refresh_interval,
                )
                .map_err(ServerError::Keys)?,
            )
        };
        // Seals the providers' refresh tokens: with the secret every node shares, or a key of
        // this node's data directory.
        let sealer = match (&sso, &config.secret_key, &config.database) {
            (None, _, _) => None,
            (Some(_), Some(secret), _) => Some(Arc::new(
                crate::auth::keys::Sealer::new(secret)
                    .map_err(|e| ServerError::Keys(e.to_string()))?,
            )),
            (Some(_), None, None) => Some(Arc::new(
                crate::auth::keys::Sealer::in_dir(&config.data_dir)
                    .map_err(|e| ServerError::Keys(e.to_string()))?,
            )),
            (Some(_), None, Some(_)) => {
                return Err(ServerError::Keys(
                    "single sign-on with --database keeps the providers' refresh tokens sealed with a secret every node shares: set BERTH_SECRET_KEY or --secret-key-file".into(),
                ));
            }
        };
        let auth = AuthService::new(iam, tokens)
            .with_workloads(
                &config.token_service,
                config.workload_token_max_lifetime,
                config.allow_private_issuers,
            )
            .with_sso(sso.zip(sealer), config.local_login);
        // Revocation keys outlive every token that could name them.
        let revocation_retention = config.token_ttl + Duration::from_secs(3600);
        auth.tokens().revoked().set_retention(revocation_retention);
        auth.refresh_revocations()
            .map_err(|e| ServerError::Keys(format!("reading revocations: {e}")))?;
        Ok(AppState {
            content,
            auth,
            metrics: Arc::default(),
            web: Arc::new(WebSettings {
                public_url: config.public_url.clone(),
                tls: config.tls.is_some(),
                service: config.token_service.clone(),
                registry_token_ttl: config.registry_token_ttl,
                fresh_sign_in: config.fresh_sign_in,
                max_connections: config.max_connections,
                max_connections_per_address: config.max_connections_per_address,
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
                revocation_retention,
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
