//! The raw settings as given: command-line flags and environment variables (through clap) and
//! the TOML file (through serde). Nothing here is validated; `Config::resolve` does that.

use std::path::PathBuf;

use serde::Deserialize;

use super::env;

/// `berth serve` flags. Each also reads its environment variable (clap `env`), so a flag beats
/// its variable; both beat the file; the file beats the defaults.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are the long flag names with `_` for `-`.
    pub config: Option<PathBuf>,

    /// Directory for the metadata database and blobs [default: ./berth-data]
    #[arg(long, env = env::BERTH_DATA_DIR, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = env::BERTH_LISTEN, value_name = "ADDR")]
    pub listen: Option<String>,

    /// PEM certificate chain; with --tls-key, serve HTTPS
    #[arg(long, env = env::BERTH_TLS_CERT, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, env = env::BERTH_TLS_KEY, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// How long an abandoned upload session lives before its bytes are removed [default: 24h]
    #[arg(long, env = env::BERTH_UPLOAD_TTL, value_name = "DURATION")]
    pub upload_ttl: Option<String>,

    /// How often garbage collection runs in the background, or `off` [default: off]
    #[arg(long, env = env::BERTH_GC_INTERVAL, value_name = "DURATION")]
    pub gc_interval: Option<String>,

    /// Age below which garbage collection keeps unreferenced blob links and untagged manifests [default: 1h]
    #[arg(long, env = env::BERTH_GC_GRACE, value_name = "DURATION")]
    pub gc_grace: Option<String>,

    /// Let background garbage collection also remove untagged manifests [default: false]
    #[arg(long, env = env::BERTH_GC_UNTAGGED, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub gc_untagged: Option<bool>,

    /// Base URL clients reach berth at, for the token realm [default: taken from each request]
    #[arg(long, env = env::BERTH_PUBLIC_URL, value_name = "URL")]
    pub public_url: Option<String>,

    /// The token `service` name, the audience of registry tokens [default: berth]
    #[arg(long, env = env::BERTH_TOKEN_SERVICE, value_name = "NAME")]
    pub token_service: Option<String>,

    /// The issuer (`iss`) of tokens [default: berth]
    #[arg(long, env = env::BERTH_TOKEN_ISSUER, value_name = "NAME")]
    pub token_issuer: Option<String>,

    /// Lifetime of registry and access tokens [default: 5m]
    #[arg(long, env = env::BERTH_TOKEN_TTL, value_name = "DURATION")]
    pub token_ttl: Option<String>,

    /// Operator-provided token signing key (PEM, P-256) instead of the generated CA; with --token-cert-chain
    #[arg(long, env = env::BERTH_TOKEN_KEY, value_name = "FILE")]
    pub token_key: Option<PathBuf>,

    /// Certificate chain for --token-key (PEM, signer first, CA last)
    #[arg(long, env = env::BERTH_TOKEN_CERT_CHAIN, value_name = "FILE")]
    pub token_cert_chain: Option<PathBuf>,

    /// Lifetime of registry tokens created without permanent=true [default: 30d]
    #[arg(long, env = env::BERTH_REGISTRY_TOKEN_TTL, value_name = "DURATION")]
    pub registry_token_ttl: Option<String>,

    /// How recent a session's sign-in must be for it to create a credential that never expires without giving the password again [default: 15m]
    #[arg(long, env = env::BERTH_FRESH_SIGN_IN, value_name = "DURATION")]
    pub fresh_sign_in: Option<String>,

    /// Longest lifetime (exp - iat) of a workload's token accepted in exchange for a registry token [default: 24h]
    #[arg(long, env = env::BERTH_WORKLOAD_TOKEN_MAX_LIFETIME, value_name = "DURATION")]
    pub workload_token_max_lifetime: Option<String>,

    /// Let workload trusts name OpenID issuers (and their jwks_uri) on loopback, private or link-local addresses, and plain http to loopback; off, such issuers are refused and never fetched [default: false]
    #[arg(long, env = env::BERTH_ALLOW_PRIVATE_ISSUERS, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_issuers: Option<bool>,

    /// Connections served at once; past this a new connection takes the place of the one that has waited longest for a request (an idle keep-alive or an unfinished request head) among those of client addresses holding more connections than its own, or, when every connection is serving a request, of a slow one (busy 2 s and fallen behind 16 KiB/s, bursts counted up to 512 KiB) of the client address holding the most connections if that is more than the newcomer's would, or of one whose request and response bodies moved under 16 KiB in 10 s (request bodies read and answers' bodies written; on HTTP/2 only DATA frames count) whatever its address holds; otherwise it is closed at once [default: 1024]
    #[arg(long, env = env::BERTH_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections served at once from one client address (an IPv6 /56 counts as one address); past this that address's new connections are closed at once. Behind a proxy that is one address: set it to --max-connections [default: a quarter of the connections served, --max-connections as lowered]
    #[arg(long, env = env::BERTH_MAX_CONNECTIONS_PER_ADDRESS, value_name = "N")]
    pub max_connections_per_address: Option<usize>,

    /// Memory for upload bytes in flight, shared by all uploads of this node: each upload request reserves what its body can hold in memory (about 2.3 MiB on files, 17 MiB on S3, less for a smaller Content-Length) and waits, unread, while the rest is taken [default: 256MiB]
    #[arg(long, env = env::BERTH_UPLOAD_MEMORY, value_name = "SIZE")]
    pub upload_memory: Option<String>,

    /// Memory for blob bytes read for answers and not yet written to their sockets, shared by all pulls of this node: a chunk waits for it before it is read, so clients that stop reading hold at most this between them; a chunk that waits over 30 s breaks its answer off; --max-connections is lowered to at most this ÷ 32 KiB (twice each answer's first chunk per connection) [default: 256MiB]
    #[arg(long, env = env::BERTH_DOWNLOAD_MEMORY, value_name = "SIZE")]
    pub download_memory: Option<String>,

    /// Time a client has to send a request's headers [default: 30s]
    #[arg(long, env = env::BERTH_HEADER_READ_TIMEOUT, value_name = "DURATION")]
    pub header_read_timeout: Option<String>,

    /// A connection with no byte read or written for this long is closed: idle keep-alive connections and stalled uploads alike [default: 60s]
    #[arg(long, env = env::BERTH_IDLE_TIMEOUT, value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// PostgreSQL for the metadata, `postgres://USER:PASS@HOST:PORT/DB[?sslmode=require]` (prefer the variable: it keeps the password out of process listings) [default: SQLite in --data-dir]
    #[arg(long, env = env::BERTH_DATABASE_URL, value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,

    /// File holding the secret (≥ 32 characters) that seals the token signing keys kept in the database; every node needs the same. Or set BERTH_SECRET_KEY [needed with --database unless --token-key is given]
    #[arg(long, env = env::BERTH_SECRET_KEY_FILE, value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Connections to PostgreSQL kept at most by this node [default: 16]
    #[arg(long, env = env::BERTH_DATABASE_POOL_SIZE, value_name = "N")]
    pub database_pool_size: Option<usize>,

    /// Longest a database statement, or the wait for a free connection, may take; past it the request gets 503 [default: 10s]
    #[arg(long, env = env::BERTH_DATABASE_TIMEOUT, value_name = "DURATION")]
    pub database_timeout: Option<String>,

    /// Blob storage: `s3://BUCKET[/PREFIX]` (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or ~/.aws/credentials) [default: files in --data-dir]
    #[arg(long, env = env::BERTH_STORAGE, value_name = "URL")]
    pub storage: Option<String>,

    /// S3 endpoint URL, for S3-compatible stores (Garage, MinIO, Ceph) [default: AWS]
    #[arg(long, env = env::BERTH_S3_ENDPOINT, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION, else us-east-1]
    #[arg(long, env = env::BERTH_S3_REGION, value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Address the bucket in the path (`endpoint/bucket/key`), as most S3-compatible stores want [default: false]
    #[arg(long, env = env::BERTH_S3_PATH_STYLE, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<bool>,

    /// Longest one S3 request may take before it is given up (and retried, within 10 s of retries); a stalled store's requests then get 503 [default: 120s]
    #[arg(long, env = env::BERTH_S3_TIMEOUT, value_name = "DURATION")]
    pub s3_timeout: Option<String>,

    /// Who may sign in with a local password: `all`, `admins` (server admins only: a way in when the identity provider is down) or `off` [default: all]
    #[arg(long, env = env::BERTH_LOCAL_LOGIN, value_name = "WHO")]
    pub local_login: Option<String>,

    /// Single sign-on: the OpenID provider's issuer URL (more providers: `[[oidc]]` in the file); needs --public-url [default: none]
    #[arg(long, env = env::BERTH_OIDC_ISSUER, value_name = "URL")]
    pub oidc_issuer: Option<String>,

    /// The provider's short name, in `/ui/login/sso/NAME` and `berth login --sso NAME` [default: sso]
    #[arg(long, env = env::BERTH_OIDC_NAME, value_name = "NAME")]
    pub oidc_name: Option<String>,

    /// What the sign-in page's button names the provider ("Sign in with ...") [default: the name]
    #[arg(long, env = env::BERTH_OIDC_DISPLAY_NAME, value_name = "TEXT")]
    pub oidc_display_name: Option<String>,

    /// berth's client id at the provider
    #[arg(long, env = env::BERTH_OIDC_CLIENT_ID, value_name = "ID")]
    pub oidc_client_id: Option<String>,

    /// File holding berth's client secret at the provider
    #[arg(long, env = env::BERTH_OIDC_CLIENT_SECRET_FILE, value_name = "FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,

    /// Scopes asked for, separated by spaces [default: openid profile email groups offline_access]
    #[arg(long, env = env::BERTH_OIDC_SCOPES, value_name = "SCOPES")]
    pub oidc_scopes: Option<String>,

    /// The ID token claim that gives the user name [default: preferred_username]
    #[arg(long, env = env::BERTH_OIDC_USERNAME_CLAIM, value_name = "CLAIM")]
    pub oidc_username_claim: Option<String>,

    /// The claim (ID token, else userinfo) that lists the user's groups [default: groups]
    #[arg(long, env = env::BERTH_OIDC_GROUPS_CLAIM, value_name = "CLAIM")]
    pub oidc_groups_claim: Option<String>,

    /// Members of this provider group are server admins, and nobody else from the provider is [default: none]
    #[arg(long, env = env::BERTH_OIDC_ADMIN_GROUP, value_name = "GROUP")]
    pub oidc_admin_group: Option<String>,

    /// Put before the provider's group names, as bindings name them (`group/PREFIXNAME`) [default: none with one provider; `NAME:` with several]
    #[arg(long, env = env::BERTH_OIDC_GROUPS_PREFIX, value_name = "PREFIX")]
    pub oidc_groups_prefix: Option<String>,

    /// How often a single sign-on session's groups are read again from the provider; at most 15m, the bound within which leaving a group ends what it gave [default: 5m]
    #[arg(long, env = env::BERTH_SSO_REFRESH_INTERVAL, value_name = "DURATION")]
    pub sso_refresh_interval: Option<String>,

    /// Log filter, e.g. `info` or `berth=debug` [default: info]
    #[arg(long, env = env::BERTH_LOG, value_name = "FILTER")]
    pub log: Option<String>,
}

