//! Every environment variable berth reads, as documented constants.

/// Directory for the metadata database and blobs.
pub const BERTH_DATA_DIR: &str = "BERTH_DATA_DIR";
/// Address to listen on.
pub const BERTH_LISTEN: &str = "BERTH_LISTEN";
/// PEM certificate chain for TLS.
pub const BERTH_TLS_CERT: &str = "BERTH_TLS_CERT";
/// PEM private key for TLS.
pub const BERTH_TLS_KEY: &str = "BERTH_TLS_KEY";
/// How long an abandoned upload session lives.
pub const BERTH_UPLOAD_TTL: &str = "BERTH_UPLOAD_TTL";
/// How often the background garbage collection runs (`off` to disable).
pub const BERTH_GC_INTERVAL: &str = "BERTH_GC_INTERVAL";
/// How old an unreferenced blob link or untagged manifest must be before collection removes it.
pub const BERTH_GC_GRACE: &str = "BERTH_GC_GRACE";
/// Whether the background collection also removes untagged manifests.
pub const BERTH_GC_UNTAGGED: &str = "BERTH_GC_UNTAGGED";
/// Connections served at once.
pub const BERTH_MAX_CONNECTIONS: &str = "BERTH_MAX_CONNECTIONS";
/// Connections served at once from one client address (an IPv6 /56 counts as one).
pub const BERTH_MAX_CONNECTIONS_PER_ADDRESS: &str = "BERTH_MAX_CONNECTIONS_PER_ADDRESS";
/// Memory for upload bytes in flight, shared by the node's uploads.
pub const BERTH_UPLOAD_MEMORY: &str = "BERTH_UPLOAD_MEMORY";
/// Memory for blob bytes read for answers and not yet written, shared by the node's pulls.
pub const BERTH_DOWNLOAD_MEMORY: &str = "BERTH_DOWNLOAD_MEMORY";
/// Time a client has to send a request's headers.
pub const BERTH_HEADER_READ_TIMEOUT: &str = "BERTH_HEADER_READ_TIMEOUT";
/// A connection without any byte read or written for this long is closed.
pub const BERTH_IDLE_TIMEOUT: &str = "BERTH_IDLE_TIMEOUT";
/// PostgreSQL URL (`postgres://USER:PASS@HOST:PORT/DB[?sslmode=require]`) for the metadata;
/// absent, SQLite in the data directory. Prefer this variable to the flag: a URL with a password
/// on a command line is visible in process listings.
pub const BERTH_DATABASE_URL: &str = "BERTH_DATABASE_URL";
/// The secret that seals the token signing keys kept in the database (at least 32 characters;
/// every node of one registry needs the same). Never a flag, so that it stays out of process
/// listings; `--secret-key-file` reads it from a file instead.
pub const BERTH_SECRET_KEY: &str = "BERTH_SECRET_KEY";
/// File holding the secret key (see `BERTH_SECRET_KEY`).
pub const BERTH_SECRET_KEY_FILE: &str = "BERTH_SECRET_KEY_FILE";
/// Connections to PostgreSQL each node keeps at most.
pub const BERTH_DATABASE_POOL_SIZE: &str = "BERTH_DATABASE_POOL_SIZE";
/// Longest a database statement (or the wait for a free connection) may take.
pub const BERTH_DATABASE_TIMEOUT: &str = "BERTH_DATABASE_TIMEOUT";
/// Where blobs live: `s3://BUCKET[/PREFIX]`; absent, files in the data directory. Credentials
/// come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` or
/// `~/.aws/credentials`.
pub const BERTH_STORAGE: &str = "BERTH_STORAGE";
/// The S3 endpoint URL (Garage, MinIO, …); absent, AWS.
pub const BERTH_S3_ENDPOINT: &str = "BERTH_S3_ENDPOINT";
/// The S3 region.
pub const BERTH_S3_REGION: &str = "BERTH_S3_REGION";
/// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones.
pub const BERTH_S3_PATH_STYLE: &str = "BERTH_S3_PATH_STYLE";
pub const BERTH_S3_TIMEOUT: &str = "BERTH_S3_TIMEOUT";
/// Log filter (tracing `EnvFilter` syntax).
pub const BERTH_LOG: &str = "BERTH_LOG";
/// Who may sign in with a local password: `all`, `admins` or `off`.
pub const BERTH_LOCAL_LOGIN: &str = "BERTH_LOCAL_LOGIN";
/// Single sign-on: the OpenID provider's issuer URL.
pub const BERTH_OIDC_ISSUER: &str = "BERTH_OIDC_ISSUER";
/// The provider's short name.
pub const BERTH_OIDC_NAME: &str = "BERTH_OIDC_NAME";
/// What the sign-in page calls the provider.
pub const BERTH_OIDC_DISPLAY_NAME: &str = "BERTH_OIDC_DISPLAY_NAME";
/// berth's client id at the provider.
pub const BERTH_OIDC_CLIENT_ID: &str = "BERTH_OIDC_CLIENT_ID";
/// File holding berth's client secret at the provider.
pub const BERTH_OIDC_CLIENT_SECRET_FILE: &str = "BERTH_OIDC_CLIENT_SECRET_FILE";
/// Scopes asked of the provider.
pub const BERTH_OIDC_SCOPES: &str = "BERTH_OIDC_SCOPES";
/// The claim that names the user.
pub const BERTH_OIDC_USERNAME_CLAIM: &str = "BERTH_OIDC_USERNAME_CLAIM";
/// The claim that lists the user's groups.
pub const BERTH_OIDC_GROUPS_CLAIM: &str = "BERTH_OIDC_GROUPS_CLAIM";
/// The provider group whose members are server admins.
pub const BERTH_OIDC_ADMIN_GROUP: &str = "BERTH_OIDC_ADMIN_GROUP";
/// What is put before the provider's group names.
pub const BERTH_OIDC_GROUPS_PREFIX: &str = "BERTH_OIDC_GROUPS_PREFIX";
/// How often a single sign-on session's groups are read again (at most 15m).
pub const BERTH_SSO_REFRESH_INTERVAL: &str = "BERTH_SSO_REFRESH_INTERVAL";
/// Base URL clients reach berth at, for the token realm (default: from the request).
pub const BERTH_PUBLIC_URL: &str = "BERTH_PUBLIC_URL";
/// The `service` name of the token protocol (the `aud` of registry tokens).
pub const BERTH_TOKEN_SERVICE: &str = "BERTH_TOKEN_SERVICE";
/// The `iss` of tokens.
pub const BERTH_TOKEN_ISSUER: &str = "BERTH_TOKEN_ISSUER";
/// Lifetime of registry and access tokens.
pub const BERTH_TOKEN_TTL: &str = "BERTH_TOKEN_TTL";
/// Lifetime of registry tokens made without `permanent=true`.
pub const BERTH_REGISTRY_TOKEN_TTL: &str = "BERTH_REGISTRY_TOKEN_TTL";
/// How recent a session's sign-in must be to create a credential that never expires.
pub const BERTH_FRESH_SIGN_IN: &str = "BERTH_FRESH_SIGN_IN";
pub const BERTH_WORKLOAD_TOKEN_MAX_LIFETIME: &str = "BERTH_WORKLOAD_TOKEN_MAX_LIFETIME";
/// Let workload trusts name issuers on loopback, private or link-local addresses.
pub const BERTH_ALLOW_PRIVATE_ISSUERS: &str = "BERTH_ALLOW_PRIVATE_ISSUERS";
/// Password of the server admin `admin`, used only when the first start creates it. Never a flag
/// or a file key, so that it stays out of process listings and config files.
pub const BERTH_ADMIN_PASSWORD: &str = "BERTH_ADMIN_PASSWORD";
/// Operator-provided token signing key (PEM, P-256), instead of berth's generated CA.
pub const BERTH_TOKEN_KEY: &str = "BERTH_TOKEN_KEY";
/// Certificate chain (PEM, signer first) for `BERTH_TOKEN_KEY`; its last certificate is the CA
/// verifiers should trust.
pub const BERTH_TOKEN_CERT_CHAIN: &str = "BERTH_TOKEN_CERT_CHAIN";
