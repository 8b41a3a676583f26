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
/// Log filter (tracing `EnvFilter` syntax).
pub const BERTH_LOG: &str = "BERTH_LOG";