/// The TOML file, one optional key per flag. Unknown keys are an error, so a typo is not ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub upload_ttl: Option<String>,
    pub gc_interval: Option<String>,
    pub gc_grace: Option<String>,
    pub gc_untagged: Option<bool>,
    pub public_url: Option<String>,
    pub token_service: Option<String>,
    pub token_issuer: Option<String>,
    pub token_ttl: Option<String>,
    pub registry_token_ttl: Option<String>,
    pub fresh_sign_in: Option<String>,
    pub workload_token_max_lifetime: Option<String>,
    pub allow_private_issuers: Option<bool>,
    pub token_key: Option<PathBuf>,
    pub token_cert_chain: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub upload_memory: Option<String>,
    pub download_memory: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub database: Option<String>,
    pub database_pool_size: Option<usize>,
    pub database_timeout: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    pub storage: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_path_style: Option<bool>,
    pub s3_timeout: Option<String>,
    pub log: Option<String>,
    pub local_login: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_name: Option<String>,
    pub oidc_display_name: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret_file: Option<PathBuf>,
    pub oidc_scopes: Option<String>,
    pub oidc_username_claim: Option<String>,
    pub oidc_groups_claim: Option<String>,
    pub oidc_admin_group: Option<String>,
    pub oidc_groups_prefix: Option<String>,
    pub sso_refresh_interval: Option<String>,
    /// More OpenID providers, one `[[oidc]]` table each.
    #[serde(default)]
    pub oidc: Vec<OidcFile>,
}

/// One `[[oidc]]` table of the file: the same keys as the `--oidc-*` flags, without the prefix.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub scopes: Option<String>,
    pub username_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub admin_group: Option<String>,
    pub groups_prefix: Option<String>,
}

impl ServeArgs {
    /// Layers these flags over `file`: a value given here wins.
    pub(crate) fn over(&self, file: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: self.data_dir.clone().or(file.data_dir),
            listen: self.listen.clone().or(file.listen),
            tls_cert: self.tls_cert.clone().or(file.tls_cert),
            tls_key: self.tls_key.clone().or(file.tls_key),
            upload_ttl: self.upload_ttl.clone().or(file.upload_ttl),
            gc_interval: self.gc_interval.clone().or(file.gc_interval),
            gc_grace: self.gc_grace.clone().or(file.gc_grace),
            gc_untagged: self.gc_untagged.or(file.gc_untagged),
            public_url: self.public_url.clone().or(file.public_url),
            token_service: self.token_service.clone().or(file.token_service),
            token_issuer: self.token_issuer.clone().or(file.token_issuer),
            token_ttl: self.token_ttl.clone().or(file.token_ttl),
            registry_token_ttl: self.registry_token_ttl.clone().or(file.registry_token_ttl),
            fresh_sign_in: self.fresh_sign_in.clone().or(file.fresh_sign_in),
            workload_token_max_lifetime: self
                .workload_token_max_lifetime
                .clone()
                .or(file.workload_token_max_lifetime),
            allow_private_issuers: self.allow_private_issuers.or(file.allow_private_issuers),
            token_key: self.token_key.clone().or(file.token_key),
            token_cert_chain: self.token_cert_chain.clone().or(file.token_cert_chain),
            max_connections: self.max_connections.or(file.max_connections),
            max_connections_per_address: self
                .max_connections_per_address
                .or(file.max_connections_per_address),
            upload_memory: self.upload_memory.clone().or(file.upload_memory),
            download_memory: self.download_memory.clone().or(file.download_memory),
            header_read_timeout: self
                .header_read_timeout
                .clone()
                .or(file.header_read_timeout),
            idle_timeout: self.idle_timeout.clone().or(file.idle_timeout),
            database: self.database.clone().or(file.database),
            database_pool_size: self.database_pool_size.or(file.database_pool_size),
            database_timeout: self.database_timeout.clone().or(file.database_timeout),
            secret_key_file: self.secret_key_file.clone().or(file.secret_key_file),
            storage: self.storage.clone().or(file.storage),
            s3_endpoint: self.s3_endpoint.clone().or(file.s3_endpoint),
            s3_region: self.s3_region.clone().or(file.s3_region),
            s3_path_style: self.s3_path_style.or(file.s3_path_style),
            s3_timeout: self.s3_timeout.clone().or(file.s3_timeout),
            log: self.log.clone().or(file.log),
            local_login: self.local_login.clone().or(file.local_login),
            oidc_issuer: self.oidc_issuer.clone().or(file.oidc_issuer),
            oidc_name: self.oidc_name.clone().or(file.oidc_name),
            oidc_display_name: self.oidc_display_name.clone().or(file.oidc_display_name),
            oidc_client_id: self.oidc_client_id.clone().or(file.oidc_client_id),
            oidc_client_secret_file: self
                .oidc_client_secret_file
                .clone()
                .or(file.oidc_client_secret_file),
            oidc_scopes: self.oidc_scopes.clone().or(file.oidc_scopes),
            oidc_username_claim: self
                .oidc_username_claim
                .clone()
                .or(file.oidc_username_claim),
            oidc_groups_claim: self.oidc_groups_claim.clone().or(file.oidc_groups_claim),
            oidc_admin_group: self.oidc_admin_group.clone().or(file.oidc_admin_group),
            oidc_groups_prefix: self.oidc_groups_prefix.clone().or(file.oidc_groups_prefix),
            sso_refresh_interval: self
                .sso_refresh_interval
                .clone()
                .or(file.sso_refresh_interval),
            oidc: file.oidc,
        }
    }
}
